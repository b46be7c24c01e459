"""The committed Python bindings must match the .proto files."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "protos" / "python" / "src" / "veriscope" / "v1"


def test_generated_bindings_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)], check=True)
    fresh = tmp_path / "veriscope" / "v1"
    cmp = filecmp.dircmp(fresh, COMMITTED, ignore=["__pycache__"])
    stale = cmp.diff_files + cmp.left_only + cmp.right_only
    assert not stale, f"generated bindings are stale, run `make protos`: {sorted(stale)}"
    # dircmp compares shallowly by stat; compare bytes to be sure.
    for path in sorted(fresh.iterdir()):
        assert path.read_bytes() == (COMMITTED / path.name).read_bytes(), f"{path.name} is stale, run `make protos`"


def test_every_service_has_its_own_file() -> None:
    protos = sorted(p.name for p in (ROOT / "protos" / "veriscope" / "v1").glob("*_service.proto"))
    assert protos == [
        "calibration_service.proto",
        "capture_service.proto",
        "device_service.proto",
        "model_service.proto",
        "provisioning_service.proto",
        "scan_service.proto",
        "simulation_service.proto",
        "update_service.proto",
    ]
    from veriscope.v1 import scan_service_pb2

    assert scan_service_pb2.DESCRIPTOR.package == "veriscope.v1"


def test_every_list_method_pages() -> None:
    import importlib

    lists = []
    for path in sorted(COMMITTED.glob("*_service_pb2.py")):
        module = importlib.import_module(f"veriscope.v1.{path.stem}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.name.startswith("List"):
                    lists.append(method.full_name)
                    assert {"page_size", "page_token"} <= set(method.input_type.fields_by_name), method.full_name
                    assert "next_page_token" in method.output_type.fields_by_name, method.full_name
    assert {"veriscope.v1.ScanService.ListScans", "veriscope.v1.ModelService.ListModels"} <= set(lists)
