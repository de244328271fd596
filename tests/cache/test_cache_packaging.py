"""A built wheel carries the migrations, and `scaimind migrate` from it builds the schema."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_installed_wheel_migrates_without_the_source_tree(tmp_path: Path) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", wheels, ROOT], check=True, timeout=600)
    (wheel,) = wheels.glob("scaimind-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, timeout=300)
    assert (site / "scaimind" / "_alembic" / "env.py").is_file()
    # /docs and /redoc are served from the package's own copies (no CDN).
    assets = site / "scaimind" / "gateway" / "web" / "docs_assets"
    for asset in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/LICENSE", "redoc/LICENSE"):
        assert (assets / asset).is_file(), asset
    assert (assets / "redoc" / "redoc.standalone.js").is_file()
    db = tmp_path / "cache.db"
    # The wheel's package comes first on the path (dependencies from this environment), and
    # the command runs away from the checkout, so only the packaged migrations can serve.
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "scaimind.cli", "migrate", "--database-url", f"sqlite:///{db}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import scaimind.gateway.db.migrate as m; print(m.script_location())",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert Path(probe.stdout.strip()) == site / "scaimind" / "_alembic"
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"mod_scaimind_jobs", "mod_scaimind_alembic_version"} <= tables
