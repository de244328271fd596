"""Operator commands of the `scaimind` CLI: `logs` and `metrics` against a running gateway.

Both speak plain HTTP to the gateway (URL and token from flags or SCAIMIND_URL /
SCAIMIND_TOKEN). Following a stream survives dropped connections: the client reconnects with
`Last-Event-ID` and exponential backoff, so no line is lost or printed twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TextIO

import httpx

DEFAULT_URL: Final = "http://127.0.0.1:8080"
API_PREFIX: Final = "/v1/modules/scaimind"
# Several missed heartbeats (15 s by default) before a silent connection counts as dropped.
READ_TIMEOUT_S: Final = 60.0
BACKOFF_START_S: Final = 0.25
BACKOFF_MAX_S: Final = 10.0
# HTTP statuses worth another attempt: the gateway or coordinator is briefly away or busy.
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})

_SPARK: Final = "▁▂▃▄▅▆▇█"
_COLOURS: Final = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31;1m",
}
_RESET: Final = "\x1b[0m"


# --- SSE parsing ------------------------------------------------------------------------------


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


# --- talking to the gateway -------------------------------------------------------------------


class CommandError(Exception):
    """An unrecoverable failure; the message is shown to the operator."""


@dataclass
class Gateway:
    """Where the gateway is and who we are."""

    url: str
    token: str | None

    def headers(self) -> dict[str, str]:
        """Request headers with the bearer token."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def path(self, suffix: str) -> str:
        """Absolute URL of a module path."""
        return self.url.rstrip("/") + API_PREFIX + suffix


def _gateway(args: argparse.Namespace) -> Gateway:
    url = args.url or os.environ.get("SCAIMIND_URL") or DEFAULT_URL
    token = args.token or os.environ.get("SCAIMIND_TOKEN") or None
    return Gateway(url=url, token=token)


def _error_text(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from an error envelope, tolerating non-JSON bodies."""
    try:
        error = response.json().get("error", {})
        return str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", response.text[:200]


def _describe(response: httpx.Response) -> str:
    code, message = _error_text(response)
    hint = ""
    if response.status_code == 401:
        hint = " (pass --token or set SCAIMIND_TOKEN)"
    return f"HTTP {response.status_code} {code}: {message}{hint}".replace(" :", ":")


@dataclass
class Output:
    """Where and how to print."""

    out: TextIO
    err: TextIO
    colour: bool

    def info(self, text: str) -> None:
        """A status message (stderr, so piped output stays data only)."""
        print(f"scaimind: {text}", file=self.err, flush=True)


def _output() -> Output:
    tty = sys.stdout.isatty()
    return Output(sys.stdout, sys.stderr, colour=tty and not os.environ.get("NO_COLOR"))


def follow_stream(
    gateway: Gateway,
    path: str,
    params: dict[str, Any],
    on_event: Callable[[SSEEvent], None],
    output: Output,
    *,
    max_retries: int,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Follow an SSE endpoint until `end`; reconnect with Last-Event-ID on drops.

    Returns the `end` payload; raises CommandError when the failure is not worth retrying or
    `max_retries` reconnects in a row failed.
    """
    last_id: str | None = None
    failures = 0
    delay = BACKOFF_START_S
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_S)
    with httpx.Client(timeout=timeout) as client:
        while True:
            headers = {**gateway.headers(), "Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                with client.stream("GET", path, params=params, headers=headers) as response:
                    if response.status_code != 200:
                        response.read()
                        if response.status_code not in _RETRYABLE_STATUS:
                            raise CommandError(_describe(response))
                        reason = _describe(response)
                    else:
                        parser = SSEParser()
                        reason = "the stream closed before the job ended"
                        for line in response.iter_lines():
                            event = parser.feed(line)
                            if event is None:
                                continue
                            if event.data == "[DONE]":
                                continue
                            if event.is_comment:
                                # A heartbeat proves the connection is healthy again.
                                failures, delay = 0, BACKOFF_START_S
                                continue
                            if event.event == "end":
                                end: dict[str, Any] = event.json()
                                return end
                            if event.event == "error":
                                info = event.json()
                                if not info.get("retryable"):
                                    raise CommandError(
                                        f"the stream failed: {info.get('code', 'unknown error')}"
                                    )
                                reason = f"the stream failed: {info.get('code')}"
                                break
                            on_event(event)
                            failures, delay = 0, BACKOFF_START_S
                            if event.id is not None:
                                last_id = event.id
            except httpx.TransportError as exc:
                reason = f"connection problem: {exc.__class__.__name__}: {exc}".rstrip(": ")
            failures += 1
            if failures > max_retries:
                raise CommandError(f"giving up after {max_retries} reconnect attempts: {reason}")
            wait = random.uniform(delay / 2, delay)
            output.info(f"{reason}; reconnecting in {wait:.1f}s")
            sleep(wait)
            delay = min(delay * 2, BACKOFF_MAX_S)


# --- logs -------------------------------------------------------------------------------------


def format_log(entry: dict[str, Any], colour: bool) -> str:
    """`<time> <LEVEL> <message>`, the level coloured on a terminal."""
    level = str(entry.get("level") or "INFO")
    stamp = str(entry.get("timestamp") or "")
    label = f"{level:<7}"
    if colour:
        label = f"{_COLOURS.get(level, '')}{label}{_RESET}"
    return f"{stamp} {label} {entry.get('message', '')}"


def cmd_logs(args: argparse.Namespace) -> int:
    """Print (and follow) a job's log."""
    output = _output()
    gateway = _gateway(args)

    def show(event: SSEEvent) -> None:
        if event.event == "log":
            print(format_log(event.json(), output.colour), file=output.out, flush=True)

    params = {"follow": str(args.follow).lower(), "level": args.level, "tail": args.tail}
    try:
        end = follow_stream(
            gateway,
            gateway.path(f"/jobs/{args.job_id}/logs"),
            params,
            show,
            output,
            max_retries=args.max_retries,
        )
    except CommandError as exc:
        print(f"scaimind logs: {exc}", file=sys.stderr)
        return 1
    if args.follow:
        output.info(f"job {end.get('job_id')} ended: {end.get('status')}")
    else:
        output.info(f"job {end.get('job_id')} is {end.get('status')}")
    return 0


# --- metrics ----------------------------------------------------------------------------------


def sparkline(values: Iterable[float | None]) -> str:
    """Unicode bars scaled between the series' min and max."""
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(_SPARK[min(len(_SPARK) - 1, int((v - lo) / span * len(_SPARK)))] for v in vals)


def _num(value: Any) -> str:
    return "nan" if value is None else f"{value:.6g}"


def _system_line(system: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_num(v)}" for k, v in sorted(system.items()))


def cmd_metrics(args: argparse.Namespace) -> int:
    """Show a job's latest metrics, or follow them with --watch."""
    output = _output()
    gateway = _gateway(args)
    try:
        if args.watch:
            return _watch_metrics(args, gateway, output)
        return _show_metrics(args, gateway, output)
    except CommandError as exc:
        print(f"scaimind metrics: {exc}", file=sys.stderr)
        return 1


def _show_metrics(args: argparse.Namespace, gateway: Gateway, output: Output) -> int:
    try:
        response = httpx.get(
            gateway.path(f"/jobs/{args.job_id}/metrics"),
            params={"max_points": 40},
            headers=gateway.headers(),
            timeout=30.0,
        )
    except httpx.TransportError as exc:
        raise CommandError(f"cannot reach {gateway.url}: {exc}") from None
    if response.status_code != 200:
        raise CommandError(_describe(response))
    data = response.json()["data"]
    total = data.get("total_steps") or "?"
    print(
        f"job {data['job_id']}  step {data.get('step', 0)}/{total}  epoch {data.get('epoch', 0)}",
        file=output.out,
    )
    series = {s["name"]: [p["value"] for p in s.get("points", [])] for s in data.get("series", [])}
    latest = data.get("latest") or {}
    width = max((len(n) for n in latest), default=0)
    for name in sorted(latest):
        spark = f"  {sparkline(series.get(name, []))}" if output.colour else ""
        print(f"  {name:<{width}}  {_num(latest[name]):>12}{spark}", file=output.out)
    if not latest:
        print("  (no metrics reported yet)", file=output.out)
    if data.get("system"):
        print(f"  system: {_system_line(data['system'])}", file=output.out)
    return 0


def _watch_metrics(args: argparse.Namespace, gateway: Gateway, output: Output) -> int:
    history: dict[str, deque[float | None]] = {}
    drawn = 0

    def show(event: SSEEvent) -> None:
        nonlocal drawn
        if event.event != "metrics":
            return
        snap = event.json()
        metrics = snap.get("metrics") or {}
        if not output.colour:
            values = " ".join(f"{k}={_num(v)}" for k, v in sorted(metrics.items()))
            print(
                f"{snap.get('timestamp')} step={snap.get('step')} epoch={snap.get('epoch')} "
                f"{values}".rstrip(),
                file=output.out,
                flush=True,
            )
            return
        for name, value in metrics.items():
            history.setdefault(name, deque(maxlen=40)).append(value)
        width = max((len(n) for n in history), default=0)
        lines = [f"job {snap.get('job_id')}  step {snap.get('step')}  epoch {snap.get('epoch')}"]
        for name in sorted(history):
            lines.append(
                f"  {name:<{width}}  {_num(history[name][-1]):>12}  {sparkline(history[name])}"
            )
        if snap.get("system"):
            lines.append(f"  system: {_system_line(snap['system'])}")
        # Redraw in place: move up over the previous table and clear it.
        prefix = f"\x1b[{drawn}F\x1b[J" if drawn else ""
        output.out.write(prefix + "\n".join(lines) + "\n")
        output.out.flush()
        drawn = len(lines)

    end = follow_stream(
        gateway,
        gateway.path(f"/jobs/{args.job_id}/metrics/stream"),
        {"interval": args.interval},
        show,
        output,
        max_retries=args.max_retries,
    )
    output.info(f"job {end.get('job_id')} ended: {end.get('status')}")
    return 0


# --- registration -----------------------------------------------------------------------------


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help=f"gateway URL (SCAIMIND_URL, default {DEFAULT_URL})")
    p.add_argument("--token", default=None, help="bearer token (SCAIMIND_TOKEN)")
    p.add_argument(
        "--max-retries",
        type=int,
        default=8,
        help="reconnect attempts in a row before giving up (default 8)",
    )


def _tail(value: str) -> int:
    n = int(value)
    if not 0 <= n <= 10_000:
        raise argparse.ArgumentTypeError("must be between 0 and 10000")
    return n


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `logs` and `metrics` subcommands."""
    p = sub.add_parser("logs", help="print and follow a job's log")
    p.add_argument("job_id")
    p.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep following until the job ends (default) or print the tail and exit",
    )
    p.add_argument(
        "--level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING"],
        default="INFO",
        help="minimum level (ERROR lines always show)",
    )
    p.add_argument("--tail", type=_tail, default=100, help="initial lines (0-10000)")
    _connection_flags(p)
    p.set_defaults(handler=cmd_logs)

    p = sub.add_parser("metrics", help="show a job's latest metrics")
    p.add_argument("job_id")
    p.add_argument("--watch", action="store_true", help="follow the live metrics stream")
    p.add_argument("--interval", type=int, default=5, help="seconds between snapshots (1-60)")
    _connection_flags(p)
    p.set_defaults(handler=cmd_metrics)
