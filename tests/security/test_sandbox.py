"""The job sandbox: a CUSTOM job (its script under a root) tries to reach what is not its own.

Each probe script reports what it managed as a SECTEST-RESULT line; where possible the test also
checks on the host (a file that must not appear, a listener that must see no connection).
Denied: the data dir's files, /proc/<parent>/environ and the service's and other jobs' processes,
writing outside its directory, the network. Allowed: its inputs, its checkpoint and output dirs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from tests.security.conftest import (
    SECRET_OF,
    Api,
    assert_no_leak,
    job_body,
    probe_script,
    write_script,
)


async def run_probe(
    api: Api, name: str, body: str, env: dict[str, str], **kwargs: Any
) -> dict[str, Any]:
    """Run a probe script as a CUSTOM job of acme to COMPLETED; its result."""
    script = write_script(api.layout.tenant("acme") / f"{name}.py", probe_script(body))
    job_id = await api.submit_ok(
        job_body(name, [str(api.layout.corpus)], script=script, env=env, **kwargs)
    )
    job = await api.wait_done(job_id)
    assert job["status"] == "COMPLETED", job
    return await api.result(job_id)


def succeeded(result: dict[str, object]) -> dict[str, Any]:
    """The attempts of a probe that worked."""
    return {k: v for k, v in result.items() if isinstance(v, dict) and v.get("ok")}


async def test_job_cannot_read_the_data_dir(api: Api) -> None:
    body = """
data = Path(env['PROBE_DATA_DIR'])
attempt('list the data dir', lambda: sorted(os.listdir(data)))
for name in ('jwt-secret', 'api-secret', 'scaimind.db', 'coordinator/coordinator.db',
             'coordinator/ops.db'):
    attempt('read ' + name, lambda name=name: (data / name).read_bytes()[:80].decode('latin-1'))
readable = []
own = os.path.realpath(os.getcwd())
for top, dirs, files in os.walk(data):
    for f in files:
        if os.path.realpath(os.path.join(top, f)).startswith(own + os.sep):
            continue  # the job's own directory, wherever it is mounted
        try:
            with open(os.path.join(top, f), 'rb') as handle:
                handle.read(1)
            readable.append(os.path.relpath(os.path.join(top, f), data))
        except OSError:
            pass
result['readable'] = readable
"""
    # Another tenant's job directory is in the data dir too.
    await api.model_job("globex")
    result = await run_probe(
        api, "read_data_dir", body, {"PROBE_DATA_DIR": str(api.serve.data_dir)}
    )
    managed = sorted(k for k in succeeded(result) if k != "list the data dir")
    readable = result["readable"]
    assert isinstance(readable, list)
    listing = json.dumps(result["list the data dir"])
    assert managed == [], f"the job could {managed}; it read {len(readable)} files: {readable[:12]}"
    assert readable == [], f"the job read {readable}"
    for name in ("jwt-secret", "api-secret", "scaimind.db"):
        assert name not in listing, f"the job listed the data dir: {listing}"


async def test_job_cannot_read_the_environ_of_the_service_or_other_jobs(api: Api) -> None:
    """/proc/<parent>/environ held the service's secrets; other jobs' /proc their variables."""
    canary = "globex-job-canary-" + secrets.token_hex(6)
    waiter = write_script(
        api.layout.tenant("globex") / "wait.py",
        "import json, os, time\n"
        "m = open(os.environ['SCAIMIND_METRICS_FILE'], 'a')\n"
        "for step in range(1, 1200):\n"
        "    m.write(json.dumps({'step': step, 'loss': 1.0}) + '\\n'); m.flush()\n"
        "    time.sleep(0.05)\n",
    )
    theirs = await api.submit_ok(
        job_body("waiting", [str(api.layout.corpus)], script=waiter, env={"GLOBEX_NOTE": canary}),
        "globex",
    )
    try:
        await api.wait_status(theirs, "TRAINING", tenant="globex")
        body = """
def environ(pid):
    return Path(f'/proc/{pid}/environ').read_bytes().decode('latin-1')
attempt('parent environ', lambda: environ(os.getppid()))
attempt('pid 1 environ', lambda: environ(1))
attempt('service environ', lambda: environ(env['PROBE_SERVE_PID']))
seen = []
for p in Path('/proc').iterdir():
    if p.name.isdigit():
        for part in ('environ', 'cmdline'):
            try:
                seen.append(p.name + ' ' + (p / part).read_bytes().decode('latin-1'))
            except OSError:
                pass
result['processes'] = seen
"""
        result = await run_probe(api, "read_environ", body, {"PROBE_SERVE_PID": str(api.serve.pid)})
    finally:
        await api.request("POST", f"/jobs/{theirs}/cancel", "globex", json_body={})
    needles = {
        **api.serve.secrets_on_disk(),
        "the service's canary variable": api.serve.canary,
        "globex's job variable": canary,
    }
    assert_no_leak(json.dumps(result), needles, "what the job could read under /proc")
    assert not result["service environ"]["ok"], result["service environ"]


async def test_job_cannot_write_outside_its_directory(api: Api) -> None:
    tag = secrets.token_hex(4)
    targets = [
        api.serve.data_dir / f"pwned-{tag}",
        api.serve.data_dir / "coordinator" / f"pwned-{tag}",
        api.layout.tenant("acme") / f"pwned-{tag}",
        api.layout.shared / f"pwned-{tag}",
        api.layout.outside / f"pwned-{tag}",
        Path("/tmp") / f"sectest-pwned-{tag}",
        Path("/var/tmp") / f"sectest-pwned-{tag}",
    ]
    corpus_before = hashlib.sha256(api.layout.corpus.read_bytes()).hexdigest()
    body = """
for target in json.loads(env['PROBE_TARGETS']):
    attempt('write ' + target, lambda target=target: Path(target).write_text('pwned'))
attempt('append to the input', lambda: open(spec['data_files'][0]['path'], 'a').write('pwned'))
attempt('append to the shared corpus', lambda: open(env['PROBE_CORPUS'], 'a').write('pwned'))
attempt('write in its own directory', lambda: Path('own.txt').write_text('mine'))
"""
    env = {
        "PROBE_TARGETS": json.dumps([str(t) for t in targets]),
        "PROBE_CORPUS": str(api.layout.corpus),
    }
    try:
        result = await run_probe(api, "write_outside", body, env)
        written = [str(t) for t in targets if t.exists()]
        assert written == [], f"the job wrote {written}"
        assert hashlib.sha256(api.layout.corpus.read_bytes()).hexdigest() == corpus_before, (
            "the job appended to its (shared) input file"
        )
        assert result["write in its own directory"]["ok"], result
    finally:
        for t in targets:
            t.unlink(missing_ok=True)


async def test_job_has_no_network(api: Api) -> None:
    """A real listener on 127.0.0.1 (and the service's own port) must see no connection."""
    connections: list[bytes] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = """
import socket, urllib.request
def connect(port):
    with socket.create_connection(('127.0.0.1', int(port)), timeout=3) as s:
        s.sendall(b'hello from the job')
        return 'connected'
attempt('listener', lambda: connect(env['PROBE_PORT']))
attempt('service api', lambda: urllib.request.urlopen(env['PROBE_URL'], timeout=3).status)
def udp(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b'x', ('127.0.0.1', int(port)))
attempt('udp', lambda: udp(env['PROBE_PORT']))
"""
    env = {"PROBE_PORT": str(port), "PROBE_URL": f"{api.serve.url}/health"}
    try:
        result = await run_probe(api, "network", body, env)
    finally:
        server.close()
        await server.wait_closed()
    assert connections == [], f"the listener on 127.0.0.1:{port} got {connections}"
    assert not result["service api"]["ok"], result["service api"]
    assert not result["listener"]["ok"], result["listener"]


async def test_job_reads_its_inputs_and_writes_its_outputs(api: Api) -> None:
    """What the sandbox must still allow: inputs, checkpoint dir, output dir, its dir, /tmp."""
    out = api.layout.shared / f"out-{secrets.token_hex(4)}"
    body = """
def rows():
    return [sum(1 for _ in open(f['path'])) for f in spec['data_files']]
attempt('read inputs', rows)
def checkpoint():
    d = Path(env['SCAIMIND_CHECKPOINT_DIR']) / 'step-000001'
    d.mkdir(parents=True, exist_ok=True)
    (d / 'state.json').write_text('{"step": 1}')
    with open(env['SCAIMIND_METRICS_FILE'], 'a') as m:
        m.write(json.dumps({'step': 1, 'loss': 0.5}) + '\\n')
        m.write(json.dumps({'type': 'checkpoint', 'step': 1, 'path': str(d)}) + '\\n')
    return str(d)
attempt('write a checkpoint', checkpoint)
def final_model():
    o = Path(spec['output_path'])
    o.mkdir(parents=True, exist_ok=True)
    (o / 'weights.txt').write_text('trained weights')
    with open(env['SCAIMIND_METRICS_FILE'], 'a') as m:
        m.write(json.dumps({'type': 'final_model', 'path': str(o)}) + '\\n')
    return str(o)
attempt('write the final model', final_model)
attempt('write in its directory', lambda: Path('scratch.txt').write_text('x'))
attempt('write in /tmp', lambda: Path('/tmp/scratch.txt').write_text('x'))
"""
    script = write_script(api.layout.tenant("acme") / "io.py", probe_script(body))
    sources = [
        str(api.layout.corpus),
        str(api.layout.private("acme")),
        "scaidrive://acme/secret.jsonl",
    ]
    job_id = await api.submit_ok(job_body("io", sources, script=script, output_path=str(out)))
    job = await api.wait_done(job_id)
    assert job["status"] == "COMPLETED", job
    result = await api.result(job_id)
    failed = {k: v for k, v in result.items() if not v["ok"]}
    assert failed == {}, failed
    assert all(n > 0 for n in result["read inputs"]["value"]), result["read inputs"]
    assert [c["step"] for c in job["checkpoints"]] == [1], job["checkpoints"]
    assert job["final_model_uri"], job
    assert (out / "weights.txt").read_text() == "trained weights"
    # Its own inputs only: acme's private data is readable to acme, never globex's.
    assert_no_leak(json.dumps(result), {"globex's data": SECRET_OF["globex"]}, "the result")


async def test_job_cannot_read_host_files_beyond_its_inputs(api: Api) -> None:
    """Only the job's resolved inputs are bound: not /etc/shadow, not another tenant's files,
    not a file of a root it did not name, not the service's log."""
    unlisted = api.layout.shared / "not-an-input.jsonl"
    unlisted.write_text(api.layout.corpus.read_text())
    plain = api.layout.outside / "host-file.txt"
    plain.write_text("a host file\n")
    files = {
        "/etc/shadow": "/etc/shadow",
        "globex's private data": str(api.layout.private("globex")),
        "globex's storage": str(api.layout.storage("globex") / "secret.jsonl"),
        "a file of a root it did not name": str(unlisted),
        "a file in no root": str(plain),
        "the service's log": str(api.serve.log_path),
    }
    body = """
for name, path in json.loads(env['PROBE_FILES']).items():
    attempt(name, lambda path=path: Path(path).read_bytes()[:40].decode('latin-1'))
"""
    result = await run_probe(api, "host_files", body, {"PROBE_FILES": json.dumps(files)})
    read = {k: v["value"] for k, v in succeeded(result).items()}
    assert read == {}, f"the job read host files: {read}"
