"""Reproduction 1: code execution through `training_config.environment` (no CUSTOM job needed).

Each attack is submitted as a tenant would; when today's code accepts it, the job runs to its
end so the test shows what it did (a marker file written by the injected command, the service's
secrets in the job's logs) before it asserts the refusal: 400 INVALID_ARGUMENT naming the
variable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.security.conftest import (
    FAR_FUTURE,
    Api,
    assert_no_leak,
    assert_refused,
    job_body,
    probe_script,
    run_if_accepted,
    write_script,
)

ENV_FIELD = "training_config.environment"


def marker_in(api: Api, name: str) -> Path:
    """A file an injected command would create (in no root, so only the service can write it)."""
    return api.layout.outside / f"{name}-{secrets.token_hex(4)}"


async def assert_nothing_ran(api: Api, marker: Path, job: dict[str, object] | None) -> None:
    """The injected command left no marker, and no secret of the service reached the tenant."""
    if marker.exists():  # noqa: ASYNC240
        raise AssertionError(
            f"the injected command ran as the service's user (job {job and job['status']}): "
            f"{marker} holds {marker.read_text()!r}"  # noqa: ASYNC240
        )
    seen = await api.everything("acme")
    assert_no_leak(seen, api.serve.secrets_on_disk(), "the tenant's job views and logs")


async def test_pythonwarnings_and_browser_run_no_command(api: Api) -> None:
    """PYTHONWARNINGS imports `antigravity`, which opens $BROWSER: a shell as the service."""
    marker = marker_in(api, "browser")
    command = f"id; id > {marker}; cat {api.serve.data_dir / 'api-secret'}"
    env = {"PYTHONWARNINGS": "all:0:antigravity.x:0:0", "BROWSER": f"/bin/sh -c '{command}' #%s"}
    r = await api.submit(job_body("warnings", [str(api.layout.corpus)], env=env))
    await assert_nothing_ran(api, marker, await run_if_accepted(api, r))
    assert_refused(r, ENV_FIELD, any_of=("PYTHONWARNINGS", "BROWSER"))


async def test_pythonpath_sitecustomize_runs_no_code(api: Api) -> None:
    marker = marker_in(api, "sitecustomize")
    hook = api.layout.tenant("acme") / "hook"
    write_script(
        hook / "sitecustomize.py",
        "import os\n"
        f"open({str(marker)!r}, 'w').write('uid %d' % os.getuid())\n"
        f"print('SECRET', open({str(api.serve.data_dir / 'jwt-secret')!r}).read(), flush=True)\n",
    )
    r = await api.submit(
        job_body("pythonpath", [str(api.layout.corpus)], env={"PYTHONPATH": str(hook)})
    )
    await assert_nothing_ran(api, marker, await run_if_accepted(api, r))
    assert_refused(r, ENV_FIELD, "PYTHONPATH")


async def test_bash_env_runs_no_script(api: Api) -> None:
    """BASH_ENV is sourced by every non-interactive bash, e.g. a CUSTOM job's bash script."""
    marker = marker_in(api, "bash-env")
    acme = api.layout.tenant("acme")
    evil = write_script(acme / "evil.sh", f"id > {marker}\n")
    script = write_script(acme / "train.sh", "#!/bin/bash\necho training\n", executable=True)
    r = await api.submit(
        job_body("bash-env", [str(api.layout.corpus)], script=script, env={"BASH_ENV": str(evil)})
    )
    await assert_nothing_ran(api, marker, await run_if_accepted(api, r))
    assert_refused(r, ENV_FIELD, "BASH_ENV")


async def test_ld_preload_loads_no_library(api: Api) -> None:
    marker = marker_in(api, "ld-preload")
    acme = api.layout.tenant("acme")
    library = acme / "libpwn.so"
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is not None:
        source = acme / "pwn.c"
        source.write_text(
            "#include <stdio.h>\n"
            "__attribute__((constructor)) static void pwn(void) {\n"
            f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("preloaded", f); fclose(f); }}\n'
            "}\n"
        )
        cc = await asyncio.create_subprocess_exec(
            compiler, "-shared", "-fPIC", "-o", str(library), str(source)
        )
        assert await asyncio.wait_for(cc.wait(), timeout=60) == 0
    r = await api.submit(
        job_body("ld-preload", [str(api.layout.corpus)], env={"LD_PRELOAD": str(library)})
    )
    await assert_nothing_ran(api, marker, await run_if_accepted(api, r))
    assert_refused(r, ENV_FIELD, "LD_PRELOAD")


@pytest.mark.parametrize(
    "name",
    [
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONINSPECT",
        "ENV",
        "PATH",
        "IFS",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "BASH_FUNC_ls%%",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "RUBYOPT",
        "RUBYLIB",
        "NODE_OPTIONS",
        "NODE_PATH",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "MALLOC_CHECK_",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "SCAIMIND_SPEC_FILE",
        "SCAIMIND_API_SECRET",
    ],
)
async def test_interpreter_and_loader_hooks_are_refused(api: Api, name: str) -> None:
    # Queued far in the future: today's code accepts these and they must not run meanwhile.
    body = job_body(
        f"hook-{name}", [str(api.layout.corpus)], env={name: "/tmp/x"}, start_after=FAR_FUTURE
    )
    r = await api.submit(body)
    assert_refused(r, ENV_FIELD, name)


async def test_an_allowed_variable_reaches_the_job(api: Api) -> None:
    script = write_script(
        api.layout.tenant("acme") / "print_setting.py",
        probe_script("result['MY_SETTING'] = env.get('MY_SETTING')"),
    )
    body = job_body(
        "allowed", [str(api.layout.corpus)], script=script, env={"MY_SETTING": "hello-42"}
    )
    job = await api.wait_done(await api.submit_ok(body))
    assert job["status"] == "COMPLETED", job
    assert (await api.result(job["job_id"]))["MY_SETTING"] == "hello-42"
    assert job["training_config"]["environment"] == {"MY_SETTING": "hello-42"}


async def test_secret_looking_values_reach_the_job_but_no_view(api: Api) -> None:
    """Values of *TOKEN*, *SECRET*, *PASSWORD*, *KEY*, *CREDENTIAL* variables show as ***."""
    values = {
        "HF_TOKEN": "hf-" + secrets.token_hex(8),
        "DB_PASSWORD": "pw-" + secrets.token_hex(8),
        "my_api_key": "key-" + secrets.token_hex(8),
        "AWS_SECRET_ACCESS_KEY": "aws-" + secrets.token_hex(8),
        "GCP_CREDENTIALS": "gcp-" + secrets.token_hex(8),
    }
    script = write_script(
        api.layout.tenant("acme") / "hash_secrets.py",
        probe_script(
            "import hashlib\n"
            f"for name in {sorted(values)!r}:\n"
            "    result[name] = hashlib.sha256(env.get(name, '').encode()).hexdigest()"
        ),
    )
    env = {"PLAIN": "visible", **values}
    job_id = await api.submit_ok(
        job_body("masked", [str(api.layout.corpus)], script=script, env=env)
    )
    job = await api.wait_done(job_id)
    assert job["status"] == "COMPLETED", job
    got = await api.result(job_id)
    for name, value in values.items():
        assert got[name] == hashlib.sha256(value.encode()).hexdigest(), (
            f"{name} did not reach the job"
        )

    masked = {"PLAIN": "visible", **dict.fromkeys(values, "***")}
    assert job["training_config"]["environment"] == masked
    listed = await api.request("GET", "/jobs", params={"page_size": 100})
    (row,) = [j for j in listed.json()["data"]["jobs"] if j["job_id"] == job_id]
    assert row["training_config"]["environment"] == masked
    needles = {f"the value of {k}": v for k, v in values.items()}
    assert_no_leak("\n".join(api.seen), needles, "the responses")

    # The dashboards' cache rows (written in the background after the GETs above).
    db = api.serve.data_dir / "scaimind.db"

    def cached_raw() -> str:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT raw FROM mod_scaimind_jobs WHERE job_id = ?", (job_id,)
            ).fetchall()
        return str(rows[0][0]) if rows else ""

    raw = await wait_for(cached_raw, within=30, interval=0.2)
    assert json.loads(raw)["training_config"]["environment"] == masked
    assert_no_leak(raw, needles, "the job cache row")
