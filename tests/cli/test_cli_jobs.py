"""`scaimind jobs …`, `logs` and `metrics` as a user runs them, against a real `scaimind serve`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cli.conftest import Server, scaimind

ETA_LINE = re.compile(r"step \d+/40  \d+\.\d%  ETA (\d+s|\dm \d\ds)")


def test_submit_wait_get_list(server: Server) -> None:
    job_id = server.submit(server.builtin_job("first", steps=30, team="cli"))

    waited = server.ok("jobs", "wait", job_id, "--interval", "0.2")
    assert f"job {job_id} ended: COMPLETED" in waited.err
    assert waited.out == ""

    job = server.job(job_id)
    assert (job["status"], job["progress"]["current_step"]) == ("COMPLETED", 30)
    shown = server.ok("jobs", "get", job_id).out
    assert re.search(r"^status\s+COMPLETED", shown, re.M), shown
    assert re.search(r"^progress\s+step 30/30  100\.0%", shown, re.M), shown
    latest = job["latest_checkpoint"]
    assert latest == job["checkpoints"][-1]
    expected = rf"^checkpoints\s+{job['checkpoint_count']}, latest {latest['checkpoint_id']} "
    assert re.search(expected + rf"\(step {latest['step']}\)$", shown, re.M), shown

    table = server.ok("jobs", "list").out.splitlines()
    assert table[0].split() == ["job_id", "name", "status", "progress", "created_at", "labels"]
    (row,) = [line for line in table if line.startswith(job_id)]
    assert row.split()[1:5] == ["first", "COMPLETED", "30/30", "100%"]
    assert row.endswith("team=cli")
    assert not any(line != line.rstrip() for line in table)  # piped: no padding

    listed = server.ok("jobs", "list", "--json", "--label", "team=cli", "--status", "completed")
    assert [j["job_id"] for j in listed.json()["jobs"]] == [job_id]
    # Lists carry summaries: the newest checkpoint and the count, not the list.
    (summary,) = listed.json()["jobs"]
    assert summary["checkpoints"] == []
    assert (summary["checkpoint_count"], summary["latest_checkpoint"]) == (
        job["checkpoint_count"],
        latest,
    )
    none = server.ok("jobs", "list", "--json", "--label", "team=cli", "--status", "FAILED")
    assert none.json()["jobs"] == []

    # Paging: --all walks every page; without it the next token is announced on stderr.
    other = server.submit(server.builtin_job("second", steps=5, team="cli"))
    server.ok("jobs", "wait", other, "--interval", "0.2")
    first_page = server.ok("jobs", "list", "--page-size", "1", "--label", "team=cli")
    assert len(first_page.out.splitlines()) == 2
    assert "more jobs: --page-token " in first_page.err
    everything = server.ok("jobs", "list", "--json", "--page-size", "1", "--all").json()
    assert {job_id, other} <= {j["job_id"] for j in everything["jobs"]}
    assert len(everything["jobs"]) == everything["total_count"]


def test_submit_from_stdin_is_idempotent_with_a_key(server: Server) -> None:
    body = json.dumps(server.builtin_job("stdin", steps=5))
    first = server.ok("jobs", "submit", "-", "--idempotency-key", "cli-key-1", stdin=body)
    again = server.ok("jobs", "submit", "-", "--idempotency-key", "cli-key-1", "--json", stdin=body)
    assert again.json()["job_id"] == first.out.strip()
    # Without a key every run is a new job.
    fresh = server.ok("jobs", "submit", "-", stdin=body)
    assert fresh.out.strip() != first.out.strip()
    # The same key with another body is refused, on one line, exit 1.
    changed = json.dumps(server.builtin_job("stdin-changed", steps=5))
    reused = server.run("jobs", "submit", "-", "--idempotency-key", "cli-key-1", stdin=changed)
    assert reused.code == 1
    assert reused.err.startswith("scaimind: IDEMPOTENCY_KEY_REUSED: ")
    assert "(HTTP 422)" in reused.err
    assert len(reused.err.splitlines()) == 1


def test_a_failed_job_fails_wait_logs_and_metrics(server: Server) -> None:
    job_id = server.submit(server.custom_job("fails", TOTAL_STEPS="6", FAIL_AT="3"))

    waited = server.run("jobs", "wait", job_id, "--json", "--interval", "0.2")
    assert waited.code == 4, waited.err
    assert waited.json()["status"] == "FAILED"
    assert re.search(rf"job {job_id} ended: FAILED — EXIT_CODE: .*boom", waited.err), waited.err

    logs = server.run("logs", job_id, "--tail", "1000")
    assert logs.code == 4, logs.err
    assert any(
        line.endswith("WARNING boom: something went wrong") for line in logs.out.splitlines()
    )
    assert f"job {job_id} ended: FAILED" in logs.err
    tail = server.run("logs", job_id, "--no-follow", "--tail", "3")
    assert tail.code == 4
    assert f"job {job_id} is FAILED" in tail.err
    entries = [json.loads(line) for line in server.run("logs", job_id, "--json").out.splitlines()]
    assert {"seq", "level", "message", "timestamp"} <= set(entries[0])
    assert "boom: something went wrong" in [e["message"] for e in entries]

    watched = server.run("metrics", job_id, "--watch", "--interval", "1")
    assert watched.code == 4, watched.err

    # A FAILED job can be retried: a new child job.
    retried = server.ok("jobs", "retry", job_id, "--json").json()
    assert retried["job_id"] != job_id
    assert server.job(retried["job_id"])["parent_job_id"] == job_id
    server.run("jobs", "cancel", retried["job_id"])


def test_wait_follows_an_automatic_retry(server: Server) -> None:
    body = server.custom_job("retried", TOTAL_STEPS="6", FAIL_AT="3", CKPT_EVERY="2")
    body["training_config"]["max_retries"] = 1
    job_id = server.submit(body)
    waited = server.run("jobs", "wait", job_id, "--json", "--interval", "0.2")
    # The script fails only on a fresh start; the retry resumes from step 2 and completes.
    assert waited.code == 0, waited.err
    final = waited.json()
    assert (final["status"], final["parent_job_id"]) == ("COMPLETED", job_id)
    assert f"following its automatic retry {final['job_id']}" in waited.err


def test_control_commands(server: Server) -> None:
    gate = server.root / "gate-control"
    job_id = server.submit(
        server.custom_job("control", TOTAL_STEPS="8", GATE=str(gate), GATE_STEP="3")
    )
    server.poll_job(job_id, lambda j: j["progress"]["current_step"] == 3)

    paused = server.ok("jobs", "pause", job_id)
    assert paused.out.startswith(f"job {job_id}: PAUSED — ")
    checkpoint = server.job(job_id)["checkpoints"][-1]["checkpoint_id"]
    resumed = server.ok("jobs", "resume", job_id, "--checkpoint", checkpoint, "--json").json()
    assert resumed["status"] in ("QUEUED", "SCHEDULING", "PREPARING", "TRAINING")
    cancelled = server.ok("jobs", "cancel", job_id, "--reason", "enough")
    assert cancelled.out.startswith(f"job {job_id}: CANCELLED")

    again = server.run("jobs", "cancel", job_id)
    assert again.code == 1
    assert again.err.startswith("scaimind: FAILED_PRECONDITION: ")
    assert "(HTTP 409)" in again.err
    waited = server.run("jobs", "wait", job_id)
    assert waited.code == 4
    assert server.run("logs", job_id, "--no-follow").code == 4


def test_progress_eta_and_human_units(server: Server) -> None:
    job_id = server.submit(server.custom_job("slow", TOTAL_STEPS="40", STEP_SECONDS="0.1"))
    watched = server.ok("metrics", job_id, "--watch", "--interval", "1")
    lines = watched.out.splitlines()
    assert lines, watched.err
    assert all(" total=40 percent=" in line for line in lines), lines
    assert any(re.search(r" eta=\d+s ", line) for line in lines), lines
    assert re.search(r"memory_used_bytes=[\d.]+(KiB|MiB|GiB)", watched.out), watched.out
    assert "e+0" not in watched.out
    assert re.search(r" step=40 total=40 percent=100\.0 eta=- ", lines[-1]), lines[-1]

    job_id = server.submit(server.custom_job("slow-wait", TOTAL_STEPS="40", STEP_SECONDS="0.1"))
    waited = server.ok("jobs", "wait", job_id, "--interval", "0.3")
    assert ETA_LINE.search(waited.err), waited.err

    job_id = server.submit(server.custom_job("json-watch", TOTAL_STEPS="5"))
    server.ok("jobs", "wait", job_id)
    snapshots = server.ok("metrics", job_id, "--watch", "--json").out.splitlines()
    assert json.loads(snapshots[-1])["step"] == 5
    latest = server.ok("metrics", job_id, "--json").json()
    assert (latest["job_id"], latest["total_steps"]) == (job_id, 5)


def test_errors_are_one_line_with_distinct_exit_codes(server: Server, tmp_path: Path) -> None:
    missing = server.run("jobs", "get", "job_nope")
    assert (missing.code, missing.err) == (
        1,
        "scaimind: NOT_FOUND: job job_nope not found (HTTP 404)\n",
    )
    elsewhere = server.run("jobs", "list", "--url", f"{server.url}/not-the-root")
    assert elsewhere.code == 1
    assert (
        "NOT_FOUND: no such endpoint: GET /not-the-root/v1/modules/scaimind/jobs" in elsewhere.err
    )
    no_token = server.run("jobs", "list", token="")
    assert no_token.code == 1
    assert "AUTH_TOKEN_MISSING" in no_token.err
    assert "pass --token or set SCAIMIND_TOKEN" in no_token.err

    # A token minted for another data dir: the message names that data dir.
    other = tmp_path / "other-data"
    foreign = scaimind("token", "--data-dir", str(other), "--tenant", "t", "--user", "u")
    assert foreign.code == 0, foreign.err
    rejected = server.run("jobs", "list", "--token", foreign.out.strip())
    assert rejected.code == 1
    assert "signature does not verify" in rejected.err
    assert f"minted by `scaimind token` for data dir {other}" in rejected.err

    invalid = server.run("jobs", "submit", "-", stdin='{"name": 1}')
    assert invalid.code == 1
    assert invalid.err.startswith("scaimind: VALIDATION_ERROR: ")
    assert "name: Input should be a valid string" in invalid.err
    assert "training_config: Field required" in invalid.err
    assert len(invalid.err.splitlines()) == 1

    for args, stdin in [
        (("jobs", "submit", "-"), "not json"),
        (("jobs", "submit", "-"), "[1, 2]"),
        (("jobs", "submit", str(tmp_path / "absent.json")), None),
        (("jobs", "list", "--page-size", "0"), None),
        (("jobs", "list", "--label", "no-equals-sign"), None),
        (("jobs", "list", "--url", "localhost:8080"), None),
        (("logs", "job_x", "--tail", "10001"), None),
        (("jobs", "frobnicate"), None),
    ]:
        usage = server.run(*args, stdin=stdin)
        assert usage.code == 2, (args, usage.code, usage.err)
        assert usage.out == ""
        assert "Traceback" not in usage.err
