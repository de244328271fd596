"""Reproduction 4: `output_config.output_path` at another tenant's model directory replaced it.

A job writes only into a directory it creates, under the caller's roots (default: the tenant's
own area); the path is claimed at submit, so no other job or tenant can name it later.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from tests.security.conftest import (
    FAR_FUTURE,
    Api,
    assert_invalid,
    job_body,
    run_if_accepted,
)


def snapshot(directory: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `directory`."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


async def test_output_path_at_another_tenants_model_is_refused(api: Api) -> None:
    victim = await api.model_job("globex")
    model_dir = api.host_dir_of(victim["job_id"], "model")
    link = api.layout.tenant("acme") / "their-model-out"
    link.symlink_to(model_dir)
    before = snapshot(model_dir)
    assert before, "globex's model has files"
    answers = []
    for path in (str(model_dir), str(link)):
        r = await api.submit(job_body("overwrite", [str(api.layout.corpus)], output_path=path))
        job = await run_if_accepted(api, r)
        after = snapshot(model_dir) if model_dir.is_dir() else {}
        assert after == before, (
            f"acme's job (output_path {path}, {job and job['status']}) replaced globex's model: "
            f"{sorted(before)} -> {sorted(after)}"
        )
        answers.append(r)
    for r in answers:
        assert_invalid(r)
    # globex's own view still points at a model that is there.
    assert (await api.job(victim["job_id"], "globex"))["final_model_uri"]


@pytest.mark.parametrize("kind", ["existing-own-dir", "outside-roots", "data-dir", "other-drive"])
async def test_output_path_not_created_by_the_job_or_outside_is_refused(
    api: Api, kind: str
) -> None:
    tag = secrets.token_hex(4)
    existing = api.layout.tenant("acme") / f"existing-{tag}"
    existing.mkdir()
    (existing / "keep.txt").write_text("acme's own file")
    path = {
        "existing-own-dir": str(existing),
        "outside-roots": str(api.layout.outside / f"out-{tag}"),
        "data-dir": str(api.serve.data_dir / "coordinator" / f"out-{tag}"),
        "other-drive": f"scaidrive://globex/out-{tag}",
    }[kind]
    r = await api.submit(
        job_body("out", [str(api.layout.corpus)], output_path=path, start_after=FAR_FUTURE)
    )
    assert r.status_code in (400, 403), r.text
    if kind != "other-drive":
        assert_invalid(r)
    assert (existing / "keep.txt").read_text() == "acme's own file"


async def test_output_path_is_claimed_by_the_first_job(api: Api) -> None:
    out = api.layout.shared / f"out-{secrets.token_hex(4)}"
    first = await api.wait_done(
        await api.submit_ok(job_body("first", [str(api.layout.corpus)], output_path=str(out)))
    )
    assert first["status"] == "COMPLETED", first
    written = snapshot(out)
    assert written, "the job wrote its model into its new output_path"
    for tenant in ("acme", "globex"):
        body = job_body("second", [str(api.layout.corpus)], output_path=str(out))
        r = await api.submit(body, tenant)
        job = await run_if_accepted(api, r, tenant)
        assert snapshot(out) == written, (
            f"a later job of {tenant} ({job and job['status']}) overwrote the first job's output"
        )
        assert_invalid(r)
