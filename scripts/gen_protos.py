"""Generate the Python protobuf/gRPC code for protos/ into gen/ (one generated package).

Run by `make protos`; gen/ is git-ignored, so generated code never sits beside hand-written code
and can never go stale in the tree.
"""

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gen"


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *files,
        ]
    )
    for folder in {p.parent for p in OUT.rglob("*_pb2.py")} | {OUT / "chorus"}:
        (folder / "__init__.py").touch()
    return code


if __name__ == "__main__":
    sys.exit(main())
