"""Generate Python code (messages, aio-capable stubs, typed .pyi) from protos/juki into gen/juki.

One script, used by `make gen`, by setup.py when building the wheel, and by CI. Generated files are
never edited by hand and never committed.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gen"


def _proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "juki").rglob("*.proto"))


def _ensure_init_files(package_root: Path) -> None:
    """Every generated directory becomes a regular package and is marked as typed."""
    for directory in [package_root, *[d for d in package_root.rglob("*") if d.is_dir()]]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from protos/ by scripts/gen_protos.py; do not edit."""\n')
    (package_root / "py.typed").write_text("")


def main() -> int:
    from grpc_tools import protoc  # imported late: only the build needs grpcio-tools

    if (OUT / "juki").exists():
        shutil.rmtree(OUT / "juki")
    OUT.mkdir(exist_ok=True)
    include_grpc_tools = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTOS}",
        f"--proto_path={PROTOS / 'third_party'}",
        f"--proto_path={include_grpc_tools}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--mypy_out=quiet:{OUT}",
        f"--mypy_grpc_out=quiet:{OUT}",
        *_proto_files(),
    ]
    # protoc finds its plugins on PATH: those of the environment running this script come first
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("protoc-gen-mypy") is None:
        print("gen_protos: protoc-gen-mypy not found (install mypy-protobuf)", file=sys.stderr)
        return 2
    code = protoc.main(args)
    if code != 0:
        print(f"gen_protos: protoc failed with exit code {code}", file=sys.stderr)
        return code
    _ensure_init_files(OUT / "juki")
    return 0


if __name__ == "__main__":
    sys.exit(main())
