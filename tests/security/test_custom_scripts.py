"""Reproduction 2: CUSTOM scripts from anywhere (`/bin/sh`, the data dir's secret files).

`custom_script_path` must lie under the caller's roots (never in the data dir, although the
`srv/` root of these tests contains it) and be an executable file or a `.py` file.
"""

from __future__ import annotations

import secrets

import pytest

from tests.security.conftest import (
    FAR_FUTURE,
    Api,
    assert_invalid,
    assert_no_leak,
    assert_refused,
    job_body,
    normalised_error,
    run_if_accepted,
    write_script,
)

SCRIPT_FIELD = "training_config.framework.custom_script_path"
HARMLESS = "print('hello')\n"


async def test_bin_sh_as_custom_script_is_refused(api: Api) -> None:
    r = await api.submit(job_body("sh", [str(api.layout.corpus)], script="/bin/sh"))
    assert_refused(r, SCRIPT_FIELD)


@pytest.mark.parametrize("name", ["jwt-secret", "api-secret"])
async def test_data_dir_secret_as_custom_script_is_refused_and_never_shown(
    api: Api, name: str
) -> None:
    """Run with /bin/sh, the secret was the error message; with it a token for any tenant."""
    script = api.serve.data_dir / name
    r = await api.submit(job_body(f"steal-{name}", [str(api.layout.corpus)], script=str(script)))
    job = await run_if_accepted(api, r)
    seen = await api.everything("acme") + "\n".join(api.seen)
    where = f"what tenant acme can read (the job ended {job and job['status']})"
    assert_no_leak(seen, api.serve.secrets_on_disk(), where)
    assert_no_leak(api.serve.log_text(), api.serve.secrets_on_disk(), "the server's log")
    assert_invalid(r)


async def test_script_outside_the_roots_is_refused(api: Api) -> None:
    script = write_script(api.layout.outside / "elsewhere.py", HARMLESS)
    body = job_body("outside", [str(api.layout.corpus)], script=script, start_after=FAR_FUTURE)
    assert_invalid(await api.submit(body))


async def test_script_in_another_tenants_root_is_refused(api: Api) -> None:
    script = write_script(api.layout.tenant("globex") / "theirs.py", HARMLESS)
    body = job_body("theirs", [str(api.layout.corpus)], script=script, start_after=FAR_FUTURE)
    assert_invalid(await api.submit(body))


async def test_a_script_neither_executable_nor_py_is_refused(api: Api) -> None:
    """Today such a file is run with /bin/sh, whatever it is."""
    script = write_script(api.layout.tenant("acme") / "run.sh", "echo hi\n")
    body = job_body("not-exec", [str(api.layout.corpus)], script=script, start_after=FAR_FUTURE)
    assert_invalid(await api.submit(body))


async def test_script_answer_is_the_same_for_existing_and_missing_files(api: Api) -> None:
    """No existence oracle: /etc/passwd and a missing path get one answer."""
    missing = f"/etc/sectest-missing-{secrets.token_hex(4)}.py"
    answers = []
    for path in ("/etc/passwd", missing):
        body = job_body("oracle", [str(api.layout.corpus)], script=path, start_after=FAR_FUTURE)
        r = await api.submit(body)
        answers.append(
            normalised_error(r, path) if r.status_code >= 400 else (r.status_code, r.text)
        )
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 400, answers


async def test_a_script_under_the_tenants_root_runs(api: Api) -> None:
    """The allowed case still works (inside the sandbox)."""
    script = write_script(api.layout.tenant("acme") / "hello.py", "print('hello from acme')\n")
    job = await api.wait_done(
        await api.submit_ok(job_body("ok", [str(api.layout.corpus)], script=script))
    )
    assert job["status"] == "COMPLETED", job
    assert "hello from acme" in await api.log_text(job["job_id"])
