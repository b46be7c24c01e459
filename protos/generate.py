"""Generate the Python bindings of the veriscope.v1 API.

Usage: python protos/generate.py OUT_DIR

Writes ``OUT_DIR/veriscope/v1/*_pb2.py``, ``*_pb2_grpc.py`` and their ``.pyi``
stubs with grpcio-tools and the mypy-protobuf plugins. ``make protos`` writes
into ``protos/python/src``; the staleness test writes into a temporary
directory and compares.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
INIT_TEXT = '"""Generated bindings of the veriscope.v1 API. Do not edit: run `make protos`."""\n'


def generate(out_dir: Path) -> None:
    """Generate every binding into out_dir, replacing what was there."""
    pkg_dir = out_dir / "veriscope" / "v1"
    if pkg_dir.exists():
        shutil.rmtree(pkg_dir)
    pkg_dir.mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    wkt_include = str(resources.files("grpc_tools") / "_proto")
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "veriscope" / "v1").glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt_include}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    (pkg_dir / "__init__.py").write_text(INIT_TEXT)
    (pkg_dir / "py.typed").write_text("")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    generate(Path(sys.argv[1]))
