"""How `scaimind metrics` shows a job's metrics: a snapshot, or a live view with progress."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from rich.console import Group
from rich.live import Live
from rich.text import Text

from scaimind.cli.render import (
    StepRate,
    colour,
    console,
    human_duration,
    human_metric,
    human_number,
    progress_text,
    sparkline,
    table,
)

HISTORY: Final = 40
# While a job's total is unknown, ask for it at most this often.
TOTAL_REFRESH_S: Final = 5.0


def system_text(system: Mapping[str, Any], sep: str = " ") -> str:
    """`memory_used_bytes 43.1 MiB  cpu_percent 82.9%` (sep "=" for key=value lines)."""
    if sep == "=":
        return " ".join(
            f"{k}={human_metric(k, v).replace(' ', '')}" for k, v in sorted(system.items())
        )
    return "  ".join(f"{k} {human_metric(k, v)}" for k, v in sorted(system.items()))


def show_metrics(data: Mapping[str, Any]) -> None:
    """The latest value of every metric (with its trend on a terminal) and system figures."""
    out = console()
    total = data.get("total_steps") or "?"
    out.print(
        f"job {data['job_id']}  step {data.get('step', 0)}/{total}  epoch {data.get('epoch', 0)}",
        markup=False,
        highlight=False,
    )
    series = {s["name"]: [p["value"] for p in s.get("points", [])] for s in data.get("series", [])}
    latest = data.get("latest") or {}
    if not latest:
        out.print("  (no metrics reported yet)")
    else:
        trend = colour(out)
        rows = [
            [name, human_metric(name, latest[name])]
            + ([sparkline(series.get(name, []))] if trend else [])
            for name in sorted(latest)
        ]
        view = table(["metric", "latest"] + (["trend"] if trend else []), rows)
        view.pad_edge = True
        view.show_header = False
        out.print(view)
    if data.get("system"):
        out.print(f"  system: {system_text(data['system'])}", markup=False, highlight=False)


class Watcher:
    """Shows each live snapshot: a redrawn view on a terminal, one line each otherwise."""

    def __init__(self, job_id: str, total: int, total_steps: Callable[[], int]) -> None:
        self.job_id = job_id
        self.total = total
        self._total_steps = total_steps
        self._asked_total_at = time.monotonic()
        self._rate = StepRate()
        self._history: dict[str, deque[float | None]] = {}
        self._out = console()
        self._live: Live | None = None
        if colour(self._out):
            self._live = Live(console=self._out, auto_refresh=False)
            self._live.start()

    def close(self) -> None:
        """Leave the last view on screen."""
        if self._live is not None:
            self._live.stop()

    def _refresh_total(self, step: int) -> None:
        if self.total > 0 and step <= self.total:
            return
        if time.monotonic() - self._asked_total_at < TOTAL_REFRESH_S:
            return
        self._asked_total_at = time.monotonic()
        self.total = self._total_steps()

    def show(self, snap: Mapping[str, Any]) -> None:
        """Draw one snapshot."""
        step = int(snap.get("step") or 0)
        self._refresh_total(step)
        self._rate.observe(step)
        eta = self._rate.eta(self.total)
        values = snap.get("metrics") or {}
        system = snap.get("system") or {}
        if self._live is None:
            percent = f"{100.0 * step / self.total:.1f}" if self.total > 0 else "-"
            done = eta is None or step >= self.total
            left = "-" if done else human_duration(eta or 0.0).replace(" ", "")
            fields = " ".join(f"{k}={human_number(v)}" for k, v in sorted(values.items()))
            line = (
                f"{snap.get('timestamp')} step={step} total={self.total or '-'} "
                f"percent={percent} eta={left} epoch={snap.get('epoch')} {fields} "
                f"{system_text(system, sep='=')}"
            )
            sys.stdout.write(line.rstrip() + "\n")
            sys.stdout.flush()
            return
        for name, value in values.items():
            self._history.setdefault(name, deque(maxlen=HISTORY)).append(value)
        header = Text(f"job {self.job_id}  {progress_text(step, self.total, eta)}", style="bold")
        header.append(f"  epoch {snap.get('epoch')}", style="")
        rows = [
            [name, human_metric(name, hist[-1]), sparkline(hist)]
            for name, hist in sorted(self._history.items())
        ]
        parts: list[Any] = [header, table(["metric", "latest", "trend"], rows)]
        if system:
            parts.append(Text(f"system: {system_text(system)}", style="dim"))
        self._live.update(Group(*parts), refresh=True)
