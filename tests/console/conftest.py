"""The console in a real browser: Debian's Chromium driven by Playwright against `scaimind serve`.

`ConsoleServer` is `scaimind serve` as a child process on its own data dir (the embedded reference
coordinator, real trainer processes); tokens are minted with that data dir's secret exactly as
`scaimind token` does. The browser is Chromium from Debian (`apt-get install chromium`), since
the build Playwright downloads is not reachable here; `.ci/run` installs it. Pages are driven
through what a person sees (roles, labels, text) and waited on with Playwright's `expect`, never
with sleeps. Each test saves screenshots under `.artifacts/console/` (git-ignored).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from scaimind.gateway.db.engine import create_engine
from scaimind.gateway.security.apikeys import ApiKeyStore
from scaimind.gateway.security.auth import embedded_secret, mint_token
from tests.e2e_jobs.conftest import clean_env
from tests.e2e_jobs.test_serve_e2e import free_port, scaimind_command

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts" / "console"
PREFIX = "/v1/modules/scaimind"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TENANT = "tenant-a"
# Generous for a loaded 2-core machine; the waits end as soon as the condition holds.
EXPECT_TIMEOUT_MS = 30_000

expect.set_options(timeout=EXPECT_TIMEOUT_MS)


def write_numbers(path: Path, rows: int = 3000) -> Path:
    """An SFT jsonl corpus big enough that the built-in trainer takes a while per step."""
    rng = random.Random(7)
    with path.open("w") as f:
        for _ in range(rows):
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            f.write(json.dumps({"prompt": f"{a}+{b}=", "completion": str(a + b)}) + "\n")
    return path


class ConsoleServer:
    """`scaimind serve` on a data dir, started (and restarted on the same port) by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.output = root / "serve.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.corpus = write_numbers(root / "numbers.jsonl")
        self.malformed = root / "malformed.jsonl"
        self.malformed.write_text('{"prompt": "1+1=", "completion": "2"}\nnot json\n{"foo": 1}\n')

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.origin}{PREFIX}"

    @property
    def ui(self) -> str:
        return f"{self.api}/ui/"

    def start(self) -> None:
        """Start serve and wait until it is ready."""
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *scaimind_command(),
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=clean_env(
                    SCAIMIND_LOG_LEVEL="WARNING",
                    # Where job data may be read from, once the local-path policy applies.
                    SCAIMIND_LOCAL_DATA_ROOTS=str(self.root),
                ),
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.output.read_text()
            try:
                if httpx.get(f"{self.origin}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready in 30 s"
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (a clean stop: running jobs checkpoint and are re-queued)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def token(self, role: str = "tenant_admin", user: str = "alice", scope: str = "") -> str:
        """A JWT for this server, as `scaimind token` prints it."""
        return mint_token(
            embedded_secret(self.data_dir),
            tenant_id=TENANT,
            user_id=user,
            role=role,
            scope=scope,
            ttl_s=3600,
        )

    def api_key(self, role: str) -> str:
        """An `sgk_` API key in the server's database (the browser cannot read its claims)."""

        async def create() -> str:
            engine = create_engine(f"sqlite+aiosqlite:///{self.data_dir / 'scaimind.db'}")
            try:
                _, key = await ApiKeyStore(engine).create(TENANT, "key-user", role=role)
            finally:
                await engine.dispose()
            return key

        # Playwright's sync API runs an event loop in this thread: the store's gets its own.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, create()).result(timeout=60)

    def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One API call as the admin (or `token`)."""
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        return httpx.request(method, f"{self.api}/{path}", headers=headers, timeout=30, **kwargs)

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.call("GET", f"jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    def submit(self, name: str, **hyper: Any) -> str:
        """POST /jobs with the built-in trainer on the corpus; returns the job id."""
        body = {
            "name": name,
            "training_config": {
                "training_type": "SFT",
                "base_model": {"model_id": "meta-llama/Llama-3-8B"},
                "hyperparameters": {"batch_size": 64, **hyper},
            },
            "data_config": {
                "sources": [{"path": str(self.corpus)}],
                "max_seq_length": 256,
                "validation_split": 0.1,
            },
            "resource_config": {"gpu_count": 1},
            "output_config": {"checkpoint_interval_steps": 20},
        }
        r = self.call("POST", "jobs", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["data"]["job_id"])

    def wait_job(self, job_id: str, *statuses: str, within: float = 60) -> dict[str, Any]:
        """Poll GET /jobs/{id} until the job is in one of `statuses`."""
        deadline = time.monotonic() + within
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            assert time.monotonic() < deadline, f"{job_id} still {job['status']} after {within} s"
            time.sleep(0.1)

    def log_seqs(self, job_id: str, level: str = "INFO") -> list[int]:
        """The seq of every log line of the job at `level`, from the API (follow=false)."""
        r = self.call(
            "GET", f"jobs/{job_id}/logs", params={"follow": "false", "tail": 10000, "level": level}
        )
        assert r.status_code == 200, r.text
        seqs = []
        for block in r.text.split("\n\n"):
            if "event: log" in block:
                data = next(line for line in block.split("\n") if line.startswith("data:"))
                seqs.append(int(json.loads(data[5:])["seq"]))
        return seqs


def start_server(root: Path) -> ConsoleServer:
    root.mkdir(parents=True, exist_ok=True)
    server = ConsoleServer(root)
    server.start()
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """One `scaimind serve` for the tests of a module."""
    s = start_server(tmp_path_factory.mktemp("console"))
    try:
        yield s
    finally:
        s.stop()


# Module scope, not session: while Playwright's sync API is open its event loop counts as
# running in this thread, and pytest-asyncio could not run the async tests that follow.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this)")
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


class Console:
    """A browser tab on the console, with the JavaScript errors it raised and screenshots."""

    def __init__(self, page: Page, server: ConsoleServer, name: str) -> None:
        self.page = page
        self.server = server
        self.name = name
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def sign_in(self, token: str, route: str = "") -> None:
        """Open `route` with the token in the URL fragment, as `scaimind console` prints it."""
        self.page.goto(f"{self.server.ui}{route}#token={token}")
        expect(self.page.get_by_role("navigation", name="Console pages")).to_be_visible()

    def open(self, route: str) -> None:
        self.page.goto(f"{self.server.ui}{route}")

    def shot(self, label: str, full_page: bool = True) -> Path:
        """Save a screenshot as a test artefact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


ConsoleFactory = Callable[..., Console]


@pytest.fixture
def console(browser: Browser, request: pytest.FixtureRequest) -> Iterator[ConsoleFactory]:
    """Opens tabs (1280×900 unless told) on the module's server or `on`; no page may throw."""
    opened: list[tuple[Console, Any]] = []

    def open_console(
        width: int = 1280, height: int = 900, on: ConsoleServer | None = None
    ) -> Console:
        target = on or request.getfixturevalue("server")
        context = browser.new_context(viewport={"width": width, "height": height})
        tab = Console(context.new_page(), target, request.node.name.removeprefix("test_"))
        opened.append((tab, context))
        return tab

    yield open_console
    for tab, context in opened:
        context.close()
        assert not tab.errors, f"JavaScript errors on the page: {tab.errors}"
