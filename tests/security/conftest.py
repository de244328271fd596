"""Attack regression tests (issue 10): a real `scaimind serve`, two tenants, real job processes.

Every test here plays a tenant trying to reach something that is not its own: host files, the
service's data dir and secrets, another tenant's data, models and processes, the network. The
server is `scaimind serve` as a subprocess on a free port with its own data dir and SCAIMIND_*
environment (one shared by the modules of this package that do not need other settings, see
`serve`); the two tenants, `acme` and `globex`, hold tokens minted by `scaimind token`. Jobs are
real processes (the built-in trainer, or CUSTOM scripts that report what they could reach as a
`SECTEST-RESULT {json}` stdout line).

Layout of a server's directory (the `Layout`):

    shared/                 a root of every tenant (SCAIMIND_LOCAL_DATA_ROOTS)
    tenants/<tenant>/       the tenant's own root ({tenant} in the setting)
    srv/                    a root too, and it CONTAINS the data dir: the data dir must stay
    srv/data/               unreachable even through a root that contains it
    outside/                in no root at all

A tenant's files carry a marker (`SECRET_OF[tenant]`) so any leak of them is found by text.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e_jobs.conftest import PREFIX, TERMINAL, clean_env, parse_sse
from tests.e2e_jobs.test_serve_e2e import free_port, scaimind_command
from tests.e2e_ops.conftest import make_ops  # noqa: F401  (fixture: a coordinator + gateway)
from tests.trainer.conftest import write_corpus

TENANTS = ("acme", "globex")
FAR_FUTURE = "2099-01-01T00:00:00Z"
# A line a probe script prints with what it could reach.
RESULT_PREFIX = "SECTEST-RESULT "
# Marker content of each tenant's private files; finding it anywhere else is a leak.
SECRET_OF = {t: f"{t}-private-{secrets.token_hex(6)}" for t in TENANTS}
# What a response, a view or a log line must never contain (besides the data dir path).
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "site-packages", "src/scaimind")


def poll(predicate: Callable[[], Any], *, within: float, interval: float = 0.1) -> Any:
    """Synchronous twin of tests.conftest.wait_for (module fixtures run outside the loop)."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


@dataclass(frozen=True)
class Layout:
    """The directories of one server (see the module docstring)."""

    root: Path

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    def tenant(self, tenant: str) -> Path:
        return self.root / "tenants" / tenant

    @property
    def srv(self) -> Path:
        return self.root / "srv"

    @property
    def data_dir(self) -> Path:
        return self.srv / "data"

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def corpus(self) -> Path:
        """A small prompt/completion corpus every tenant may read."""
        return self.shared / "corpus.jsonl"

    def private(self, tenant: str) -> Path:
        """A data file only `tenant` may read, holding SECRET_OF[tenant]."""
        return self.tenant(tenant) / "private.jsonl"

    def storage(self, tenant: str) -> Path:
        """The tenant's storage area on disk (scaidrive://<tenant>/… maps here)."""
        return self.data_dir / "coordinator" / "storage" / tenant

    @property
    def roots_setting(self) -> str:
        return f"{self.shared}:{self.root / 'tenants'}/{{tenant}}:{self.srv}"

    def create(self) -> Layout:
        for d in (self.shared, self.srv, self.outside, *map(self.tenant, TENANTS)):
            d.mkdir(parents=True, exist_ok=True)
        write_corpus(self.corpus, records=60)
        for t in TENANTS:
            record = {"prompt": "what is the secret?", "completion": SECRET_OF[t]}
            self.private(t).write_text((json.dumps(record) + "\n") * 20)
            storage = self.storage(t)
            storage.mkdir(parents=True, exist_ok=True)
            (storage / "secret.jsonl").write_text((json.dumps(record) + "\n") * 20)
        return self


class SecureServe:
    """`scaimind serve` as a subprocess with its own data dir and SCAIMIND_* environment."""

    def __init__(self, layout: Layout, env: Mapping[str, str] | None = None) -> None:
        self.layout = layout
        self.data_dir = layout.data_dir
        self.log_path = layout.root / f"serve-{time.monotonic_ns()}.log"
        # Variables the service holds that no job may see: a secret setting and a canary.
        self.signing_key = "sectest-signing-key-" + secrets.token_hex(16)
        self.canary = "sectest-serve-canary-" + secrets.token_hex(8)
        self.env = clean_env(
            SCAIMIND_LOG_LEVEL="INFO",
            SCAIMIND_LOCAL_DATA_ROOTS=layout.roots_setting,
            SCAIMIND_TOKEN_SIGNING_KEY=self.signing_key,
            SCAIMIND_DATABASE_URL=f"sqlite+aiosqlite:///{self.data_dir / 'scaimind.db'}",
            # Real processes on a shared, loaded machine: roomy coordinator deadlines.
            SCAIMIND_GRPC_TIMEOUT_S="60",
            SECTEST_SERVE_CANARY=self.canary,
            PGPASSWORD="sectest-pg-password-" + secrets.token_hex(4),
            **(env or {}),
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        # Things tests of one module share (e.g. a tenant's completed job), keyed by name.
        self.memo: dict[str, Any] = {}
        self._tokens: dict[tuple[str, str], str] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, within: float = 60) -> SecureServe:
        port = free_port()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *scaimind_command(),
                    "serve",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self.env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        self.url = f"http://127.0.0.1:{port}"
        proc = self.proc

        def ready() -> bool:
            assert proc.poll() is None, self.log_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        poll(ready, within=within)
        for tenant in TENANTS:
            self.token(tenant)
        return self

    def stop(self, within: float = 30) -> int | None:
        """SIGTERM, then SIGKILL when it does not exit in time; the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def token(self, tenant: str, role: str = "tenant_admin") -> str:
        """A bearer token from `scaimind token` for this data dir."""
        key = (tenant, role)
        if key not in self._tokens:
            result = subprocess.run(
                [
                    *scaimind_command(),
                    "token",
                    "--data-dir",
                    str(self.data_dir),
                    "--tenant",
                    tenant,
                    "--user",
                    f"{tenant}-user",
                    "--role",
                    role,
                ],
                env=clean_env(),
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            self._tokens[key] = result.stdout.strip()
        return self._tokens[key]

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant)}"}

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def secrets_on_disk(self) -> dict[str, str]:
        """Every secret file of the data dir (name -> content) and the secret settings."""
        found = {
            p.name: p.read_text().strip()
            for p in self.data_dir.iterdir()
            if p.is_file() and "secret" in p.name
        }
        found["SCAIMIND_TOKEN_SIGNING_KEY"] = self.signing_key
        return found


def start_serve(root: Path, **env: str) -> SecureServe:
    """A new layout under root and a serve on it, ready (the caller stops it)."""
    return SecureServe(Layout(root).create(), env).start()


@pytest.fixture(scope="package")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServe]:
    """The server with the default settings, shared by the modules that do not override it
    (each test makes its own files, with unique names where they could collide)."""
    s = start_serve(tmp_path_factory.mktemp("sec"))
    try:
        yield s
    finally:
        s.stop()


# ---- request bodies ------------------------------------------------------------------------------


def job_body(
    name: str,
    sources: list[str],
    *,
    max_steps: int = 5,
    script: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    start_after: str | None = None,
    output_path: str | None = None,
    resume_from_checkpoint: str | None = None,
    queue_name: str | None = None,
    checkpoint_interval_steps: int | None = None,
    keep_last_checkpoints: int | None = None,
    max_runtime_seconds: int | None = None,
) -> dict[str, Any]:
    """A POST /jobs body: the built-in trainer, or the CUSTOM `script` when given."""
    tc: dict[str, Any] = {
        "training_type": "SFT",
        "base_model": {"model_id": "meta-llama/Llama-3-8B"},
        "hyperparameters": {"max_steps": max_steps},
        "environment": dict(env or {}),
    }
    if script is not None:
        tc["framework"] = {"type": "CUSTOM", "custom_script_path": str(script)}
    if resume_from_checkpoint is not None:
        tc["resume_from_checkpoint"] = resume_from_checkpoint
    body: dict[str, Any] = {
        "name": name,
        "training_config": tc,
        "data_config": {"sources": [{"path": s} for s in sources]},
        "resource_config": {"gpu_count": 1, "gpu_type": "CPU"},
        "scheduling_config": {},
        "output_config": {},
    }
    if max_runtime_seconds is not None:
        body["resource_config"]["max_runtime_seconds"] = max_runtime_seconds
    if start_after is not None:
        body["scheduling_config"]["start_after"] = start_after
    if queue_name is not None:
        body["scheduling_config"]["queue_name"] = queue_name
    if output_path is not None:
        body["output_config"]["output_path"] = output_path
    if checkpoint_interval_steps is not None:
        body["output_config"]["checkpoint_interval_steps"] = checkpoint_interval_steps
    if keep_last_checkpoints is not None:
        body["output_config"]["keep_last_checkpoints"] = keep_last_checkpoints
    return body


def write_script(path: Path, text: str, *, executable: bool = False) -> Path:
    """A CUSTOM script file (a .py runs with the coordinator's Python)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755 if executable else 0o644)
    return path


# ---- assertions ----------------------------------------------------------------------------------


def error_of(r: httpx.Response) -> dict[str, Any]:
    """The envelope's `error` object (asserting the envelope)."""
    body = r.json()
    assert body.get("status") == "error", r.text
    return body["error"]  # type: ignore[no-any-return]


def assert_refused(
    r: httpx.Response,
    field_name: str,
    *also: str,
    any_of: tuple[str, ...] = (),
    status: int = 400,
) -> None:
    """A refusal: `status` (400: INVALID_ARGUMENT) naming the field, each of `also` and at least
    one of `any_of`.

    Names may be in `error.message` or in `error.details` (the gateway's sanitiser replaces a
    message that quotes a server path; structured details carry the field then).
    """
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:2000]}"
    err = error_of(r)
    if status == 400:
        assert err["code"] == "INVALID_ARGUMENT", err
    named = err.get("message", "") + " " + json.dumps(err.get("details") or [])
    for needle in (field_name, *also):
        assert needle in named, f"{needle!r} not named in {err}"
    if any_of:
        assert any(n in named for n in any_of), f"none of {any_of} named in {err}"


def assert_invalid(r: httpx.Response) -> None:
    """400 INVALID_ARGUMENT (which field it names is checked by the tests of the message)."""
    assert r.status_code == 400, f"expected 400, got {r.status_code}: {r.text[:2000]}"
    assert error_of(r)["code"] == "INVALID_ARGUMENT", r.text


async def run_if_accepted(
    api: Api, r: httpx.Response, tenant: str = "acme", within: float = 90
) -> dict[str, Any] | None:
    """A submission the test expects refused but that was accepted (the bug) runs to its end,
    so the test can show what it did; its final view, or None when refused."""
    if r.status_code != 201:
        return None
    return await api.wait_done(str(r.json()["data"]["job_id"]), tenant, within=within)


def normalised_error(r: httpx.Response, *given: str) -> tuple[int, str]:
    """Status and error (without request ids) with the caller-given strings replaced."""
    err = dict(error_of(r))
    text = json.dumps(err, sort_keys=True)
    for g in sorted(given, key=len, reverse=True):
        text = text.replace(g, "<GIVEN>")
    return r.status_code, text


def assert_no_leak(text: str, needles: Mapping[str, str], where: str) -> None:
    """None of the needles (label -> secret text) occurs in `text`."""
    for label, needle in needles.items():
        if needle and needle in text:
            at = text.index(needle)
            excerpt = text[max(0, at - 300) : at + len(needle) + 100].replace(needle, f"<{label}>")
            raise AssertionError(f"{label} leaked in {where}: …{excerpt}…")


def assert_clean_text(text: str, data_dir: Path, where: str, *, logs: bool = False) -> None:
    """No server data dir path and no Python traceback in `text`.

    Log lines may keep our trainer's traceback (`logs=True`), but without server paths.
    """
    markers = [str(data_dir), str(data_dir.resolve()), *TRACEBACK_MARKERS]
    if logs:
        markers.remove("Traceback (most recent call last)")
    for marker in markers:
        if marker in text:
            at = text.index(marker)
            excerpt = text[max(0, at - 300) : at + 200]
            raise AssertionError(f"{marker!r} is shown in {where}: …{excerpt}…")


# ---- the HTTP API --------------------------------------------------------------------------------


@dataclass
class Api:
    """An HTTP client of a SecureServe, acting as one tenant or the other."""

    http: httpx.AsyncClient
    serve: SecureServe
    seen: list[str] = field(default_factory=list, repr=False)  # every response body (leak scans)

    @property
    def layout(self) -> Layout:
        return self.serve.layout

    async def request(
        self,
        method: str,
        path: str,
        tenant: str = "acme",
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        r = await self.http.request(
            method,
            PREFIX + path,
            json=json_body,
            params=params,
            headers={**self.serve.headers(tenant), **(headers or {})},
        )
        self.seen.append(r.text)
        return r

    async def submit(
        self, body: dict[str, Any], tenant: str = "acme", **headers: str
    ) -> httpx.Response:
        return await self.request("POST", "/jobs", tenant, json_body=body, headers=headers)

    async def submit_ok(self, body: dict[str, Any], tenant: str = "acme") -> str:
        r = await self.submit(body, tenant)
        assert r.status_code == 201, r.text
        return str(r.json()["data"]["job_id"])

    async def job(self, job_id: str, tenant: str = "acme") -> dict[str, Any]:
        r = await self.request("GET", f"/jobs/{job_id}", tenant)
        assert r.status_code == 200, r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    async def wait_done(
        self, job_id: str, tenant: str = "acme", within: float = 90
    ) -> dict[str, Any]:
        """Poll the job until it is COMPLETED, FAILED or CANCELLED (with a deadline)."""
        deadline = time.monotonic() + within
        while True:
            job = await self.job(job_id, tenant)
            if job["status"] in TERMINAL:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}: {job}"
            await _pause()

    async def wait_status(
        self, job_id: str, *statuses: str, tenant: str = "acme", within: float = 90
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            job = await self.job(job_id, tenant)
            if job["status"] in statuses:
                return job
            assert job["status"] not in TERMINAL, job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            await _pause()

    async def logs(self, job_id: str, tenant: str = "acme") -> list[dict[str, Any]]:
        """Every log entry of a job."""
        r = await self.request(
            "GET",
            f"/jobs/{job_id}/logs",
            tenant,
            params={"follow": "false", "tail": 10_000, "level": "DEBUG"},
        )
        assert r.status_code == 200, r.text
        return [json.loads(d) for e, d in parse_sse(r.text) if e == "log"]

    async def log_text(self, job_id: str, tenant: str = "acme") -> str:
        return "\n".join(e["message"] for e in await self.logs(job_id, tenant))

    async def result(self, job_id: str, tenant: str = "acme") -> dict[str, Any]:
        """The SECTEST-RESULT a probe script printed."""
        for e in await self.logs(job_id, tenant):
            if e["message"].startswith(RESULT_PREFIX):
                return json.loads(e["message"][len(RESULT_PREFIX) :])  # type: ignore[no-any-return]
        job = await self.job(job_id, tenant)
        raise AssertionError(f"job {job_id} printed no result: {job['status']} {job['error']}")

    async def validate(
        self, sources: list[dict[str, Any]], tenant: str = "acme", **extra: Any
    ) -> httpx.Response:
        body = {"sources": sources, "training_type": "SFT", **extra}
        return await self.request("POST", "/data/validate", tenant, json_body=body)

    async def completed_job(self, tenant: str = "acme", **kwargs: Any) -> dict[str, Any]:
        """A fresh built-in job of `tenant` on the shared corpus, run to COMPLETED."""
        body = job_body(f"{tenant}-model", [str(self.layout.corpus)], **kwargs)
        job = await self.wait_done(await self.submit_ok(body, tenant), tenant)
        assert job["status"] == "COMPLETED", job
        return job

    async def model_job(self, tenant: str) -> dict[str, Any]:
        """The tenant's completed built-in job with checkpoints (made once per server)."""
        key = f"model-job-{tenant}"
        if key not in self.serve.memo:
            self.serve.memo[key] = await self.completed_job(
                tenant, max_steps=10, checkpoint_interval_steps=5
            )
        return await self.job(self.serve.memo[key]["job_id"], tenant)

    def host_dir_of(self, job_id: str, name: str) -> Path:
        """Where a job's `model` or `checkpoints/step-…` directory is on the server's disk."""
        found = sorted(
            p
            for p in self.serve.data_dir.rglob(name)
            if p.is_dir() and job_id in p.relative_to(self.serve.data_dir).parts
        )
        assert found, f"no {name} of {job_id} under the data dir"
        return found[-1]

    async def views_and_logs(self, tenant: str) -> tuple[str, str]:
        """All a tenant can read: job views, list, evaluations, queue, data cache; job logs."""
        views: list[str] = []
        logs: list[str] = []
        jobs: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"page_size": 100, "page_token": token}
            r = await self.request("GET", "/jobs", tenant, params=params)
            views.append(r.text)
            jobs.extend(r.json()["data"]["jobs"])
            token = r.json()["data"]["next_page_token"]
            if not token:
                break
        for job in jobs:
            views.append((await self.request("GET", f"/jobs/{job['job_id']}", tenant)).text)
            params = {"follow": "false", "tail": 10_000, "level": "DEBUG"}
            path = f"/jobs/{job['job_id']}/logs"
            logs.append((await self.request("GET", path, tenant, params=params)).text)
        r = await self.request("GET", "/evaluations", tenant)
        views.append(r.text)
        for ev in r.json()["data"].get("evaluations", []):
            path = f"/evaluations/{ev['evaluation_id']}"
            views.append((await self.request("GET", path, tenant)).text)
        views.append((await self.request("GET", "/queue", tenant)).text)
        views.append((await self.request("GET", "/data/cache", tenant)).text)
        return "\n".join(views), "\n".join(logs)

    async def everything(self, tenant: str) -> str:
        """Views and logs of a tenant as one text (for leak scans)."""
        return "\n".join(await self.views_and_logs(tenant))


async def _pause() -> None:
    # The polling interval of the status loops (each loop has a deadline; not a synchronisation).
    await asyncio.sleep(0.1)


@asynccontextmanager
async def open_api(serve: SecureServe, http_timeout_s: float = 120) -> AsyncIterator[Api]:
    """An HTTP client of a server."""
    async with httpx.AsyncClient(base_url=serve.url, timeout=http_timeout_s) as http:
        yield Api(http, serve)


@pytest.fixture
async def api(serve: SecureServe) -> AsyncIterator[Api]:
    """An HTTP client of the module's server."""
    async with open_api(serve) as client:
        yield client


def probe_script(body: str) -> str:
    """A CUSTOM script: the contract's files at hand, `body` fills `result`, printed at exit."""
    return (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "result = {}\n"
        "env = os.environ\n"
        "spec = json.loads(Path(env['SCAIMIND_SPEC_FILE']).read_text())\n"
        "def attempt(name, fn):\n"
        "    try:\n"
        "        result[name] = {'ok': True, 'value': fn()}\n"
        "    except BaseException as e:\n"
        "        result[name] = {'ok': False, 'error': type(e).__name__ + ': ' + str(e)[:200]}\n"
        f"{body}\n"
        f"print({RESULT_PREFIX!r} + json.dumps(result, default=str), flush=True)\n"
    )


def host_env_of(pid: int) -> dict[str, str]:
    """The environment of a process on this machine."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def mode(path: Path) -> str:
    return oct(os.stat(path, follow_symlinks=False).st_mode & 0o777)
