"""Generate the Python modules of the gRPC APIs from their .proto files (committed; a test checks
that they match): ``.venv/bin/python infra/grpc_api/generate.py [OUT_DIR]``.

The protos are compiled from the repository root, so the generated modules import each other as
``infra.grpc_api.*`` (grpcio-tools, the version pinned in pyproject.toml's dev extra).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ("infra/grpc_api/inference.proto", "infra/grpc_api/mlfn.proto")


def generate(out: Path) -> list[Path]:
    """Write the modules under ``out`` (laid out as the repository) and return their paths."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    for proto in PROTOS:
        code = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"-I{include}",
                            f"--python_out={out}", f"--pyi_out={out}",
                            f"--grpc_python_out={out}", str(ROOT / proto)])
        if code != 0:
            raise SystemExit(f"protoc failed on {proto}")
    return sorted((out / "infra" / "grpc_api").glob("*_pb2*.py*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(target):
        print(path.relative_to(target))
