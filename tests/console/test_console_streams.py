"""The console's live streams: its SSE parser, and a resume across a server restart."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Request, expect

from tests.console.conftest import ConsoleFactory, ConsoleServer, start_server
from tests.console.test_console_browser import CHART_POINTS, LOG_LINES, wait_more

LOG_SEQS = (
    "() => [...document.querySelectorAll('#log-lines li')].map((li) => Number(li.dataset.seq))"
)

STREAM = (
    ": ping\r\n\r\n"
    'id: 1\r\nevent: log\r\ndata: {"seq": 1, "message": "a"}\r\n\r\n'
    'id: 2\nevent: log\ndata: {"seq": 2,\ndata:  "message": "b"}\n\n'
    'id: 3\revent: log\rdata: {"seq": 3, "message": "c:d"}\r\r'
    'event: end\ndata: {"status": "COMPLETED"}\n\n'
    "data: [DONE]\n\n"
)
EXPECTED = [
    {"event": "log", "data": '{"seq": 1, "message": "a"}', "id": "1"},
    {"event": "log", "data": '{"seq": 2,\n "message": "b"}', "id": "2"},
    {"event": "log", "data": '{"seq": 3, "message": "c:d"}', "id": "3"},
    {"event": "end", "data": '{"status": "COMPLETED"}', "id": None},
    {"event": "message", "data": "[DONE]", "id": None},
]


def test_the_sse_parser_gives_the_same_events_however_the_stream_is_cut(
    console: ConsoleFactory, server: ConsoleServer
) -> None:
    tab = console()
    tab.open("")
    expect(tab.page.get_by_role("button", name="Sign in")).to_be_visible()
    results = tab.page.evaluate(
        """async (text) => {
            const base = document.querySelector('meta[name="scaimind-base"]').content;
            const { SSEParser } = await import(base + "assets/sse.js");
            const run = (chunks) => {
                const p = new SSEParser();
                return chunks.flatMap((c) => p.push(c));
            };
            const out = [run([text]), run([...text])];
            for (let i = 1; i < text.length; i++) out.push(run([text.slice(0, i), text.slice(i)]));
            return out;
        }""",
        STREAM,
    )
    for events in results:
        assert events == EXPECTED


def test_logs_and_charts_resume_after_a_server_restart_with_no_gap_or_duplicate(
    console: ConsoleFactory, tmp_path: Path
) -> None:
    own = start_server(tmp_path / "restarted")
    try:
        job_id = own.submit("restarted", max_steps=20000)
        own.wait_job(job_id, "TRAINING")
        tab = console(on=own)
        page = tab.page
        resumes: list[tuple[str, str | None]] = []

        def record(request: Request) -> None:
            if "/logs?" in request.url or "/metrics/stream?" in request.url:
                kind = "logs" if "/logs?" in request.url else "metrics"
                resumes.append((kind, request.headers.get("last-event-id")))

        page.on("request", record)
        tab.sign_in(own.token(), f"monitor?job={job_id}")
        wait_more(page, LOG_LINES, 8)
        points = wait_more(page, CHART_POINTS, 3)
        before: list[int] = page.evaluate(LOG_SEQS)

        own.stop()
        # A lost connection is said plainly, and each stream says it is reconnecting.
        expect(page.locator("#banner")).to_contain_text("Cannot reach the ScaiMind server")
        logs_state = page.locator("section", has=page.get_by_role("heading", name="Logs"))
        expect(logs_state.locator(".stream-state")).to_contain_text("reconnecting")
        tab.shot("connection-lost")

        own.start()  # same port and data dir: the job was re-queued and trains on
        wait_more(page, f"Math.max(...({LOG_SEQS})())", max(before) + 3)
        expect(page.locator("#banner")).to_be_hidden()
        expect(logs_state.locator(".stream-state")).to_have_text("live")
        wait_more(page, CHART_POINTS, points)

        shown: list[int] = page.evaluate(LOG_SEQS)
        stored = own.log_seqs(job_id)
        assert len(shown) == len(set(shown))
        assert shown == [s for s in stored if s <= shown[-1]], (shown, stored)
        assert shown[: len(before)] == before
        # The reconnects asked for what followed the last event received, not the tail again.
        log_resumes = [header for kind, header in resumes if kind == "logs"]
        assert log_resumes[0] is None
        assert len(log_resumes) >= 2
        assert all(h is not None and int(h) >= before[-1] for h in log_resumes[1:]), log_resumes
        metric_resumes = [header for kind, header in resumes if kind == "metrics"]
        assert len(metric_resumes) >= 2
        assert all(h is not None for h in metric_resumes[1:]), metric_resumes
        tab.shot("reconnected")
        r = own.call("POST", f"jobs/{job_id}/cancel", json={})
        assert r.status_code == 200, r.text
    finally:
        own.stop()
