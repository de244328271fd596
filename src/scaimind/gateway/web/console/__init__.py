"""The ScaiMind console: the manifest's five admin pages, served by the module under `/ui/`.

The shell and its assets hold no data and need no token. Every page calls the module's own API
from the browser with the caller's bearer token, so permissions are decided where they always
are. The pages are plain HTML, CSS and ES modules shipped inside the package (no build step);
the charts are uPlot, vendored under `static/assets/vendor/uplot/` with its licence.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from scaimind import __version__
from scaimind.gateway.errors import NotFound
from scaimind.gateway.manifest import MANIFEST, AdminPage
from scaimind.gateway.security.auth import ROLE_PERMISSIONS, RoleGrants, claim_names, role_grants
from scaimind.gateway.security.claims import ClaimNames

UI_PREFIX: Final = "/ui"
# The manifest's page paths are those of the ScaiGrid admin UI (`/scaimind/...`); the console
# serves each page at the same path below its own root (`/scaimind/monitor` → `ui/monitor`).
_MANIFEST_ROOT: Final = "/scaimind"
_STATIC: Final = Path(__file__).parent / "static"

_CONTENT_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE
}

# The pages load only their own scripts and styles and talk only to this origin; a token in
# the session must not be readable by anything injected or framed from elsewhere.
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Assets change with the installed version: revalidate (cheap, by ETag) on every load.
    "Cache-Control": "no-cache",
}


def page_route(page: AdminPage) -> str:
    """The console route of a manifest page, relative to the console root (`""` = the root)."""
    if page.path != _MANIFEST_ROOT and not page.path.startswith(_MANIFEST_ROOT + "/"):
        raise ValueError(f"admin page {page.id} is not under {_MANIFEST_ROOT}: {page.path}")
    return page.path.removeprefix(_MANIFEST_ROOT).strip("/")


def console_url(base_url: str, token: str) -> str:
    """The console URL of a running server, signed in by `token` (carried in the fragment).

    `base_url` is the server (`http://127.0.0.1:8080`) or the module root under it. The token
    travels in the fragment, which browsers never send to a server or write to its logs; the
    page moves it to sessionStorage and clears it from the address bar.
    """
    base = base_url.rstrip("/")
    if not base.endswith(MANIFEST.api_prefix):
        base += MANIFEST.api_prefix
    return f"{base}{UI_PREFIX}/#token={quote(token, safe='')}"


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def _asset_index() -> dict[str, Path]:
    """Every file under static/assets by its URL path: the only files the console serves."""
    root = _STATIC / "assets"
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@functools.cache
def _asset(name: str) -> _Asset:
    path = _asset_index()[name]
    body = path.read_bytes()
    content_type = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    return _Asset(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def _config(grants: RoleGrants, names: ClaimNames) -> str:
    """What every page needs to know, as JSON safe to embed in HTML."""
    config = {
        "version": __version__,
        "pages": [
            {"id": p.id, "title": p.title, "route": page_route(p), "permission": p.permission}
            for p in MANIFEST.admin_pages
        ],
        "permissions": {p.key: p.description for p in MANIFEST.permissions},
        # Lets a page hide the actions a token's role cannot take; the API still decides.
        "roles": {role: sorted(perms) for role, perms in grants.items()},
        # Where the token carries them (SCAIMIND_JWT_*_CLAIM), read as the server reads them.
        "claims": {"tenant": names.tenant, "role": names.role, "scope": names.scope},
    }
    text = json.dumps(config, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.cache
def _shell_template(config: str) -> str:
    return (_STATIC / "index.html").read_text(encoding="utf-8").replace("%CONFIG%", config)


def _page_config(request: Request) -> str:
    """The config of the serving app: its role table and claim names (SCAIMIND_ROLE_PERMISSIONS,
    SCAIMIND_JWT_*_CLAIM); the defaults where the module has no state (a host that never
    entered the lifespan still gets working pages)."""
    state = getattr(request.app.state, "scaimind", None)
    settings = getattr(state, "settings", None)
    if settings is None:
        return _config(ROLE_PERMISSIONS, ClaimNames())
    return _config(role_grants(settings), claim_names(settings))


def _respond(body: bytes, content_type: str, etag: str, request: Request) -> Response:
    headers = {**_SECURITY_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=content_type, headers=headers)


def router() -> APIRouter:
    """The console's routes: one shell per manifest page, and the assets (no auth)."""
    ui = APIRouter(prefix=UI_PREFIX, include_in_schema=False)

    @ui.get("")
    async def console_root(request: Request) -> Response:
        # Relative URLs in the pages resolve against the directory, so it needs the slash.
        return RedirectResponse(request.url.path + "/", status_code=308)

    def add_page(route: str) -> None:
        async def shell(request: Request) -> Response:
            # The root the page's relative links and API calls resolve against, however the
            # host mounted the module.
            path = request.url.path
            base = path[: len(path) - len(route)] if route else path
            template = _shell_template(_page_config(request))
            text = template.replace("%BASE%", html.escape(base, quote=True))
            body = text.encode()
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            return _respond(body, "text/html; charset=utf-8", etag, request)

        ui.add_api_route(f"/{route}", shell, methods=["GET"], name=f"console:{route or 'root'}")

    for page in MANIFEST.admin_pages:
        add_page(page_route(page))

    @ui.get("/assets/{name:path}")
    async def asset(name: str, request: Request) -> Response:
        if name not in _asset_index():
            raise NotFound(f"no such console asset: {name}")
        found = _asset(name)
        return _respond(found.body, found.content_type, found.etag, request)

    return ui


__all__ = ["UI_PREFIX", "console_url", "page_route", "router"]
