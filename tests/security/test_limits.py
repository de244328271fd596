"""Per-job limits (processes, memory, file size, open files, run time) and the /data/validate byte
limit, on a server configured with small limits so each is reached quickly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.security.conftest import (
    Api,
    SecureServe,
    assert_refused,
    job_body,
    probe_script,
    start_serve,
    write_script,
)

PROCESSES = 32
MAX_RUNTIME_S = 5
VALIDATE_MAX_BYTES = 4096


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServe]:
    s = start_serve(
        tmp_path_factory.mktemp("limits"),
        SCAIMIND_JOB_PROCESSES=str(PROCESSES),
        SCAIMIND_JOB_MEMORY_MB="1024",
        SCAIMIND_JOB_FILE_SIZE_MB="8",
        SCAIMIND_JOB_OPEN_FILES="64",
        SCAIMIND_JOB_MAX_RUNTIME_S=str(MAX_RUNTIME_S),
        SCAIMIND_VALIDATE_MAX_BYTES=str(VALIDATE_MAX_BYTES),
    )
    try:
        yield s
    finally:
        s.stop()


async def probe(api: Api, name: str, body: str) -> dict[str, Any]:
    script = write_script(api.layout.tenant("acme") / f"{name}.py", probe_script(body))
    job = await api.wait_done(
        await api.submit_ok(job_body(name, [str(api.layout.corpus)], script=script))
    )
    assert job["status"] == "COMPLETED", job
    return await api.result(job["job_id"])


async def test_job_cannot_fork_without_bound(api: Api) -> None:
    """Children wait on a pipe until the script ends; they all exit with it."""
    body = """
import time
r, w = os.pipe()
forked, error = 0, None
for _ in range(300):
    try:
        pid = os.fork()
    except OSError as e:
        error = str(e)
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    forked += 1
os.close(w)
for _ in range(forked):
    os.wait()
result['forked'] = forked
result['error'] = error
"""
    result = await probe(api, "fork", body)
    assert result["error"], f"the job forked {result['forked']} processes without hitting a limit"
    assert isinstance(result["forked"], int)
    assert result["forked"] < 2 * PROCESSES, result


async def test_job_memory_is_limited(api: Api) -> None:
    """2 GiB written for real against a 1 GiB limit, in a child (an rlimit makes it fail with
    MemoryError, a cgroup kills it; either way it does not get the memory)."""
    body = """
import subprocess
child = subprocess.run(
    [sys.executable, '-c', "x = b'x' * (2 << 30); print(len(x))"], capture_output=True, timeout=60
)
result['child'] = {'exit': child.returncode, 'stdout': child.stdout.decode()[-200:]}
"""
    result = await probe(api, "memory", body)
    assert result["child"]["exit"] != 0, f"the job got 2 GiB of memory: {result['child']}"


async def test_job_file_size_is_limited(api: Api) -> None:
    body = (
        "def big():\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        for _ in range(32):\n"
        "            f.write(b'x' * (1 << 20))\n"
        "attempt('write 32 MiB', big)\n"
        "os.remove('big.bin') if os.path.exists('big.bin') else None"
    )
    result = await probe(api, "file_size", body)
    assert not result["write 32 MiB"]["ok"], result


async def test_job_open_files_are_limited(api: Api) -> None:
    body = """
handles = []
try:
    for _ in range(1000):
        handles.append(open('/dev/null'))
except OSError as e:
    result['error'] = str(e)
result['opened'] = len(handles)
"""
    result = await probe(api, "open_files", body)
    assert result.get("error"), f"the job opened {result['opened']} files without a limit"


async def test_max_runtime_beyond_the_operator_maximum_is_refused(api: Api) -> None:
    body = job_body("long", [str(api.layout.corpus)], max_runtime_seconds=MAX_RUNTIME_S * 100)
    assert_refused(await api.submit(body), "resource_config.max_runtime_seconds")


async def test_a_job_without_max_runtime_gets_the_operator_maximum(api: Api) -> None:
    script = write_script(
        api.layout.tenant("acme") / "forever.py",
        "import time\nprint('sleeping', flush=True)\ntime.sleep(45)\n",
    )
    job_id = await api.submit_ok(job_body("forever", [str(api.layout.corpus)], script=script))
    try:
        job = await api.wait_done(job_id, within=30)
    finally:
        await api.request("POST", f"/jobs/{job_id}/cancel", json_body={})
    assert job["status"] == "FAILED", job
    assert job["error"]["code"] == "TIMEOUT", job["error"]


async def test_validate_stops_at_the_byte_limit(api: Api) -> None:
    source = api.layout.tenant("acme") / "long.jsonl"
    source.write_text(api.layout.corpus.read_text() * 10)
    total = sum(1 for line in source.read_text().splitlines() if line.strip())
    assert source.stat().st_size > 10 * VALIDATE_MAX_BYTES
    r = await api.validate([{"path": str(source)}])
    assert r.status_code == 200, r.text
    (result,) = r.json()["data"]["results"]
    assert any(str(VALIDATE_MAX_BYTES) in w for w in result["warnings"]), result["warnings"]
    assert 0 < result["num_rows"] < total, result


HOLDER = r"""
import json, os, time

r, w = os.pipe()
held = 0
for _ in range(int(os.environ['HOLD'])):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    held += 1
with open(os.environ['SCAIMIND_METRICS_FILE'], 'a') as m:
    m.write(json.dumps({'step': 1, 'loss': 1.0}) + '\n')
print(f'holding {held} processes', flush=True)
time.sleep(60)
"""


async def test_another_tenants_processes_do_not_count_against_a_job(api: Api) -> None:
    """The process limit is per job: globex's job holding most of its allowance must not stop
    acme's job from starting a few processes (a limit counted per user id is shared by every
    job running as that user)."""
    holder = write_script(api.layout.tenant("globex") / "holder.py", HOLDER)
    body = job_body(
        "holder", [str(api.layout.corpus)], script=holder, env={"HOLD": str(PROCESSES - 4)}
    )
    theirs = await api.submit_ok(body, "globex")
    try:
        await api.wait_status(theirs, "TRAINING", tenant="globex")

        async def holding() -> str:
            return next(
                (
                    line
                    for line in (await api.log_text(theirs, "globex")).splitlines()
                    if line.startswith("holding")
                ),
                "",
            )

        held = await wait_for(holding, within=30, interval=0.2)
        assert held == f"holding {PROCESSES - 4} processes", held
        probe_body = """
r, w = os.pipe()
forked, error = 0, None
for _ in range(8):
    try:
        pid = os.fork()
    except OSError as e:
        error = str(e)
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    forked += 1
os.close(w)
for _ in range(forked):
    os.wait()
result['forked'] = forked
result['error'] = error
"""
        result = await probe(api, "few_processes", probe_body)
    finally:
        await api.request("POST", f"/jobs/{theirs}/cancel", "globex", json_body={})
    assert result["forked"] == 8, f"acme's job could start only {result['forked']}: {result}"
