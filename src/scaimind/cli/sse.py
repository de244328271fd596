"""An incremental text/event-stream parser for the log and metric streams."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event, or a comment line (`is_comment`)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comment: str | None = None

    @property
    def is_comment(self) -> bool:
        """True for a comment line such as the `: ping` heartbeat."""
        return self.comment is not None

    def json(self) -> Any:
        """The data decoded as JSON."""
        return json.loads(self.data)


class SSEParser:
    """Incremental text/event-stream parser (WHATWG rules); feed it one line at a time."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._has_fields = False

    def feed(self, line: str) -> SSEEvent | None:
        """Consume one line (without its terminator); return an event when one completes."""
        line = line.rstrip("\r\n")
        if not line:
            if not self._has_fields:
                return None
            event = SSEEvent(
                event=self._event or "message", data="\n".join(self._data), id=self._id
            )
            self._event, self._data, self._id, self._has_fields = "", [], None, False
            return event
        if line.startswith(":"):
            return SSEEvent(event="", comment=line[1:].removeprefix(" "))
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self._has_fields = True
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None
