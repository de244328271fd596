"""A built wheel carries the console, and an install from it serves the pages."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "scaimind" / "gateway" / "web" / "console" / "static"


def test_the_wheel_ships_every_console_file_and_serves_them(tmp_path: Path) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", wheels, ROOT], check=True, timeout=600)
    (wheel,) = wheels.glob("scaimind-*.whl")
    expected = {
        "scaimind/gateway/web/console/static/" + p.relative_to(STATIC).as_posix()
        for p in STATIC.rglob("*")
        if p.is_file()
    }
    assert "scaimind/gateway/web/console/static/assets/vendor/uplot/LICENSE" in expected
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert expected <= names, sorted(expected - names)

    # Installed apart from the checkout, the module finds and serves its own copy.
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, timeout=300)
    probe = """
import httpx, asyncio
from scaimind.gateway.app import create_app
from scaimind.settings import Settings
import scaimind.gateway.web.console as ui
async def main():
    app = create_app(Settings(data_dir="data", jwt_secret="x" * 40, api_secret="s"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
        for path in ("ui/monitor", "ui/assets/app.js", "ui/assets/vendor/uplot/uPlot.esm.js"):
            r = await c.get("/v1/modules/scaimind/" + path)
            assert r.status_code == 200, (path, r.status_code)
    print(ui.__file__)
asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        Path(done.stdout.strip())
        == site / "scaimind" / "gateway" / "web" / "console" / "__init__.py"
    )
