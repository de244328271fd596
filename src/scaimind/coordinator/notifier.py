"""Wakes stream followers when a job has something new, without polling the database."""

from __future__ import annotations

import asyncio
import contextlib


class JobNotifier:
    """One asyncio.Event per job with waiters; `notify` sets it and starts a fresh one.

    Followers take `event(job_id)` BEFORE reading the database and wait on it only when the read
    found nothing, so a write between the read and the wait is never missed. Thousands of
    followers of a job share one Event, which costs nothing while idle.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._closed = False

    def event(self, job_id: str) -> asyncio.Event:
        """The event the next `notify(job_id)` will set."""
        ev = self._events.get(job_id)
        if ev is None:
            ev = asyncio.Event()
            if self._closed:
                ev.set()
            else:
                self._events[job_id] = ev
        return ev

    def notify(self, job_id: str) -> None:
        """Wake every follower of the job."""
        ev = self._events.pop(job_id, None)
        if ev is not None:
            ev.set()

    def close(self) -> None:
        """Wake everyone for good (shutdown)."""
        self._closed = True
        for ev in self._events.values():
            ev.set()
        self._events.clear()

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed


async def wait_event(ev: asyncio.Event, seconds: float) -> bool:
    """Wait for the event at most `seconds`; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ev.wait(), seconds)
    return ev.is_set()
