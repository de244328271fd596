"""Vendor the Swagger UI and ReDoc files that /docs and /redoc serve (no CDN at run time).

Fetches the pinned npm packages with `npm pack`, checks their SHA-256, and copies the few files
the pages need, with their licences, into src/scaimind/docs_assets/. To update: change a
version, run once with --print-digests, put the new digests here, run again, and commit.

Usage: python scripts/vendor_docs_assets.py [--print-digests]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "src" / "scaimind" / "docs_assets"

# package, version, sha256 of the npm tarball, files taken from it -> target directory
PACKAGES = [
    (
        "swagger-ui-dist",
        "5.35.0",
        "1b8e891893404ea4c3558b6a87e2a3e494e7eedba41168c2ece5800a391a6ea6",
        [
            "LICENSE",
            "NOTICE",
            "swagger-ui-bundle.js",
            "swagger-ui-bundle.js.LICENSE.txt",
            "swagger-ui.css",
            "favicon-32x32.png",
        ],
        "swagger-ui",
    ),
    (
        "redoc",
        "2.5.4",
        "44922df4d0eb45c1b066c09ec251e6bd9bd7ded16bc69e87613337b9d911a56e",
        ["LICENSE", "bundles/redoc.standalone.js", "bundles/redoc.standalone.js.LICENSE.txt"],
        "redoc",
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-digests", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, version, digest, files, directory in PACKAGES:
            out = subprocess.run(
                ["npm", "pack", f"{name}@{version}", "--silent"],
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            )
            tarball = Path(tmp) / out.stdout.strip().splitlines()[-1]
            actual = hashlib.sha256(tarball.read_bytes()).hexdigest()
            if args.print_digests:
                print(f"{name} {version} {actual}")
                continue
            if actual != digest:
                print(f"{name} {version}: sha256 {actual} != {digest}", file=sys.stderr)
                return 1
            target = TARGET / directory
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            with tarfile.open(tarball) as tar:
                for file in files:
                    member = tar.extractfile(f"package/{file}")
                    assert member is not None, file
                    (target / Path(file).name).write_bytes(member.read())
            print(f"{name} {version} -> {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
