"""How the module serves the console: routes from the manifest, assets, headers, and its URL."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from scaimind.gateway.app import create_app, mount_module
from scaimind.gateway.manifest import MANIFEST
from scaimind.gateway.security.auth import ROLE_PERMISSIONS
from scaimind.gateway.web.console import console_url, page_route
from tests.conftest import settings_for

PREFIX = MANIFEST.api_prefix
STATIC = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "scaimind"
    / "gateway"
    / "web"
    / "console"
    / "static"
)
ASSETS = STATIC / "assets"


@pytest.fixture
async def http(tmp_path: Path) -> Any:
    # The console's routes need no lifespan: they serve files and hold no data.
    transport = httpx.ASGITransport(app=create_app(settings_for(tmp_path)))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        yield client


class _Shell(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.base = ""
        self.urls: list[str] = []
        self.config: dict[str, Any] = {}
        self._in_config = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "meta" and a.get("name") == "scaimind-base":
            self.base = a["content"] or ""
        if tag in ("script", "link") and (a.get("src") or a.get("href", "").startswith("/")):
            self.urls.append(str(a.get("src") or a.get("href")))
        self._in_config = tag == "script" and a.get("id") == "scaimind-config"

    def handle_data(self, data: str) -> None:
        if self._in_config:
            self.config = json.loads(data)
            self._in_config = False


def shell_of(text: str) -> _Shell:
    parser = _Shell()
    parser.feed(text)
    return parser


def test_manifest_pages_map_onto_console_routes() -> None:
    routes = {p.id: page_route(p) for p in MANIFEST.admin_pages}
    assert routes == {
        "training-dashboard": "",
        "training-monitor": "monitor",
        "job-creator": "jobs/new",
        "hardware-monitor": "cluster",
        "evaluation-center": "evaluations",
    }


async def test_every_page_serves_the_shell_without_a_token(http: httpx.AsyncClient) -> None:
    for page in MANIFEST.admin_pages:
        r = await http.get(f"{PREFIX}/ui/{page_route(page)}")
        assert r.status_code == 200, (page.id, r.text)
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "default-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        shell = shell_of(r.text)
        assert shell.base == f"{PREFIX}/ui/"
        pages = {p["id"]: p for p in shell.config["pages"]}
        assert pages[page.id]["route"] == page_route(page)
        assert pages[page.id]["permission"] == page.permission
        assert shell.config["roles"] == {k: sorted(v) for k, v in ROLE_PERMISSIONS.items()}
        for url in shell.urls:
            asset = await http.get(url)
            assert asset.status_code == 200, url


async def test_the_root_without_a_slash_redirects(http: httpx.AsyncClient) -> None:
    r = await http.get(f"{PREFIX}/ui")
    assert r.status_code == 308
    assert r.headers["location"] == f"{PREFIX}/ui/"


async def test_assets_have_their_types_and_revalidate_by_etag(http: httpx.AsyncClient) -> None:
    r = await http.get(f"{PREFIX}/ui/assets/app.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    again = await http.get(
        f"{PREFIX}/ui/assets/app.js", headers={"If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    css = await http.get(f"{PREFIX}/ui/assets/vendor/uplot/uPlot.min.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    licence = await http.get(f"{PREFIX}/ui/assets/vendor/uplot/LICENSE")
    assert "MIT License" in licence.text


@pytest.mark.parametrize(
    "path",
    [
        "assets/nope.js",
        "assets/../__init__.py",
        "assets/%2e%2e/__init__.py",
        "assets/..%2f..%2fmanifest.py",
        "assets//etc/passwd",
        "assets/pages",
        "index.html",
        "static/index.html",
        "monitor/extra",
    ],
)
async def test_nothing_outside_the_assets_is_served(http: httpx.AsyncClient, path: str) -> None:
    r = await http.get(f"{PREFIX}/ui/{path}")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "NOT_FOUND"


async def test_every_module_import_resolves_to_a_served_asset(http: httpx.AsyncClient) -> None:
    # A missing or misspelt module would only show in a browser; this catches it cheaply.
    names = re.compile(r"""(?:import|from)\s*(?:\(\s*)?["'](\.{1,2}/[^"']+)["']""")
    modules = {"./pages/" + p.name for p in (ASSETS / "pages").glob("*.js")}
    for source in sorted(ASSETS.rglob("*.js")):
        if "vendor" in source.parts:
            continue
        text = source.read_text(encoding="utf-8")
        for spec in names.findall(text):
            target = (source.parent / spec).resolve().relative_to(ASSETS.resolve()).as_posix()
            r = await http.get(f"{PREFIX}/ui/assets/{target}")
            assert r.status_code == 200, (source.name, spec)
    app_js = (ASSETS / "app.js").read_text(encoding="utf-8")
    assert modules <= set(re.findall(r'"(\./pages/[a-z_]+\.js)"', app_js)) | {
        "./pages/monitor_actions.js"
    }


async def test_a_host_mounting_the_module_elsewhere_gets_pages_under_its_prefix(
    tmp_path: Path,
) -> None:
    app = FastAPI()
    mount_module(app, settings_for(tmp_path), prefix="/admin/mind")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
        r = await client.get("/admin/mind/ui/jobs/new")
        assert r.status_code == 200
        shell = shell_of(r.text)
        assert shell.base == "/admin/mind/ui/"
        assert all(u.startswith("/admin/mind/ui/assets/") for u in shell.urls)
        assert (await client.get("/admin/mind/ui/assets/api.js")).status_code == 200


def test_console_url_carries_the_token_in_the_fragment() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig-_"
    expected = f"http://127.0.0.1:8080{PREFIX}/ui/#token={token}"
    assert console_url("http://127.0.0.1:8080", token) == expected
    assert console_url("http://127.0.0.1:8080/", token) == expected
    assert console_url(f"http://127.0.0.1:8080{PREFIX}", token) == expected
    assert console_url(f"http://127.0.0.1:8080{PREFIX}/", token) == expected
    # Anything but URL-safe characters is escaped, so the fragment holds the token only.
    assert console_url("https://h", "a b&c#d").endswith("#token=a%20b%26c%23d")


def test_the_vendored_chart_library_is_the_noted_version() -> None:
    vendor = ASSETS / "vendor" / "uplot"
    assert "(v1.6.32)" in (vendor / "uPlot.esm.js").read_text(encoding="utf-8")[:400]
    assert "uPlot 1.6.32" in (vendor / "README.md").read_text(encoding="utf-8")
    assert "MIT License" in (vendor / "LICENSE").read_text(encoding="utf-8")
    assert "uPlot 1.6.32" in (STATIC / "index.html").read_text(encoding="utf-8")
