"""Human output: Rich consoles and tables, units people read, progress estimates.

Imported only by commands that print something for people (Rich costs ~50 ms to load).
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TextIO

from rich.console import Console
from rich.table import Table

_SPARK: Final = "▁▂▃▄▅▆▇█"
_BYTE_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


class _TrimmedLines(io.StringIO):
    """Writes whole lines without the trailing blanks Rich pads table cells with."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._stream.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr); plain and unwrapped when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream)
    # Piped output is for grep and scripts: no colour, no wrapping of long rows, no padding.
    return Console(
        file=_TrimmedLines(stream), width=10_000, no_color=True, highlight=False, emoji=False
    )


def colour(out: Console) -> bool:
    """Whether `out` is a terminal that shows colour (and NO_COLOR is unset)."""
    return out.is_terminal and not os.environ.get("NO_COLOR")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A borderless table whose rows start at column 0 (easy to grep and to `cut`)."""
    result = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        result.add_column(name, overflow="fold")
    for row in rows:
        result.add_row(*(cell_text(cell) for cell in row))
    return result


def cell_text(value: Any) -> str:
    """A table cell: `-` for nothing, so whitespace-separated columns never shift."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


# --- units ------------------------------------------------------------------------------------


def human_bytes(value: float) -> str:
    """1536 → '1.5 KiB', 45211648 → '43.1 MiB'."""
    size = float(value)
    for unit in _BYTE_UNITS:
        if abs(size) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """75 → '1m 15s', 3725 → '1h 02m'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86_400}d {s % 86_400 // 3600:02d}h"


def human_number(value: Any) -> str:
    """A metric value: six significant digits, thousands separators instead of exponents."""
    if value is None:
        return "nan"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e5:
        return f"{value:,.0f}"
    return f"{value:.6g}"


def human_metric(name: str, value: Any) -> str:
    """A value in the unit its name announces (`…_bytes`, `…_percent`, `…_seconds`)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if name.endswith("_bytes"):
            return human_bytes(value)
        if name.endswith("_percent"):
            return f"{value:.1f}%"
        if name.endswith(("_seconds", "_s")):
            return human_duration(value)
    return human_number(value)


def sparkline(values: Iterable[float | None]) -> str:
    """Unicode bars scaled between the series' min and max."""
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(_SPARK[min(len(_SPARK) - 1, int((v - lo) / span * len(_SPARK)))] for v in vals)


# --- progress ---------------------------------------------------------------------------------


class StepRate:
    """Steps per second over the last observations, and the time left at that rate."""

    def __init__(self, window: int = 20) -> None:
        self._seen: deque[tuple[float, int]] = deque(maxlen=window)

    def observe(self, step: int, at: float | None = None) -> None:
        """Record that the job was at `step` at monotonic time `at` (now by default)."""
        at = time.monotonic() if at is None else at
        if self._seen and step < self._seen[-1][1]:
            self._seen.clear()  # restarted from a checkpoint: old rates no longer apply
        if not self._seen or step != self._seen[-1][1]:
            self._seen.append((at, step))

    def eta(self, total: int) -> float | None:
        """Seconds until `total` steps, or None while the rate is unknown."""
        if len(self._seen) < 2 or total <= 0:
            return None
        (t0, s0), (t1, s1) = self._seen[0], self._seen[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        return max(0.0, (total - s1) / ((s1 - s0) / (t1 - t0)))


def progress_text(step: int, total: int, eta: float | None, *, running: bool = True) -> str:
    """'step 120/3000  4.0%  ETA 1m 12s' (no ETA once the job stopped or reached its total)."""
    if total <= 0:
        return f"step {step}"
    text = f"step {step}/{total}  {min(100.0, 100.0 * step / total):.1f}%"
    if step >= total or not running:
        return text
    return f"{text}  ETA {human_duration(eta) if eta is not None else '?'}"
