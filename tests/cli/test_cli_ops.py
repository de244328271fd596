"""`scaimind eval`, `data`, `nodes`, `queue` against a real `scaimind serve`; failing fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Server, scaimind
from tests.conftest import closed_port


def test_eval_submit_list_get(server: Server) -> None:
    job_id = server.submit(server.builtin_job("to-evaluate", steps=20))
    server.ok("jobs", "wait", job_id, "--interval", "0.2")
    model = server.job(job_id)["final_model_uri"]

    submitted = server.ok(
        "eval", "submit", job_id, "-b", "perplexity", "-b", "loss", "--model-uri", model
    )
    evaluation_id = submitted.out.strip()
    assert evaluation_id.startswith("eval_"), submitted.out

    def done(record: dict[str, object]) -> bool:
        return record["status"] in ("COMPLETED", "FAILED")

    record = server.ok("eval", "get", evaluation_id, "--json").json()
    for _ in range(60):
        if done(record):
            break
        record = server.ok("eval", "get", evaluation_id, "--json").json()
    assert record["status"] == "COMPLETED", record
    assert [b["name"] for b in record["benchmarks"]] == ["perplexity", "loss"]

    shown = server.ok("eval", "get", evaluation_id).out.splitlines()
    (perplexity,) = [line for line in shown if line.startswith("perplexity ")]
    assert perplexity.split()[1] == "COMPLETED"
    assert float(perplexity.split()[2]) == pytest.approx(record["benchmarks"][0]["score"], rel=1e-5)

    # The list shows each evaluation's scores; --json has the records as `eval get` shows them.
    listed = server.ok("eval", "list")
    (line,) = [row for row in listed.out.splitlines() if row.startswith(evaluation_id)]
    assert line.split()[1:3] == [job_id, "COMPLETED"], line
    assert "perplexity=" in line
    assert "loss=" in line
    page = server.ok("eval", "list", "--json").json()
    assert record in page["evaluations"]
    assert page["total_count"] >= 1
    mine = server.ok("eval", "list", "--job", job_id, "--json").json()
    assert [e["evaluation_id"] for e in mine["evaluations"]] == [evaluation_id]
    assert server.ok("eval", "list", "--job", "job_none", "--json").json()["evaluations"] == []

    unknown = server.run("eval", "submit", job_id, "-b", "bleu", "--model-uri", model)
    assert unknown.code == 1
    assert "perplexity" in unknown.err  # the refusal lists the known benchmarks
    assert server.run("eval", "submit", job_id).code == 2  # --benchmark is required


def test_data_validate(server: Server) -> None:
    # Under the server's local data root, the only place its tenants may name.
    folder = server.root / "validate"
    folder.mkdir(exist_ok=True)
    train = folder / "train.jsonl"
    train.write_text(
        "".join(
            json.dumps({"prompt": f"{i}+{i}=", "completion": str(2 * i)}) + "\n" for i in range(5)
        )
    )
    # A relative path is made absolute here (the server does not share our directory).
    valid = server.ok("data", "validate", "train.jsonl", cwd=folder)
    header, row = valid.out.splitlines()[:2]
    assert header.split() == [
        "path",
        "valid",
        "format",
        "rows",
        "size",
        "columns",
        "errors",
        "warnings",
    ]
    size = [str(train.stat().st_size), "B"]
    expected = [str(train), "yes", "jsonl", "5", *size, "prompt,completion", "0", "0"]
    assert row.split() == expected

    dpo = server.run("data", "validate", "train.jsonl", "--training-type", "dpo", cwd=folder)
    assert dpo.code == 4
    assert f"{folder / 'train.jsonl'} row 1: missing required fields" in dpo.out
    assert "the data is NOT valid" in dpo.err

    missing = server.run("data", "validate", str(folder / "absent.jsonl"), "--json")
    assert missing.code == 4
    (result,) = missing.json()["results"]
    assert result["valid"] is False
    assert "file not found" in result["errors"][0]["message"]


def test_nodes_drain_enable_and_queue(server: Server) -> None:
    table = server.ok("nodes", "list").out.splitlines()
    assert table[0].split()[:4] == ["node_id", "hostname", "status", "gpu_type"]
    (node,) = [line.split() for line in table[1:]]
    assert (node[0], node[2], node[3]) == ("node-local", "ONLINE", "CPU")
    assert server.ok("nodes", "list", "--json").json()["total_count"] == 1

    drained = server.ok("nodes", "drain", "node-local", "--reason", "maintenance", "--json")
    try:
        assert drained.json()["status"] in ("DRAINING", "DRAINED")
        assert drained.json()["drain_reason"] == "maintenance"
        again = server.run("nodes", "drain", "node-local")
        assert again.code == 1
        assert "(HTTP 409)" in again.err

        # Nothing runs while the only node is drained: a new job waits in the queue.
        job_id = server.submit(server.builtin_job("queued", steps=5))
        queue = server.ok("queue", "--json").json()
        waiting = [j for q in queue["queues"] for j in q["jobs"]]
        assert [j["job_id"] for j in waiting] == [job_id]
        shown = server.ok("queue").out.splitlines()
        assert shown[0].split() == [
            "queue",
            "waiting",
            "running",
            "oldest_wait",
            "wait_if_submitted_now",
        ]
        assert shown[1].split()[:2] == ["default", "1"]
        (row,) = [line.split() for line in shown if job_id in line]
        assert row[:3] == ["default", "1", job_id]
        assert server.ok("nodes", "list", "--status", "drained", "--json").json()["nodes"]
    finally:
        enabled = server.ok("nodes", "enable", "node-local")
    assert enabled.out.splitlines()[1].split()[2] == "ONLINE"
    assert server.ok("jobs", "wait", job_id, "--interval", "0.2").code == 0
    assert server.ok("queue", "--queue", "default", "--json").json()["total_depth"] == 0
    forced = server.ok("nodes", "drain", "node-local", "--force", "--json").json()
    assert forced["status"] == "DRAINED"  # nothing ran there to preempt
    assert server.ok("nodes", "enable", "node-local", "--json").json()["status"] == "ONLINE"


REMOTE_COMMANDS = [
    ("jobs", "list"),
    ("jobs", "get", "job_x"),
    ("jobs", "submit", "-"),
    ("jobs", "cancel", "job_x"),
    ("jobs", "wait", "job_x"),
    ("logs", "job_x"),
    ("metrics", "job_x"),
    ("metrics", "job_x", "--watch"),
    ("eval", "list"),
    ("data", "validate", "/tmp/x.jsonl"),
    ("nodes", "list"),
    ("queue",),
]


@pytest.mark.parametrize("args", REMOTE_COMMANDS, ids=" ".join)
def test_wrong_url_fails_fast(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = scaimind(*args, url=url, token="t", stdin="{}")
    assert result.code == 3, result.err
    assert result.seconds < 5
    assert result.err == (
        f"scaimind: cannot reach {url}: [Errno 111] Connection refused "
        "(is `scaimind serve` running? check --url / SCAIMIND_URL)\n"
    )


def test_unknown_host_fails_at_once() -> None:
    result = scaimind("jobs", "list", url="http://no-such-host.invalid:8080", token="t")
    assert result.code == 3
    assert result.seconds < 5
    assert "unknown host" in result.err


def test_serve_on_a_busy_port_fails_in_one_line(server: Server, tmp_path: Path) -> None:
    port = server.url.rsplit(":", 1)[1]
    busy = scaimind("serve", "--port", port, "--data-dir", str(tmp_path / "d"))
    assert busy.code == 2
    assert busy.err == (
        f"scaimind: cannot listen on 127.0.0.1:{port}: Address already in use — is another "
        "`scaimind serve` running there? Stop it or choose another --port\n"
    )
    assert not (tmp_path / "d").exists()  # refused before touching anything
