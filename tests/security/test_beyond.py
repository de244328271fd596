"""Holes beyond the issue's list, found by attacking every field that names a path, script, URI,
checkpoint or size: paths a job reports back (checkpoint and final-model events), files swapped
for symlinks between the submit check and the job's start, another tenant's checkpoint ids,
scaidrive:// tricks, oversized values and Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e_jobs.conftest import PREFIX
from tests.security.conftest import (
    FAR_FUTURE,
    SECRET_OF,
    Api,
    assert_no_leak,
    assert_refused,
    job_body,
    probe_script,
    write_script,
)


def soon(seconds: float = 3) -> str:
    """A start_after a few seconds ahead: the job is checked now and started then."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def emitter(api: Api, name: str, events: str) -> str:
    """A CUSTOM script that appends the JSON events of the expression `events` and exits 0."""
    return str(
        write_script(
            api.layout.tenant("acme") / f"{name}.py",
            "import json, os\n"
            "with open(os.environ['SCAIMIND_METRICS_FILE'], 'a') as m:\n"
            f"    for event in {events}:\n"
            "        m.write(json.dumps(event) + '\\n')\n",
        )
    )


# ---- paths a job reports back --------------------------------------------------------------------


async def test_checkpoint_event_naming_another_tenants_checkpoint_is_ignored(api: Api) -> None:
    """A checkpoint event's path was recorded as is: a job could 'checkpoint' globex's checkpoint
    directory, then resume from that checkpoint id and read globex's model."""
    theirs = await api.model_job("globex")
    their_dir = api.host_dir_of(theirs["job_id"], "step-*")
    their_meta = hashlib.sha256((their_dir / "meta.json").read_bytes()).hexdigest()
    script = emitter(
        api,
        "claim",
        "[{'step': 7, 'loss': 1.0}, "
        "{'type': 'checkpoint', 'step': 7, 'path': os.environ['PROBE_PATH'], 'size_bytes': 1}]",
    )
    body = job_body(
        "claim", [str(api.layout.corpus)], script=script, env={"PROBE_PATH": str(their_dir)}
    )
    claimed = await api.wait_done(await api.submit_ok(body))
    assert claimed["status"] == "COMPLETED", claimed
    if claimed["checkpoints"]:
        # The theft: a job resuming from the recorded "checkpoint" reads what it points at.
        reader = write_script(
            api.layout.tenant("acme") / "read_resume.py",
            probe_script(
                "import hashlib\n"
                "attempt('meta', lambda: hashlib.sha256((Path(env['SCAIMIND_RESUME_CHECKPOINT'])"
                " / 'meta.json').read_bytes()).hexdigest())"
            ),
        )
        ref = claimed["checkpoints"][0]["checkpoint_id"]
        body = job_body(
            "steal", [str(api.layout.corpus)], script=reader, resume_from_checkpoint=ref
        )
        stolen = await api.result((await api.wait_done(await api.submit_ok(body)))["job_id"])
        assert stolen["meta"] != {"ok": True, "value": their_meta}, (
            f"acme resumed from its recorded checkpoint {ref} = globex's {their_dir} and read it"
        )
    assert claimed["checkpoints"] == [], claimed["checkpoints"]
    warnings = [e["message"] for e in await api.logs(claimed["job_id"]) if e["level"] == "WARNING"]
    assert any("checkpoint" in m for m in warnings), warnings


LINKER = r"""
import json, os
from pathlib import Path

env = os.environ
ckpt = Path(env['SCAIMIND_CHECKPOINT_DIR'])
ckpt.mkdir(parents=True, exist_ok=True)
# Links inside the job's own checkpoint dir: one absolute, one relative (as resolved on the host).
os.symlink(env['PROBE_PATH'], ckpt / 'step-000007')
os.symlink(env['PROBE_RELATIVE'], ckpt / 'step-000008')
with open(env['SCAIMIND_METRICS_FILE'], 'a') as m:
    for step in (7, 8):
        m.write(json.dumps({'step': step, 'loss': 1.0}) + '\n')
        event = {'type': 'checkpoint', 'step': step, 'path': str(ckpt / f'step-{step:06d}')}
        m.write(json.dumps(event) + '\n')
"""


async def test_a_link_in_the_jobs_checkpoint_dir_does_not_lead_to_another_tenants_checkpoint(
    api: Api,
) -> None:
    """The event names a path inside the job's own checkpoint dir, but it is a link to globex's
    checkpoint: resuming from it must not bind globex's files into acme's job."""
    theirs = await api.model_job("globex")
    their_dir = api.host_dir_of(theirs["job_id"], "step-*")
    their_meta = hashlib.sha256((their_dir / "meta.json").read_bytes()).hexdigest()
    script = write_script(api.layout.tenant("acme") / "linker.py", LINKER)
    # Relative: enough `..` to reach / from wherever the link is, then down to globex's dir.
    relative = "../" * 40 + str(their_dir).lstrip("/")
    env = {"PROBE_PATH": str(their_dir), "PROBE_RELATIVE": relative}
    body = job_body("linker", [str(api.layout.corpus)], script=script, env=env)
    linked = await api.wait_done(await api.submit_ok(body))
    assert linked["status"] == "COMPLETED", linked
    reader = write_script(
        api.layout.tenant("acme") / "read_resume_link.py",
        probe_script(
            "import hashlib\n"
            "attempt('meta', lambda: hashlib.sha256((Path(env['SCAIMIND_RESUME_CHECKPOINT'])"
            " / 'meta.json').read_bytes()).hexdigest())"
        ),
    )
    for ckpt in linked["checkpoints"]:
        body = job_body(
            "steal",
            [str(api.layout.corpus)],
            script=reader,
            resume_from_checkpoint=ckpt["checkpoint_id"],
        )
        r = await api.submit(body)
        if r.status_code != 201:
            continue
        job = await api.wait_done(r.json()["data"]["job_id"])
        if job["status"] != "COMPLETED":
            continue
        stolen = await api.result(job["job_id"])
        assert stolen["meta"] != {"ok": True, "value": their_meta}, (
            f"acme resumed from its checkpoint {ckpt['checkpoint_id']} (a link) and read "
            f"globex's {their_dir}"
        )


async def test_final_model_event_outside_the_output_dir_is_ignored(api: Api) -> None:
    """A final_model event made another tenant's model this job's final model."""
    theirs = await api.model_job("globex")
    their_model = api.host_dir_of(theirs["job_id"], "model")
    script = emitter(
        api, "claim_model", "[{'type': 'final_model', 'path': os.environ['PROBE_PATH']}]"
    )
    body = job_body(
        "claim-model", [str(api.layout.corpus)], script=script, env={"PROBE_PATH": str(their_model)}
    )
    job = await api.wait_done(await api.submit_ok(body))
    assert job["status"] == "COMPLETED", job
    shown = json.dumps({k: job[k] for k in ("final_model_uri", "status_message")})
    assert theirs["job_id"] not in shown, f"acme's job claims globex's model: {shown}"


# ---- files swapped between the check and the use -------------------------------------------------


async def test_data_source_swapped_for_a_symlink_after_submit_is_not_followed(api: Api) -> None:
    """Checked at submit, copied at PREPARING: a symlink swapped in between must not be read."""
    swap = api.layout.tenant("acme") / f"swap-{secrets.token_hex(4)}.jsonl"
    swap.write_text(api.layout.corpus.read_text())
    job_id = await api.submit_ok(job_body("swap", [str(swap)], start_after=soon()))
    swap.unlink()
    swap.symlink_to(api.layout.private("globex"))
    job = await api.wait_done(job_id)
    copies = [
        str(p)
        for p in api.serve.data_dir.rglob("*")
        if p.is_file()
        and "dataset-cache" in p.parts
        and SECRET_OF["globex"] in p.read_text(errors="replace")
    ]
    assert copies == [], f"globex's data was copied for acme's job ({job['status']}): {copies}"
    assert_no_leak(
        await api.everything("acme"), {"globex's data": SECRET_OF["globex"]}, "acme's views"
    )
    assert job["status"] == "FAILED", job


async def test_custom_script_swapped_for_a_symlink_after_submit_leaks_nothing(api: Api) -> None:
    """A .py checked at submit, then a symlink to the data dir's secret: run with Python, its
    traceback quoted the secret."""
    script = write_script(
        api.layout.tenant("acme") / f"swap-{secrets.token_hex(4)}.py", "print('harmless')\n"
    )
    job_id = await api.submit_ok(
        job_body("swap-script", [str(api.layout.corpus)], script=script, start_after=soon())
    )
    script.unlink()
    script.symlink_to(api.serve.data_dir / "jwt-secret")
    job = await api.wait_done(job_id)
    seen = await api.everything("acme")
    assert_no_leak(seen, api.serve.secrets_on_disk(), f"acme's views ({job['status']})")
    assert job["status"] == "FAILED", job


# ---- ids of another tenant -----------------------------------------------------------------------


async def test_another_tenants_checkpoint_id_is_refused_everywhere(api: Api) -> None:
    """Guard: a checkpoint id of globex for acme's evaluation, retry and resume_from_checkpoint."""
    their_ckpt = (await api.model_job("globex"))["checkpoints"][-1]["checkpoint_id"]
    mine = await api.model_job("acme")
    r = await api.request(
        "POST",
        "/evaluations",
        json_body={
            "job_id": mine["job_id"],
            "model_uri": mine["final_model_uri"],
            "checkpoint_id": their_ckpt,
            "benchmarks": [{"name": "loss"}],
        },
    )
    assert r.status_code in (400, 404, 409), r.text
    failing = write_script(api.layout.tenant("acme") / "fail.py", "raise SystemExit(3)\n")
    failed = await api.wait_done(
        await api.submit_ok(job_body("fails", [str(api.layout.corpus)], script=failing))
    )
    assert failed["status"] == "FAILED", failed
    r = await api.request(
        "POST", f"/jobs/{failed['job_id']}/retry", json_body={"checkpoint_id": their_ckpt}
    )
    assert r.status_code in (400, 404), r.text
    body = job_body(
        "resume",
        [str(api.layout.corpus)],
        resume_from_checkpoint=their_ckpt,
        start_after=FAR_FUTURE,
    )
    assert (await api.submit(body)).status_code in (400, 404)


@pytest.mark.parametrize(
    "uri",
    [
        "scaidrive://globex/secret.jsonl",
        "scaidrive://acme/../globex/secret.jsonl",
        "scaidrive://acme/%2e%2e/globex/secret.jsonl",
        "scaidrive://acme%2f..%2fglobex/secret.jsonl",
        "scaidrive://acme/to-globex/secret.jsonl",
        "scaidrive://acme/passwd",
    ],
)
async def test_scaidrive_tricks_do_not_reach_another_tenant_or_the_host(api: Api, uri: str) -> None:
    """Guard: `..`, encodings and symlinks inside the tenant's own storage."""
    storage = api.layout.storage("acme")
    for link, target in (("to-globex", api.layout.storage("globex")), ("passwd", "/etc/passwd")):
        if not (storage / link).is_symlink():
            (storage / link).symlink_to(target)
    r = await api.validate([{"path": uri}])
    assert r.status_code in (400, 403), r.text
    needles = {"globex's data": SECRET_OF["globex"], "/etc/passwd": "root:x:0:0"}
    assert_no_leak(r.text, needles, "the answer")
    r = await api.submit(job_body("drive", [uri], start_after=FAR_FUTURE))
    assert r.status_code in (400, 403), r.text


# ---- sizes ---------------------------------------------------------------------------------------


async def test_an_environment_value_too_big_for_exec_is_refused_at_submit(api: Api) -> None:
    """300 KB in one variable: accepted, then FAILED at start with 'Argument list too long'.

    Now the schema's cap on variable values refuses it (422 naming the variable)."""
    body = job_body(
        "big-env", [str(api.layout.corpus)], env={"BIG": "x" * 300_000}, start_after=FAR_FUTURE
    )
    assert_refused(await api.submit(body), "training_config.environment.BIG", status=422)


async def test_an_oversized_request_is_a_clear_client_error(api: Api) -> None:
    """5 MB of environment: 429 RESOURCE_EXHAUSTED (retryable!) quoting gRPC's internal limit."""
    env = {f"V{i}": "x" * 100_000 for i in range(50)}
    r = await api.submit(
        job_body("huge", [str(api.layout.corpus)], env=env, start_after=FAR_FUTURE)
    )
    assert r.status_code in (400, 413), r.text[:500]
    assert "larger than max" not in r.text


@pytest.mark.parametrize("value", ["-1", "abc", "99999999999999999999999", "1e9", "5x"])
async def test_bad_last_event_id_is_a_client_error(api: Api, value: str) -> None:
    """Guard: Last-Event-ID is parsed and bounded (never a 5xx)."""
    job = await api.model_job("acme")
    r = await api.request(
        "GET",
        f"/jobs/{job['job_id']}/logs",
        params={"follow": "false"},
        headers={"Last-Event-ID": value},
    )
    assert r.status_code < 500, r.text


# ---- scaidrive:// of another tenant in every path field ------------------------------------------


async def test_another_tenants_scaidrive_uri_is_refused_in_every_path_field(api: Api) -> None:
    """custom_script_path, resume_from_checkpoint, model_uri and benchmark datasets naming
    scaidrive://globex/…; a model_uri that is not local (scaidrive://globex/…, hf://…) silently
    evaluated the job's own final model instead."""
    theirs = (await api.model_job("globex"))["job_id"]
    mine = await api.model_job("acme")
    write_script(api.layout.storage("globex") / "train.py", "print('globex script')\n")
    corpus = [str(api.layout.corpus)]
    submits = {
        "custom_script_path": job_body(
            "drive-script", corpus, script="scaidrive://globex/train.py", start_after=FAR_FUTURE
        ),
        "resume_from_checkpoint": job_body(
            "drive-resume",
            corpus,
            resume_from_checkpoint=f"scaidrive://globex/jobs/{theirs}/checkpoints/step-000010",
            start_after=FAR_FUTURE,
        ),
    }
    for field_name, body in submits.items():
        r = await api.submit(body)
        assert 400 <= r.status_code < 500, (field_name, r.text)

    evaluations = {
        "model_uri of globex": {"model_uri": f"scaidrive://globex/jobs/{theirs}/model"},
        "model_uri elsewhere": {"model_uri": "hf://meta-llama/Llama-3-8B"},
        "dataset of globex": {
            "model_uri": mine["final_model_uri"],
            "benchmarks": [{"name": "loss", "dataset": "scaidrive://globex/secret.jsonl"}],
        },
    }
    for what, fields in evaluations.items():
        body = {"job_id": mine["job_id"], "benchmarks": [{"name": "loss"}], **fields}
        r = await api.request("POST", "/evaluations", json_body=body)
        assert 400 <= r.status_code < 500, (what, r.text)


# ---- tenant ids are path components --------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "source"),
    [
        ("..", "scaidrive://../coordinator.db"),
        ("../..", "scaidrive://..%2F../jwt-secret"),
        ("../tenants/globex", "{globex_private}"),
    ],
)
async def test_a_tenant_id_with_path_characters_reaches_no_other_area(
    api: Api, tenant: str, source: str
) -> None:
    """A tenant id becomes a path component (storage/<tenant>, `{tenant}` in the roots): with
    `..` in it, scaidrive:// led out of the storage area into the data dir (the coordinator's
    database as CSV columns). Tenant ids come from the identity provider or an operator's API
    key; they must still never be a way out."""
    source = source.format(globex_private=api.layout.private("globex"))
    token = await asyncio.to_thread(api.serve.token, tenant)
    r = await api.http.post(
        f"{PREFIX}/data/validate",
        json={"sources": [{"path": source, "format": "csv"}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    needles = {
        **api.serve.secrets_on_disk(),
        "the coordinator database": "SQLite format 3",
        "globex's data": SECRET_OF["globex"],
    }
    assert_no_leak(r.text, needles, f"the answer to tenant {tenant!r}")
    assert 400 <= r.status_code < 500, r.text[:1000]
