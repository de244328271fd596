"""Reproduction 3: any host file was readable through data sources, benchmark datasets,
`/data/validate`, `model_uri` and `resume_from_checkpoint`.

Tenant acme names paths outside its area in every way: absolute, `file://`, another tenant's
storage path given directly, `..`, a symlink inside its own root pointing out, another tenant's
root, the data dir (which the `srv/` root contains). Each is refused with 400 INVALID_ARGUMENT
naming the field, and the answer is the same for an existing and a missing file (no existence,
size or content oracle).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from tests.security.conftest import (
    FAR_FUTURE,
    SECRET_OF,
    Api,
    Layout,
    assert_invalid,
    assert_no_leak,
    assert_refused,
    job_body,
)

MISSING = f"sectest-missing-{secrets.token_hex(4)}"
ATTACKS = [
    "absolute",
    "file-uri",
    "storage-of-globex",
    "dotdot-other-tenant",
    "dotdot-data-dir",
    "symlink-dir",
    "symlink-file",
    "symlink-other-tenant",
    "other-tenant-root",
    "data-dir-secret",
    "data-dir-database",
    "outside-roots",
]


def _link(link: Path, target: Path) -> Path:
    if not link.is_symlink():
        link.symlink_to(target)
    return link


def attack_path(layout: Layout, kind: str) -> str:
    """A path tenant acme must not read, of the given kind."""
    acme = layout.tenant("acme")
    outside = layout.outside / "plain.jsonl"
    if not outside.exists():
        outside.write_text(layout.corpus.read_text())
    paths = {
        "absolute": "/etc/passwd",
        "file-uri": "file:///etc/passwd",
        "storage-of-globex": str(layout.storage("globex") / "secret.jsonl"),
        "dotdot-other-tenant": f"{acme}/../globex/private.jsonl",
        "dotdot-data-dir": f"{acme}/../../srv/data/jwt-secret",
        "symlink-dir": f"{_link(acme / 'etc-link', Path('/etc'))}/passwd",
        "symlink-file": str(_link(acme / "shadow.jsonl", Path("/etc/shadow"))),
        "symlink-other-tenant": str(_link(acme / "globex.jsonl", layout.private("globex"))),
        "other-tenant-root": str(layout.private("globex")),
        "data-dir-secret": str(layout.data_dir / "jwt-secret"),
        "data-dir-database": str(layout.data_dir / "coordinator" / "coordinator.db"),
        "outside-roots": str(outside),
    }
    return paths[kind]


# (existing, missing) pairs: one answer for both.
def oracle_pairs(layout: Layout) -> list[tuple[str, str]]:
    return [
        ("/etc/shadow", f"/etc/{MISSING}"),
        ("file:///etc/shadow", f"file:///etc/{MISSING}"),
        (str(layout.private("globex")), str(layout.tenant("globex") / MISSING)),
        (str(layout.data_dir / "jwt-secret"), str(layout.data_dir / MISSING)),
    ]


def leak_needles(api: Api) -> dict[str, str]:
    return {
        "the first line of /etc/passwd": "root:x:0:0",
        "globex's data": SECRET_OF["globex"],
        **api.serve.secrets_on_disk(),
    }


def same_answer(a: httpx.Response, b: httpx.Response, given_a: str, given_b: str) -> None:
    """Status and body (request ids and the given paths aside) are identical."""

    def norm(r: httpx.Response, given: str) -> tuple[int, str]:
        body = r.json()
        body.pop("meta", None)
        if isinstance(body.get("data"), dict) and "job_id" in body["data"]:
            body["data"]["job_id"] = "<ID>"
            body["data"]["message"] = "<MESSAGE>"
        text = json.dumps(body, sort_keys=True)
        # A file:// URI may be quoted as its path.
        for g in (given, given.removeprefix("file://")):
            text = text.replace(json.dumps(g)[1:-1], "<GIVEN>")
        return r.status_code, text

    assert norm(a, given_a) == norm(b, given_b), (a.text[:1500], b.text[:1500])


# ---- data sources of a job -----------------------------------------------------------------------


def source_body(path: str) -> dict[str, object]:
    # Queued far in the future: today's code accepts these, and they must not run meanwhile.
    return job_body("steal", [path], start_after=FAR_FUTURE)


@pytest.mark.parametrize("kind", ATTACKS)
async def test_data_source_outside_the_tenants_area_is_refused(api: Api, kind: str) -> None:
    r = await api.submit(source_body(attack_path(api.layout, kind)))
    assert_no_leak(r.text, leak_needles(api), "the answer")
    assert_invalid(r)


async def test_data_source_answer_is_the_same_for_existing_and_missing(api: Api) -> None:
    for existing, missing in oracle_pairs(api.layout):
        a = await api.submit(source_body(existing))
        b = await api.submit(source_body(missing))
        assert a.status_code == 400, (existing, a.text)
        same_answer(a, b, existing, missing)


async def test_scaidrive_uri_of_another_tenant_is_refused(api: Api) -> None:
    """Guard (refused today): scaidrive://globex/… for acme."""
    r = await api.submit(source_body("scaidrive://globex/secret.jsonl"))
    assert r.status_code in (400, 403), r.text
    assert_no_leak(r.text, leak_needles(api), "the answer")


async def test_own_files_are_readable(api: Api) -> None:
    """The allowed cases: the shared root, the tenant's root and its scaidrive:// storage."""
    sources = [
        str(api.layout.corpus),
        api.layout.corpus.as_uri(),
        str(api.layout.private("acme")),
        "scaidrive://acme/secret.jsonl",
    ]
    job = await api.wait_done(await api.submit_ok(job_body("mine", sources)))
    assert job["status"] == "COMPLETED", job
    r = await api.validate([{"path": s} for s in sources])
    assert r.status_code == 200, r.text
    assert r.json()["data"]["valid"] is True, r.text


async def test_a_refusal_names_the_field_and_how_to_allow_a_path(api: Api) -> None:
    """Every surface names its field and the setting that allows a directory (in the message or
    the error's structured details: the gateway hides a message that quotes a server path)."""
    path = str(api.layout.outside / "plain.jsonl")
    attack_path(api.layout, "outside-roots")  # creates the file
    script = api.layout.outside / "script.py"
    script.write_text("print('hi')\n")
    mine = await api.model_job("acme")
    answers = {
        "data_config.sources[0].path": await api.submit(source_body(path)),
        "sources[0].path": await api.validate([{"path": path}]),
        "benchmarks[0].dataset": await evaluation(api, dataset=path),
        "model_uri": await evaluation(api, model_uri=str(api.layout.outside)),
        "training_config.resume_from_checkpoint": await api.submit(
            resume_body(api, str(api.layout.outside))
        ),
        "training_config.framework.custom_script_path": await api.submit(
            job_body("script", [str(api.layout.corpus)], script=script, start_after=FAR_FUTURE)
        ),
        "output_config.output_path": await api.submit(
            job_body(
                "out",
                [str(api.layout.corpus)],
                output_path=str(api.layout.outside / "out"),
                start_after=FAR_FUTURE,
            )
        ),
    }
    assert mine["status"] == "COMPLETED"
    for field_name, r in answers.items():
        assert_refused(r, field_name, "SCAIMIND_LOCAL_DATA_ROOTS")


# ---- /data/validate ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ATTACKS)
async def test_validate_outside_the_tenants_area_is_refused(api: Api, kind: str) -> None:
    """/etc/passwd validated as CSV returned its first line as the column name."""
    r = await api.validate([{"path": attack_path(api.layout, kind), "format": "csv"}])
    assert_no_leak(r.text, leak_needles(api), "the /data/validate answer")
    assert_invalid(r)


async def test_validate_answer_is_the_same_for_existing_and_missing(api: Api) -> None:
    """It reported existence, size and row count of any file, /etc/shadow included."""
    for existing, missing in oracle_pairs(api.layout):
        a = await api.validate([{"path": existing}])
        b = await api.validate([{"path": missing}])
        same_answer(a, b, existing, missing)
        assert a.status_code == 400, (existing, a.text)


# ---- evaluations: benchmark datasets and model_uri -----------------------------------------------


async def evaluation(api: Api, *, dataset: str = "", model_uri: str = "") -> httpx.Response:
    job = await api.model_job("acme")
    body = {
        "job_id": job["job_id"],
        "model_uri": model_uri or job["final_model_uri"],
        "benchmarks": [{"name": "loss", **({"dataset": dataset} if dataset else {})}],
    }
    return await api.request("POST", "/evaluations", json_body=body)


@pytest.mark.parametrize("kind", ATTACKS)
async def test_benchmark_dataset_outside_the_tenants_area_is_refused(api: Api, kind: str) -> None:
    r = await evaluation(api, dataset=attack_path(api.layout, kind))
    assert_no_leak(r.text, leak_needles(api), "the answer")
    assert_invalid(r)


async def test_benchmark_dataset_answer_is_the_same_for_existing_and_missing(api: Api) -> None:
    for existing, missing in oracle_pairs(api.layout):
        a = await evaluation(api, dataset=existing)
        b = await evaluation(api, dataset=missing)
        assert a.status_code == 400, (existing, a.text)
        same_answer(a, b, existing, missing)


async def test_model_uri_of_a_host_directory_is_refused_like_a_missing_one(api: Api) -> None:
    """model_uri=/etc was accepted (and evaluated); a missing path answered 'no model at'."""
    for existing, missing in [("/etc", f"/{MISSING}"), ("file:///etc", f"file:///{MISSING}")]:
        a = await evaluation(api, model_uri=existing)
        b = await evaluation(api, model_uri=missing)
        assert_invalid(a)
        same_answer(a, b, existing, missing)


async def test_model_uri_of_another_tenants_model_is_refused(api: Api) -> None:
    """Guard (refused today): globex's model directory, directly and through a symlink."""
    theirs = api.host_dir_of((await api.model_job("globex"))["job_id"], "model")
    link = _link(api.layout.tenant("acme") / "their-model", theirs)
    for uri in (str(theirs), theirs.as_uri(), str(link)):
        r = await evaluation(api, model_uri=uri)
        assert r.status_code == 400, (uri, r.text)


async def test_evaluating_ones_own_model_works(api: Api) -> None:
    r = await evaluation(api)
    assert r.status_code == 201, r.text


# ---- resume_from_checkpoint ----------------------------------------------------------------------


def resume_body(api: Api, ref: str) -> dict[str, object]:
    return job_body(
        "resume", [str(api.layout.corpus)], resume_from_checkpoint=ref, start_after=FAR_FUTURE
    )


async def test_resume_from_a_host_directory_is_refused_like_a_missing_one(api: Api) -> None:
    """A host directory was accepted as the checkpoint (to be mounted into the job)."""
    pairs = [("/etc", f"/{MISSING}"), ("/usr/share", f"/usr/{MISSING}")]
    for existing, missing in pairs:
        a = await api.submit(resume_body(api, existing))
        b = await api.submit(resume_body(api, missing))
        assert_invalid(a)
        same_answer(a, b, existing, missing)


async def test_resume_from_another_tenants_checkpoint_is_refused(api: Api) -> None:
    """Guard (refused today): globex's checkpoint by id, path and symlink."""
    theirs = await api.model_job("globex")
    ckpt = theirs["checkpoints"][-1]
    directory = api.host_dir_of(theirs["job_id"], "step-*")
    link = _link(api.layout.tenant("acme") / "their-checkpoint", directory)
    for ref in (ckpt["checkpoint_id"], str(directory), str(link)):
        r = await api.submit(resume_body(api, ref))
        assert r.status_code in (400, 404), (ref, r.text)
