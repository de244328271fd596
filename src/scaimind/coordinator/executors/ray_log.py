"""Reading a Ray job's log: the launcher's records (ray_entry.py) become sink calls.

Ray replays a job's log from its start whenever it is followed again, in chunks that may end
inside a line; the reader counts lines so a follower that attaches again (a broken stream, a
restarted coordinator) skips the records it delivered before (`RayRun.delivered`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaimind.coordinator.executors.base import RunHandle, StartedCallback
from scaimind.coordinator.executors.process import OutputSink
from scaimind.coordinator.executors.ray_entry import (
    BAD_EVENT,
    EVENT,
    EXIT,
    STARTED,
    STDERR,
    STDOUT,
    parse_record,
)

log = logging.getLogger(__name__)


@dataclass(eq=False, kw_only=True)
class RayRun(RunHandle):
    """A Ray job of the Ray executor."""

    submission_id: str
    launch_file: Path
    control_file: Path
    needs: dict[str, float]  # what it asked of its node ({"GPU": 2}, {"CPU": 1})
    started: bool = False  # the launcher reported the process running
    stopping: bool = False  # a stop or kill was asked for
    escalation: asyncio.TimerHandle | None = None


class LogReader:
    """Turns the Ray job's log into sink calls: records of one kind in a row go together."""

    def __init__(
        self,
        run: RayRun,
        sink: OutputSink,
        on_started: StartedCallback,
        on_progress: StartedCallback | None,
    ) -> None:
        self.run = run
        self.sink = sink
        self.on_started = on_started
        self.on_progress = on_progress
        self.seen = 0  # lines of the log so far, including those delivered before
        self.buffer = ""
        self.exit: dict[str, Any] | None = None
        self.gone = False

    def reset(self) -> None:
        """The log is read from its start again."""
        self.seen, self.buffer = 0, ""

    def feed(self, chunk: str) -> None:
        """A chunk of the log (it may end inside a line)."""
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split("\n")
        self._dispatch(lines)

    def _dispatch(self, lines: list[str]) -> None:
        run = self.run
        before = run.delivered
        batches: list[tuple[str, list[Any]]] = []
        for line in lines:
            self.seen += 1
            tag, value = parse_record(line)
            if tag == STARTED:
                run.started = True
            elif tag == EXIT:
                self.exit = value if isinstance(value, dict) else {}
            if self.seen <= run.delivered:
                continue  # replayed: delivered before
            if tag in (STDOUT, STDERR) and isinstance(value, str):
                source = "stdout" if tag == STDOUT else "stderr"
                if value.strip():
                    run.output_tail.append(f"[{source}] {value}")
                    _add(batches, source, value)
            elif tag in (EVENT, BAD_EVENT, STARTED) and isinstance(value, dict):
                _add(batches, tag, value)
            elif not tag and line.strip():
                # Ray's own lines (runtime env, the entrypoint's command line): server paths,
                # for the operator's log only.
                log.debug("%s: %s", run.label, line)
        for kind, items in batches:
            if kind in ("stdout", "stderr"):
                self.sink.on_output(kind, items)
            elif kind == EVENT:
                self.sink.on_events(items)
            elif kind == BAD_EVENT:
                for item in items:
                    self.sink.on_bad_event(str(item.get("line", "")), str(item.get("error", "")))
            elif kind == STARTED:
                self.on_started(run)
        run.delivered = max(run.delivered, self.seen)
        if self.on_progress is not None and run.delivered > before:
            self.on_progress(run)


def _add(batches: list[tuple[str, list[Any]]], kind: str, item: Any) -> None:
    if batches and batches[-1][0] == kind:
        batches[-1][1].append(item)
    else:
        batches.append((kind, [item]))
