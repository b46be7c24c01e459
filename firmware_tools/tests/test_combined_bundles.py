"""``veriscope-tool bundle build --kind combined``: part bundles composed into one signed bundle, and verify and
inspect listing its parts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from veriscope.tools import bundles

TOOL = str(Path(sys.executable).parent / "veriscope-tool")
DEMO = Path(__file__).resolve().parents[2] / "models" / "bundles" / "veriscope-demo"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parts")
    key, pub = bundles.generate_keys(root / "keys")
    other, _ = bundles.generate_keys(root / "other")
    signer = bundles.load_signing_key(key)
    sw = root / "sw"
    (sw / "wheels").mkdir(parents=True)
    (sw / "wheels" / "veriscope_device-0.2.0-py3-none-any.whl").write_bytes(b"wheel")
    (sw / "software.json").write_text('{"version": "0.2.0"}')
    bundles.build_bundle(DEMO, root / "model.vsb", kind="model", version="0.3.0", signing_key=signer)
    bundles.build_bundle(sw, root / "sw.vsb", kind="device-software", version="0.2.0", signing_key=signer)
    bundles.build_bundle(
        DEMO, root / "foreign.vsb", kind="model", version="0.3.0", signing_key=bundles.load_signing_key(other)
    )
    return {"key": key, "pub": pub, "model": root / "model.vsb", "sw": root / "sw.vsb", "foreign": root / "foreign.vsb"}


def test_build_composes_parts_and_verify_and_inspect_list_them(parts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "release.vsb"
    done = run(
        "bundle", "build", "--kind", "combined", "--part", str(parts["sw"]), "--part", str(parts["model"]),
        "--version", "1.0.0", "--sign-key", str(parts["key"]), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "part model:" in done.stdout and "part device-software:" in done.stdout
    manifest = bundles.inspect_bundle(out)
    assert (manifest.kind, manifest.name) == ("combined", bundles.DEFAULT_COMBINED_NAME)
    assert [p.path for p in manifest.payloads] == ["device-software.vsb", "model.vsb"]
    verified = run("bundle", "verify", str(out), "--trust", str(parts["pub"]), "--json")
    assert verified.returncode == 0, verified.stderr
    listed = json.loads(verified.stdout)["parts"]
    # In install order: the model before the device software.
    assert [(p["kind"], p["version"]) for p in listed] == [("model", "0.3.0"), ("device-software", "0.2.0")]
    shown = run("bundle", "inspect", str(out))
    assert shown.returncode == 0 and "part model:" in shown.stdout and "veriscope-demo 0.3.0" in shown.stdout


def test_build_refuses_parts_the_unit_would_refuse(parts: dict[str, Path], tmp_path: Path) -> None:
    common = ("--version", "1.0.0", "--sign-key", str(parts["key"]), "--out", str(tmp_path / "x.vsb"))
    foreign = run("bundle", "build", "--kind", "combined", "--part", str(parts["foreign"]), *common)
    assert foreign.returncode == 1 and "not by the trusted update key" in foreign.stderr
    twice = run("bundle", "build", "--kind", "combined", "--part", str(parts["model"]), "--part", str(parts["model"]),
                *common)  # fmt: skip
    assert twice.returncode == 1 and "both model bundles" in twice.stderr
    not_combined = run("bundle", "build", "--kind", "model", "--part", str(parts["model"]), *common)
    assert not_combined.returncode == 2
    nested = tmp_path / "src"
    nested.mkdir()
    shutil.copy(parts["model"], nested / "combined.vsb")
    refused = run("bundle", "build", "--kind", "combined", "--source", str(nested), *common)
    assert refused.returncode == 1 and "is not a part" in refused.stderr
    assert not (tmp_path / "x.vsb").exists()


def test_verify_refuses_a_tampered_part(parts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "release.vsb"
    bundles.build_combined([parts["model"]], out, version="1.0.0", signing_key=bundles.load_signing_key(parts["key"]))
    with tarfile.open(out) as tar:
        offset = tar.getmember("payload/model.vsb").offset_data
    data = bytearray(out.read_bytes())
    data[offset + 100_000] ^= 0x01  # inside the model part's payloads
    out.write_bytes(bytes(data))
    done = run("bundle", "verify", str(out), "--trust", str(parts["pub"]))
    assert done.returncode == 1 and "SHA-256" in done.stderr
