"""Wakes stream followers when a job has something new, without polling the database."""

from __future__ import annotations

import asyncio

LOGS = "logs"
METRICS = "metrics"
_TOPICS = (LOGS, METRICS)


class JobNotifier:
    """One asyncio.Event per (job, topic) with waiters; `notify` sets it and starts a fresh one.

    Followers take `event(...)` BEFORE reading the database and wait on it only when the read
    found nothing, so a write between the read and the wait is never missed. Thousands of
    followers of a job share one Event, which costs nothing while idle; log followers are not
    woken by metric points and vice versa. State changes and process exits wake both.
    """

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._closed = False

    def event(self, job_id: str, topic: str) -> asyncio.Event:
        """The event the next `notify(job_id, topic)` will set."""
        key = (job_id, topic)
        ev = self._events.get(key)
        if ev is None:
            ev = asyncio.Event()
            if self._closed:
                ev.set()
            else:
                self._events[key] = ev
        return ev

    def notify(self, job_id: str, *topics: str) -> None:
        """Wake the followers of the job (of the given topics; all when none given)."""
        for topic in topics or _TOPICS:
            ev = self._events.pop((job_id, topic), None)
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
    # asyncio.timeout, unlike wait_for, creates no task per wait: cheap with many followers.
    try:
        async with asyncio.timeout(seconds):
            await ev.wait()
    except TimeoutError:
        pass
    return ev.is_set()
