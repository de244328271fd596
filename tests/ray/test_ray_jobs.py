"""Jobs on a real Ray cluster, observed through HTTP and through Ray's own job list."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from ray.job_submission import JobStatus

from scaimind.coordinator.config import SandboxConfig
from tests.conftest import auth, job_processes, process_ended, wait_for
from tests.e2e_jobs.conftest import PREFIX, parse_sse

from .conftest import RayStack, RayStackFactory, ray_jobs, wait_ray_status


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

    # The trained model is evaluated on Ray too (the evaluator is a Ray job of its own).
    r = await s.http.post(
        f"{PREFIX}/evaluations",
        json={"job_id": job_id, "benchmarks": [{"name": "perplexity"}]},
        headers=auth(),
    )
    assert r.status_code == 201, r.text
    eval_id = r.json()["data"]["evaluation_id"]

    async def evaluated() -> dict[str, Any] | None:
        r = await s.http.get(f"{PREFIX}/evaluations/{eval_id}", headers=auth())
        ev: dict[str, Any] = r.json()["data"]
        return ev if ev["status"] in ("COMPLETED", "FAILED") else None

    ev = await wait_for(evaluated, within=60)
    assert ev["status"] == "COMPLETED", ev
    assert ev["benchmarks"][0]["score"] > 1.0
    await wait_ray_status(head, f"{eval_id}-a1", JobStatus.SUCCEEDED)


async def test_cancel_while_running_on_ray(ray_stack: RayStack) -> None:
    s, head = ray_stack.stack, ray_stack.head
    job_id = await s.submit(s.body("cancel-me", env={"GATE": str(s.gate("x")), "GATE_STEP": "2"}))
    await s.wait(job_id, "TRAINING", step=2, within=60)
    assert job_processes(job_id)
    resp = await s.ok(job_id, "cancel", {"reason": "not needed"})
    assert resp["status"] == "CANCELLED"
    # Ray stops its job, the processes are gone, and the slot is free for the next job.
    await wait_ray_status(head, f"{job_id}-a1", JobStatus.STOPPED, JobStatus.FAILED)
    await wait_for(lambda: not job_processes(job_id), within=30)
    job = await s.job(job_id)
    assert job["status"] == "CANCELLED"
    assert "not needed" in job["status_message"]

    async def free_slots() -> bool:
        node = (await s.http.get(f"{PREFIX}/cluster/nodes", headers=auth())).json()["data"]
        return bool(node["nodes"][0]["gpus_available"] == 2)

    await wait_for(free_slots, within=30)
    assert (await s.job(job_id))["status"] == "CANCELLED"


async def test_pause_then_resume_continues_from_the_checkpoint_as_a_new_ray_job(
    make_ray_stack: RayStackFactory, tmp_path: Path
) -> None:
    # Job folders, checkpoints and launch files on the shared root, not in the data dir.
    shared = tmp_path / "shared"
    ray_stack = await make_ray_stack(shared_root=shared)
    s, head = ray_stack.stack, ray_stack.head
    # Held at step 3; periodic checkpoints only every 10 steps: only the pause writes one.
    env = {"GATE": str(s.gate("p")), "GATE_STEP": "3", "TOTAL_STEPS": "6", "CKPT_EVERY": "10"}
    job_id = await s.submit(s.body("pausable", env=env))
    await s.wait(job_id, "TRAINING", step=3, within=60)
    assert (shared / "jobs" / job_id).is_dir()
    assert (shared / "launches" / f"{job_id}-a1.json").is_file()
    assert not (s.root / "coordinator" / "jobs").exists()
    paused = await s.ok(job_id, "pause")
    assert paused["status"] == "PAUSED", paused
    job = await s.job(job_id)
    assert [c["step"] for c in job["checkpoints"]] == [3]
    assert job["checkpoints"][0]["path"] == (
        f"scaidrive://tenant-a/jobs/{job_id}/checkpoints/step-000003"
    )
    assert (shared / "storage/tenant-a/jobs" / job_id / "checkpoints/step-000003").is_dir()
    await wait_ray_status(head, f"{job_id}-a1", JobStatus.FAILED, JobStatus.STOPPED)
    # The launch file (it holds the job's variables) is gone with the attempt.
    await wait_for(lambda: not (shared / "launches" / f"{job_id}-a1.json").exists())

    s.gate("p").write_text("")
    assert (await s.ok(job_id, "resume"))["status"] == "QUEUED"
    job = await s.wait(job_id, "COMPLETED", within=60)
    # A new Ray job for the second attempt, which started from the checkpoint's step.
    await wait_ray_status(head, f"{job_id}-a2", JobStatus.SUCCEEDED)
    messages = await s.messages(job_id)
    assert "custom script starting at step 4 of 6" in messages
    assert [step for step, _ in await s.losses(job_id)] == list(range(1, 7))
    assert job["retry_count"] == 0


async def test_failing_custom_job_is_retried_from_its_checkpoint(ray_stack: RayStack) -> None:
    s, head = ray_stack.stack, ray_stack.head
    env = {"FAIL_AT": "3", "CKPT_EVERY": "1", "TOTAL_STEPS": "5"}
    job_id = await s.submit(s.body("flaky", env=env, max_retries=1))
    job = await s.wait(job_id, "FAILED", within=60)
    assert job["error"]["code"] == "EXIT_CODE"
    assert "exit code 3" in job["error"]["message"]
    assert "boom: something went wrong" in job["error"]["message"]
    await wait_ray_status(head, f"{job_id}-a1", JobStatus.FAILED)

    async def child() -> dict[str, Any] | None:
        jobs = await s.all_jobs()
        return next((j for j in jobs if j["parent_job_id"] == job_id), None)

    retry = await wait_for(child, within=30)
    done = await s.wait(retry["job_id"], "COMPLETED", within=60)
    assert done["retry_count"] == 1
    assert "custom script starting at step 3 of 5" in await s.messages(retry["job_id"])
    await wait_ray_status(head, f"{retry['job_id']}-a1", JobStatus.SUCCEEDED)


async def test_priority_queueing_and_preemption_when_the_cluster_is_full(
    ray_stack: RayStack,
) -> None:
    s, head = ray_stack.stack, ray_stack.head

    def held(name: str, **kw: Any) -> dict[str, Any]:
        return s.body(name, env={"GATE": str(s.gate(name)), "GATE_STEP": "1"}, **kw)

    # Both CPUs of the cluster: one preemptible low-priority job, one normal job.
    victim = await s.submit(held("victim", priority=2, preemptible=True))
    steady = await s.submit(held("steady", priority=5))
    await s.wait(victim, "TRAINING", step=1, within=60)
    await s.wait(steady, "TRAINING", step=1, within=60)

    # Nothing fits: a low-priority job waits in our queue, never on Ray.
    low = await s.submit(held("low", priority=1))
    # A high-priority job pushes the preemptible one out (it checkpoints first).
    high = await s.submit(held("high", priority=9))
    await s.wait(victim, "PREEMPTED", within=60)
    await s.wait(high, "TRAINING", step=1, within=60)
    queued = await s.job(low)
    assert queued["status"] == "QUEUED"
    assert queued["queue_position"] == 1
    submitted = ray_jobs(head)
    assert f"{low}-a1" not in submitted
    assert f"{victim}-a1" in submitted

    # When a slot frees up, the queued job gets it.
    s.gate("steady").write_text("")
    await s.wait(steady, "COMPLETED", within=60)
    await s.wait(low, "TRAINING", step=1, within=60)
    for name in ("high", "low"):
        s.gate(name).write_text("")
    await s.wait(high, "COMPLETED", within=60)
    await s.wait(low, "COMPLETED", within=60)


PEEK_SCRIPT = r"""
import json, os, sys
from pathlib import Path
spec = json.loads(Path(os.environ["SCAIMIND_SPEC_FILE"]).read_text())
other = os.environ["OTHER"]
print("uid", os.getuid())
print("sees other job", os.path.exists(other))
print("root", sorted(os.listdir("/")))
# Records of the launcher written by the job itself are text, not records.
print('forged\r@x {"code": 9}\r@s {"pid": 1}', flush=True)
sys.stderr.write('@x {"code": 9}\n')
sys.stderr.flush()
out = Path(spec["output_path"])
out.mkdir(parents=True, exist_ok=True)
(out / "model.txt").write_text("peeked")
"""


async def test_jobs_of_two_tenants_stay_apart_on_ray(ray_stack: RayStack) -> None:
    s, head = ray_stack.stack, ray_stack.head
    a = await s.submit(s.body("a", env={"GATE": str(s.gate("a")), "GATE_STEP": "2"}))
    job_a = await s.wait(a, "TRAINING", step=2, within=60)
    a_dir = s.root / "coordinator" / "jobs" / a
    assert a_dir.is_dir()

    peek = s.root / "peek.py"
    peek.write_text(PEEK_SCRIPT)
    body = s.body("b", env={"OTHER": str(a_dir)})
    body["training_config"]["framework"]["custom_script_path"] = str(peek)
    b = await s.submit(body, tenant="tenant-b")

    async def b_done() -> dict[str, Any] | None:
        r = await s.http.get(f"{PREFIX}/jobs/{b}", headers=auth("tenant-b"))
        job: dict[str, Any] = r.json()["data"]
        return job if job["status"] in ("COMPLETED", "FAILED") else None

    job_b = await wait_for(b_done, within=60)
    assert job_b["status"] == "COMPLETED", job_b
    b_lines = [e["message"] for e in await s.logs(b, tenant="tenant-b")]
    # Sandboxed on the Ray node: another user, and only its own folders.
    assert "uid 65534" in b_lines
    assert "sees other job False" in b_lines
    assert not [line for line in b_lines if line.startswith("root") and "coordinator" in line]
    assert 'forged\r@x {"code": 9}\r@s {"pid": 1}' in b_lines
    assert '@x {"code": 9}' in b_lines

    # Each tenant sees only its own job; the other's answers like a missing one.
    for job_id, owner, other in ((a, "tenant-a", "tenant-b"), (b, "tenant-b", "tenant-a")):
        r = await s.http.get(f"{PREFIX}/jobs/{job_id}", headers=auth(other))
        assert r.status_code == 404, r.text
        r = await s.http.get(f"{PREFIX}/jobs/{job_id}/logs", headers=auth(other))
        assert r.status_code == 404, r.text
        assert (await s.http.get(f"{PREFIX}/jobs/{job_id}", headers=auth(owner))).status_code == 200
    listed = {j["job_id"] for j in await s.all_jobs("tenant-b")}
    assert listed == {b}
    assert job_b["final_model_uri"] == f"scaidrive://tenant-b/jobs/{b}/model"
    assert job_a["tenant_id"] == "tenant-a"

    # Ray knows the jobs by their ScaiMind ids, each with its tenant.
    on_ray = ray_jobs(head)
    assert on_ray[f"{a}-a1"].metadata["scaimind_tenant"] == "tenant-a"
    assert on_ray[f"{b}-a1"].metadata["scaimind_tenant"] == "tenant-b"
    s.gate("a").write_text("")
    await s.wait(a, "COMPLETED", within=60)


def parent_of(pid: int) -> int:
    """The parent process id of `pid`."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def command_of(pid: int) -> str:
    """The command line of `pid`."""
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


async def test_custom_jobs_without_the_sandbox_follow_the_same_rule_on_ray(
    make_ray_stack: RayStackFactory,
) -> None:
    # No bubblewrap: CUSTOM jobs are refused unless the operator allows them unsandboxed.
    refused = (await make_ray_stack(sandbox=SandboxConfig(bwrap="no-such-bwrap"))).stack
    r = await refused.http.post(f"{PREFIX}/jobs", json=refused.body("custom"), headers=auth())
    assert r.status_code == 409, r.text
    assert "SCAIMIND_ALLOW_UNSANDBOXED_JOBS" in r.json()["error"]["message"]

    allowed = await make_ray_stack(
        sandbox=SandboxConfig(bwrap="no-such-bwrap", allow_unsandboxed=True)
    )
    s, head = allowed.stack, allowed.head
    job_id = await s.submit(s.body("bare", env={"GATE": str(s.gate("g")), "GATE_STEP": "2"}))
    await s.wait(job_id, "TRAINING", step=2, within=60)
    assert any("without a sandbox" in m for m in await s.messages(job_id))
    # The process runs in a session of its own, outside Ray's process group; it still ends
    # with its launcher (here: killed as Ray kills it when the job's supervisor dies).
    [workload] = job_processes(job_id)
    launcher = parent_of(workload)
    assert "ray_entry" in command_of(launcher)
    os.kill(launcher, signal.SIGKILL)
    await wait_for(lambda: process_ended(workload), within=30)
    # The attempt is lost without an exit status: PREEMPTED, like a node that went away.
    job = await s.wait(job_id, "PREEMPTED", within=60)
    assert "without an exit status" in job["status_message"]
    await wait_ray_status(head, f"{job_id}-a1", JobStatus.FAILED)
