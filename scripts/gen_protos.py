"""Regenerate src/scaimind/v1/ from protos/scaimind/v1/*.proto.

Run with the project's virtualenv Python: `python scripts/gen_protos.py`. `--check` regenerates into
a temporary directory and exits 1 when the committed output differs (CI's drift check).
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = Path("scaimind") / "v1"
TARGET = ROOT / "src" / PACKAGE
INIT = '"""Generated from protos/scaimind/v1 by scripts/gen_protos.py. Do not edit."""\n'


def _plugin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install the dev extras (mypy-protobuf)")
    return found


def generate(out_root: Path) -> Path:
    out_dir = out_root / PACKAGE
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_dir / "__init__.py").write_text(INIT)
    return out_dir


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = generate(Path(tmp))
            cmp = filecmp.dircmp(fresh, TARGET, ignore=["__pycache__"])
            drift = cmp.left_only + cmp.right_only + cmp.diff_files
            if drift:
                print(
                    f"generated code is out of date ({', '.join(sorted(drift))}); "
                    "run: python scripts/gen_protos.py"
                )
                return 1
        print("generated code is in sync with protos/")
        return 0
    generate(ROOT / "src")
    print(f"regenerated {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
