"""Jobs on a real Ray cluster, observed through HTTP and through Ray's own job list."""

from __future__ import annotations

import json

from ray.job_submission import JobStatus

from tests.conftest import auth
from tests.e2e_jobs.conftest import PREFIX, parse_sse

from .conftest import RayStack, ray_jobs, wait_ray_status


async def test_builtin_job_on_ray_completes_with_falling_loss_and_live_logs(
    ray_stack: RayStack,
) -> None:
    s, head = ray_stack.stack, ray_stack.head
    nodes = (await s.http.get(f"{PREFIX}/cluster/nodes", headers=auth())).json()["data"]["nodes"]
    assert [(n["gpu_type"], n["gpu_count"], n["status"]) for n in nodes] == [("CPU", 2, "ONLINE")]
    body = s.body(
        "on-ray",
        custom=False,
        hyperparameters={"max_steps": 40, "learning_rate": 0.01, "seed": 3},
        checkpoint_interval_steps=10,
        labels={"team": "nlp"},
        env=None,
    )
    body["training_config"]["environment"] = {"HF_TOKEN": "s3cr3t-value"}
    job_id = await s.submit(body)

    # Followed live over SSE from before the process starts until the stream ends with the job.
    async with s.http.stream(
        "GET", f"{PREFIX}/jobs/{job_id}/logs", params={"follow": "true"}, headers=auth()
    ) as stream:
        assert stream.status_code == 200
        text = "".join([chunk async for chunk in stream.aiter_text()])
    events = parse_sse(text)
    assert events[-1] == ("message", "[DONE]")
    entries = [json.loads(d) for e, d in events if e == "log"]
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(set(seqs))
    messages = [e["message"] for e in entries]
    assert any(f"Ray job {job_id}-a1 started" in m for m in messages), messages

    job = await s.wait(job_id, "COMPLETED", within=60)
    assert job["progress"]["current_step"] == 40
    assert [c["step"] for c in job["checkpoints"]] == [10, 20, 30, 40]
    assert job["final_model_uri"] == f"scaidrive://tenant-a/jobs/{job_id}/model"
    assert s.host_path(job["final_model_uri"]).is_dir()
    # Paths as the tenant gave them or as scaidrive:// URIs: the coordinator's never show.
    server = str(s.root / "coordinator")
    assert server not in json.dumps(job)
    losses = await s.losses(job_id)
    assert [step for step, _ in losses] == list(range(1, 41))
    assert sum(v for _, v in losses[-5:]) < sum(v for _, v in losses[:5])
    # The whole log also came back without server paths (Ray's own lines stay out).
    logs = await s.logs(job_id)
    assert not [e for e in logs if server in e["message"]]
    assert any("in the job sandbox" in e["message"] for e in logs)

    # `ray job list` shows the job under its ScaiMind id, with tenant and labels, and none of
    # the job's variables (Ray shows runtime_env to every client of its job server).
    ray_job = await wait_ray_status(head, f"{job_id}-a1", JobStatus.SUCCEEDED)
    assert ray_job.metadata["scaimind_tenant"] == "tenant-a"
    assert json.loads(ray_job.metadata["scaimind_labels"]) == {"team": "nlp"}
    assert "s3cr3t-value" not in json.dumps(ray_job.runtime_env) + ray_job.entrypoint
    assert "HF_TOKEN" not in json.dumps(ray_job.model_dump(), default=str)
    assert f"{job_id}-a1" in ray_jobs(head)
