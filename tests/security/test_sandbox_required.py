"""CUSTOM jobs need the sandbox: refused (409 FAILED_PRECONDITION) when bubblewrap is unusable,
unless the operator opts out with SCAIMIND_ALLOW_UNSANDBOXED_JOBS=true."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.conftest import (
    SecureServe,
    assert_refused,
    error_of,
    job_body,
    open_api,
    start_serve,
    write_script,
)

MISSING_BWRAP = "/nonexistent/sectest/bwrap"


@pytest.fixture(scope="module")
def no_bwrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServe]:
    s = start_serve(tmp_path_factory.mktemp("nobwrap"), SCAIMIND_BWRAP=MISSING_BWRAP)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def opted_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServe]:
    s = start_serve(
        tmp_path_factory.mktemp("optout"),
        SCAIMIND_BWRAP=MISSING_BWRAP,
        SCAIMIND_ALLOW_UNSANDBOXED_JOBS="true",
    )
    try:
        yield s
    finally:
        s.stop()


def hello(serve: SecureServe) -> Path:
    return write_script(serve.layout.tenant("acme") / "hello.py", "print('hello from acme')\n")


async def test_custom_job_is_refused_without_a_usable_sandbox(no_bwrap: SecureServe) -> None:
    async with open_api(no_bwrap) as api:
        r = await api.submit(job_body("custom", [str(api.layout.corpus)], script=hello(no_bwrap)))
        assert r.status_code == 409, r.text
        err = error_of(r)
        assert err["code"] == "FAILED_PRECONDITION", err
        # The message says how to fix it: install bubblewrap, or opt out on a single-user box.
        text = err["message"] + str(err.get("details") or "")
        assert "bubblewrap" in text or "bwrap" in text, err
        assert "SCAIMIND_ALLOW_UNSANDBOXED_JOBS" in text, err


async def test_builtin_trainer_still_runs_without_a_sandbox(no_bwrap: SecureServe) -> None:
    async with open_api(no_bwrap) as api:
        job = await api.completed_job()
        assert job["status"] == "COMPLETED"


async def test_custom_job_is_accepted_when_the_operator_opts_out(opted_out: SecureServe) -> None:
    async with open_api(opted_out) as api:
        body = job_body("custom", [str(api.layout.corpus)], script=hello(opted_out))
        job = await api.wait_done(await api.submit_ok(body))
        assert job["status"] == "COMPLETED", job
        assert "hello from acme" in await api.log_text(job["job_id"])


async def test_opting_out_keeps_the_path_policy(opted_out: SecureServe) -> None:
    """Without a sandbox the script still has to be under the roots."""
    async with open_api(opted_out) as api:
        r = await api.submit(job_body("sh", [str(api.layout.corpus)], script="/bin/sh"))
        assert_refused(r, "training_config.framework.custom_script_path")
