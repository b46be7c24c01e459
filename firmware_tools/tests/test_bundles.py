"""Signed update bundles: ``veriscope.tools.bundles`` and ``veriscope-tool keys|bundle``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veriscope.tools import bundles
from veriscope.tools.bundles import BundleError, Limits, Manifest, build_bundle, extract_verified, read_bundle
from veriscope.tools.cli import main

DEMO = Path(__file__).resolve().parents[2] / "models" / "bundles" / "veriscope-demo"
CREATED = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)

Entry = tuple[tarfile.TarInfo, bytes]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return bundles.generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def signing_key(keys: tuple[Path, Path]) -> ed25519.Ed25519PrivateKey:
    return bundles.load_signing_key(keys[0])


@pytest.fixture(scope="module")
def trust(keys: tuple[Path, Path]) -> ed25519.Ed25519PublicKey:
    return bundles.load_trust_key(keys[1])


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory, signing_key: ed25519.Ed25519PrivateKey) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "veriscope-demo.vsb"
    build_bundle(DEMO, out, kind="model", version="0.2.0", signing_key=signing_key, created=CREATED)
    return out


def _entries(path: Path) -> list[Entry]:
    with tarfile.open(path) as tar:
        out = []
        for member in tar.getmembers():
            f = tar.extractfile(member)
            out.append((member, f.read() if f is not None else b""))
        return out


def _write(path: Path, entries: list[Entry]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _file(name: str, data: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _tampered(src: Path, dst: Path, change: Callable[[list[Entry]], list[Entry]]) -> Path:
    return _write(dst, change(_entries(src)))


def _replace(name: str, edit: Callable[[bytes], bytes]) -> Callable[[list[Entry]], list[Entry]]:
    def change(entries: list[Entry]) -> list[Entry]:
        assert any(info.name == name for info, _ in entries)
        return [(info, edit(data) if info.name == name else data) for info, data in entries]

    return change


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]

    return edit


def _resigned(signing_key: ed25519.Ed25519PrivateKey, edit: Callable[[dict[str, Any]], None]) -> Callable[..., Any]:
    """Change the manifest and sign it again with the real key: a bundle the key holder made."""

    def change(entries: list[Entry]) -> list[Entry]:
        manifest = json.loads(entries[0][1])
        edit(manifest)
        raw = json.dumps(manifest).encode()
        return [(entries[0][0], raw), (entries[1][0], signing_key.sign(raw)), *entries[2:]]

    return change


def _refused(path: Path, trust: ed25519.Ed25519PublicKey, match: str, **kwargs: Any) -> BundleError:
    with pytest.raises(BundleError, match=match) as caught:
        read_bundle(path, trust, **kwargs)
    return caught.value


# --- round trip ---------------------------------------------------------------------------------------------------


def test_a_model_bundle_round_trips(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    verified = read_bundle(demo_bundle, trust)
    manifest = verified.manifest
    assert (manifest.format, manifest.kind, manifest.name, manifest.version) == (1, "model", "veriscope-demo", "0.2.0")
    assert manifest.compatible_hardware == ("veriscope-pi",) and manifest.min_installed_version is None
    assert manifest.created == "2026-11-28T12:00:00Z"
    assert manifest.key_id == bundles.key_id(trust)
    source_files = sorted(p.name for p in DEMO.iterdir())
    assert [p.path for p in manifest.payloads] == source_files
    for payload in manifest.payloads:
        data = (DEMO / payload.path).read_bytes()
        assert payload.sha256 == hashlib.sha256(data).hexdigest() and payload.size == len(data)

    dest = extract_verified(verified, tmp_path / "models" / "veriscope-demo-0.2.0")
    assert sorted(p.name for p in dest.iterdir()) == source_files
    for name in source_files:
        assert (dest / name).read_bytes() == (DEMO / name).read_bytes()
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o644
    assert os.listdir(dest.parent) == [dest.name], "no temporary directory left behind"


def test_the_tar_layout_is_manifest_signature_then_sorted_payloads(demo_bundle: Path) -> None:
    entries = _entries(demo_bundle)
    names = [info.name for info, _ in entries]
    assert names[:2] == ["manifest.json", "manifest.sig"]
    assert names[2:] == sorted(f"payload/{p.name}" for p in DEMO.iterdir())
    assert all(info.isreg() and info.uid == 0 and info.gid == 0 and info.mode == 0o644 for info, _ in entries)
    assert {info.mtime for info, _ in entries} == {int(CREATED.timestamp())}
    manifest = json.loads(entries[0][1])
    assert set(manifest) == {
        "format",
        "kind",
        "name",
        "version",
        "compatible_hardware",
        "min_installed_version",
        "created",
        "payloads",
        "key_id",
    }
    assert set(manifest["payloads"][0]) == {"path", "sha256", "size"}


def test_builds_are_deterministic(
    demo_bundle: Path, signing_key: ed25519.Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = tmp_path / "again.vsb"
    build_bundle(DEMO, again, kind="model", version="0.2.0", signing_key=signing_key, created=CREATED)
    assert again.read_bytes() == demo_bundle.read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(CREATED.timestamp())))
    from_env = tmp_path / "env.vsb"
    build_bundle(DEMO, from_env, kind="model", version="0.2.0", signing_key=signing_key)
    assert from_env.read_bytes() == demo_bundle.read_bytes()


def test_nested_payloads_and_all_manifest_fields(
    signing_key: ed25519.Ed25519PrivateKey, trust: ed25519.Ed25519PublicKey, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    (source / "bin" / "lib").mkdir(parents=True)
    (source / "bin" / "lib" / "core.so").write_bytes(b"\x7fELF" * 100)
    (source / "VERSION").write_text("1.4.0\n")
    (source / "empty.txt").write_bytes(b"")
    out = tmp_path / "sw.vsb"
    build_bundle(
        source,
        out,
        kind="model",
        version="1.4.0-rc.1+build.7",
        name="veriscope-device",
        compatible_hardware=["veriscope-pi", "veriscope-sim"],
        min_installed_version="1.2.0",
        signing_key=signing_key,
        created=CREATED,
    )
    verified = read_bundle(out, trust)
    assert verified.manifest.compatible_hardware == ("veriscope-pi", "veriscope-sim")
    assert verified.manifest.min_installed_version == "1.2.0"
    assert [p.path for p in verified.manifest.payloads] == ["VERSION", "bin/lib/core.so", "empty.txt"]
    dest = extract_verified(verified, tmp_path / "install")
    assert (dest / "bin" / "lib" / "core.so").read_bytes() == b"\x7fELF" * 100
    assert (dest / "empty.txt").read_bytes() == b""


def test_build_refuses_bad_inputs(signing_key: ed25519.Ed25519PrivateKey, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.bin").write_bytes(b"a")
    out = tmp_path / "out.vsb"

    def build(**overrides: Any) -> None:
        args: dict[str, Any] = {"kind": "model", "version": "1.0.0", "signing_key": signing_key, "created": CREATED}
        build_bundle(source, out, **(args | overrides))

    with pytest.raises(BundleError, match="kind"):
        build(kind="kernel")
    with pytest.raises(BundleError, match="semantic version"):
        build(version="1.0")
    with pytest.raises(BundleError, match="compatible_hardware"):
        build(compatible_hardware=[])
    (source / "link").symlink_to(source / "a.bin")
    with pytest.raises(BundleError, match="link"):
        build()
    assert not out.exists() and os.listdir(tmp_path) == ["src"], "no partial bundle left behind"


# --- tampering: each refused with its reason ----------------------------------------------------------------------


def test_a_changed_payload_byte_is_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", _replace("payload/model.tflite", _flip(1000)))
    error = _refused(bad, trust, r"'payload/model.tflite' does not match its SHA-256")
    assert error.member == "payload/model.tflite"


def test_a_changed_manifest_is_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    change = _replace("manifest.json", lambda raw: raw.replace(b'"version": "0.2.0"', b'"version": "9.2.0"'))
    _refused(_tampered(demo_bundle, tmp_path / "bad.vsb", change), trust, "signature does not match the manifest")


def test_a_changed_signature_is_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", _replace("manifest.sig", _flip(5)))
    _refused(bad, trust, "signature does not match the manifest")


def test_a_bundle_signed_by_another_key_is_refused(demo_bundle: Path, tmp_path: Path) -> None:
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    _refused(
        demo_bundle,
        other,
        rf"signed by key sha256:[0-9a-f]{{64}}, not by the trusted update key {bundles.key_id(other)}",
    )


def test_an_extra_member_is_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", lambda e: [*e, _file("payload/extra.sh", b"rm -rf /")])
    _refused(bad, trust, "'payload/extra.sh' is not listed in the manifest")


def test_a_missing_member_is_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", lambda e: [x for x in e if x[0].name != "payload/roc.png"])
    _refused(bad, trust, "'payload/roc.png' is missing")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil", "escapes the install directory"),
        ("payload/../../evil", "escapes the install directory"),
        ("payload/sub/../../../evil", "escapes the install directory"),
        ("/etc/cron.d/evil", "absolute path"),
        ("/payload/model.tflite", "absolute path"),
        ("payload/./model.tflite", "unsafe component"),
        ("payload//model.tflite", "empty or absolute"),
        ("payload/a\\..\\..\\evil", "unsafe component"),
        ("evil", "not under payload/"),
    ],
)
def test_unsafe_member_names_are_refused(
    demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path, name: str, reason: str
) -> None:
    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", lambda e: [*e[:3], _file(name, b"x"), *e[3:]])
    _refused(bad, trust, reason)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (tarfile.SYMTYPE, "is a symlink"),
        (tarfile.LNKTYPE, "is a hard link"),
        (tarfile.CHRTYPE, "is not a regular file"),
    ],
)
def test_links_and_devices_are_refused(
    demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path, kind: bytes, reason: str
) -> None:
    def change(entries: list[Entry]) -> list[Entry]:
        # The link takes the place of a listed payload, so only its type gives it away.
        link = tarfile.TarInfo("payload/model.tflite")
        link.type, link.linkname = kind, "/etc/shadow"
        return [x if x[0].name != "payload/model.tflite" else (link, b"") for x in entries]

    _refused(_tampered(demo_bundle, tmp_path / "bad.vsb", change), trust, f"'payload/model.tflite' {reason}")


def test_oversize_members_are_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey) -> None:
    largest = max(DEMO.iterdir(), key=lambda p: p.stat().st_size)
    limit = largest.stat().st_size - 1
    error = _refused(demo_bundle, trust, f"more than the {limit} allowed", limits=Limits(member_bytes=limit))
    assert error.member == f"payload/{largest.name}"
    total = sum(p.stat().st_size for p in DEMO.iterdir())
    _refused(demo_bundle, trust, f"payloads total {total} bytes, more than", limits=Limits(total_bytes=total - 1))


def test_a_member_larger_than_its_manifest_entry_is_refused(
    demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path
) -> None:
    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", _replace("payload/roc.png", lambda d: d + b"\0" * 4096))
    size = (DEMO / "roc.png").stat().st_size
    _refused(bad, trust, rf"'payload/roc.png' is {size + 4096} bytes, the manifest says {size}")


def test_an_oversize_manifest_is_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", _replace("manifest.json", lambda d: d + b" " * (1 << 20)))
    _refused(bad, trust, "'manifest.json' is .* bytes, more than 1048576")


@pytest.mark.parametrize("name", ["payload/model.tflite", "manifest.json"])
def test_duplicated_members_are_refused(
    demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path, name: str
) -> None:
    def change(entries: list[Entry]) -> list[Entry]:
        original = next(x for x in entries if x[0].name == name)
        return [*entries, (tarfile.TarInfo(name), original[1])]

    _refused(_tampered(demo_bundle, tmp_path / "bad.vsb", change), trust, f"'{name}' is repeated")


def test_members_out_of_order_are_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", lambda e: [e[1], e[0], *e[2:]])
    _refused(bad, trust, "expected 'manifest.json' as the next member, found 'manifest.sig'")


def test_a_signed_manifest_still_cannot_name_unsafe_paths(
    demo_bundle: Path, trust: ed25519.Ed25519PublicKey, signing_key: ed25519.Ed25519PrivateKey, tmp_path: Path
) -> None:
    # Even the key holder cannot make a unit write outside its install directory.
    def traversal(manifest: dict[str, Any]) -> None:
        manifest["payloads"].append({"path": "../../etc/evil", "sha256": "0" * 64, "size": 1})

    bad = _tampered(demo_bundle, tmp_path / "bad.vsb", _resigned(signing_key, traversal))
    _refused(bad, trust, "payload path '../../etc/evil' has an unsafe component '..'")

    def schema(manifest: dict[str, Any]) -> None:
        manifest["version"] = "latest"

    bad = _tampered(demo_bundle, tmp_path / "bad2.vsb", _resigned(signing_key, schema))
    _refused(bad, trust, "manifest version 'latest' is not a semantic version")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a valid bundle tar"),
        (b"this is not a tar file\n" * 100, "not a valid bundle tar"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 600, "not a valid bundle tar"),
    ],
)
def test_not_a_tar_is_refused(trust: ed25519.Ed25519PublicKey, tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "junk.vsb"
    path.write_bytes(content)
    _refused(path, trust, reason)
    with pytest.raises(BundleError, match=reason):
        bundles.inspect_bundle(path)


def test_a_compressed_bundle_is_refused(demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    gz = tmp_path / "bundle.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        for info, data in _entries(demo_bundle):
            tar.addfile(info, io.BytesIO(data))
    _refused(gz, trust, "not a valid bundle tar")


@pytest.mark.parametrize("cut", ["half", "inside the last payload", "inside the last header"])
def test_a_truncated_tar_is_refused(
    demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path, cut: str
) -> None:
    data = demo_bundle.read_bytes()
    with tarfile.open(demo_bundle) as tar:
        last = tar.getmembers()[-1]
    end = {"half": len(data) // 2, "inside the last payload": last.offset_data + last.size - 1}
    path = tmp_path / "cut.vsb"
    path.write_bytes(data[: end.get(cut, last.offset + 100)])
    _refused(path, trust, "truncated|missing")


def test_a_missing_file_is_refused(trust: ed25519.Ed25519PublicKey, tmp_path: Path) -> None:
    _refused(tmp_path / "nope.vsb", trust, "does not exist")


# --- extraction ---------------------------------------------------------------------------------------------------


def test_extract_refuses_an_existing_destination(
    demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path
) -> None:
    dest = tmp_path / "installed"
    dest.mkdir()
    with pytest.raises(BundleError, match="already exists"):
        extract_verified(read_bundle(demo_bundle, trust), dest)
    assert os.listdir(dest) == []


def test_extract_reverifies_a_bundle_swapped_after_verification(
    demo_bundle: Path, trust: ed25519.Ed25519PublicKey, tmp_path: Path
) -> None:
    path = tmp_path / "bundle.vsb"
    path.write_bytes(demo_bundle.read_bytes())
    verified = read_bundle(path, trust)
    _tampered(demo_bundle, path, _replace("payload/scores-woven-fabric.png", _flip(100)))
    with pytest.raises(BundleError, match="does not match its SHA-256"):
        extract_verified(verified, tmp_path / "install" / "demo")
    assert os.listdir(tmp_path / "install") == [], "nothing installed, no temporary directory left"


# --- fuzzing ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory, signing_key: ed25519.Ed25519PrivateKey) -> bytes:
    source = tmp_path_factory.mktemp("small")
    (source / "model.tflite").write_bytes(bytes(range(256)) * 3)
    (source / "sub").mkdir()
    (source / "sub" / "notes.txt").write_text("calibration notes\n")
    out = source.parent / "small.vsb"
    build_bundle(source, out, kind="model", version="1.0.0", signing_key=signing_key, created=CREATED)
    return out.read_bytes()


_mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 6143), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 6143), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 6143), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 6143), st.integers(1, 600)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    for op, pos, value in mutations:
        pos = pos % (len(data) + 1)
        if op == "set" and pos < len(data):
            data = data[:pos] + bytes([value]) + data[pos + 1 :]
        elif op == "cut":
            data = data[:pos]
        elif op == "insert":
            data = data[:pos] + bytes([value]) * 512 + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + value :]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_bundles_raise_only_bundle_error(
    small_bundle: bytes, trust: ed25519.Ed25519PublicKey, mutations: list[tuple[str, int, int]]
) -> None:
    original = Manifest.from_bytes(_entries_from_bytes(small_bundle)[0][1])
    data = _mutate(small_bundle, mutations)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "fuzz.vsb")
        path.write_bytes(data)
        try:
            verified = read_bundle(path, trust)
        except BundleError as exc:
            assert str(exc)
        else:
            # Only bytes that carry no content (tar padding, unused header space) may change.
            assert verified.manifest == original
            dest = extract_verified(verified, Path(tmp, "install"))
            assert (dest / "model.tflite").read_bytes() == bytes(range(256)) * 3
        with contextlib.suppress(BundleError):
            bundles.inspect_bundle(path)


def _entries_from_bytes(data: bytes) -> list[Entry]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "b.vsb")
        path.write_bytes(data)
        return _entries(path)


# --- command line -------------------------------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "keys", "generate", "--out", str(tmp_path / "k"), "--json")
    assert code == 0
    written = json.loads(out)
    key, pub = Path(written["private_key"]), Path(written["public_key"])
    assert (key.name, pub.name) == ("update.key", "update.pub")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert written["key_id"] == bundles.key_id(bundles.load_trust_key(pub))
    before = key.read_bytes()

    code, _, err = _run(capsys, "keys", "generate", "--out", str(tmp_path / "k"))
    assert code == 1 and "refusing to overwrite" in err
    assert key.read_bytes() == before

    code, out, _ = _run(capsys, "keys", "generate", "--out", str(tmp_path / "k"), "--name", "fleet-2026")
    assert code == 0 and (tmp_path / "k" / "fleet-2026.key").exists() and "key id sha256:" in out


def test_cli_build_verify_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keydir = tmp_path / "keys"
    assert _run(capsys, "keys", "generate", "--out", str(keydir))[0] == 0
    out_file = tmp_path / "demo.vsb"
    code, out, err = _run(
        capsys,
        *("bundle", "build", "--kind", "model", "--source", str(DEMO), "--version", "0.2.0"),
        *("--sign-key", str(keydir / "update.key"), "--out", str(out_file), "--min-installed-version", "0.1.0"),
    )
    assert code == 0, err
    assert "built" in out and "model veriscope-demo 0.2.0" in out

    code, out, _ = _run(capsys, "bundle", "verify", str(out_file), "--trust", str(keydir / "update.pub"))
    assert code == 0 and out.startswith("ok:")

    code, out, _ = _run(capsys, "bundle", "verify", str(out_file), "--trust", str(keydir / "update.pub"), "--json")
    result = json.loads(out)
    assert code == 0 and result["verified"] is True and result["manifest"]["min_installed_version"] == "0.1.0"

    code, out, _ = _run(capsys, "bundle", "inspect", str(out_file), "--json")
    inspected = json.loads(out)
    assert code == 0 and inspected["verified"] is False
    assert inspected["manifest"]["kind"] == "model"
    assert [p["path"] for p in inspected["manifest"]["payloads"]] == sorted(p.name for p in DEMO.iterdir())

    code, out, _ = _run(capsys, "bundle", "inspect", str(out_file))
    assert code == 0 and "NOT verified" in out and "model.tflite" in out and "veriscope-pi" in out
    code, out, _ = _run(capsys, "bundle", "inspect", str(out_file), "--trust", str(keydir / "update.pub"))
    assert code == 0 and "signature:     verified" in out

    # Tampered, and wrong key: exit 1 with the reason.
    bad = _tampered(out_file, tmp_path / "bad.vsb", _replace("payload/model.tflite", _flip(7)))
    code, out, err = _run(capsys, "bundle", "verify", str(bad), "--trust", str(keydir / "update.pub"))
    assert code == 1 and out == "" and "does not match its SHA-256" in err
    code, out, err = _run(capsys, "bundle", "verify", str(bad), "--trust", str(keydir / "update.pub"), "--json")
    assert code == 1 and json.loads(out)["verified"] is False and "SHA-256" in json.loads(out)["error"]
    _run(capsys, "keys", "generate", "--out", str(tmp_path / "other"))
    code, _, err = _run(capsys, "bundle", "verify", str(out_file), "--trust", str(tmp_path / "other" / "update.pub"))
    assert code == 1 and "not by the trusted update key" in err
    code, _, err = _run(capsys, "bundle", "verify", str(out_file), "--trust", str(keydir / "update.key"))
    assert code == 1 and "not a PEM public key" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["bundle", "build", "--kind", "kernel", "--source", ".", "--version", "1.0.0", "--sign-key", "k", "--out", "o"],
        ["bundle", "build", "--kind", "model", "--source", ".", "--version", "v1", "--sign-key", "k", "--out", "o"],
        ["bundle", "verify", "x.vsb"],
        ["keys", "generate", "--out", "d", "--name", "../up"],
        ["bundle"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


def test_build_from_a_missing_source_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bundle", "build", "--kind", "model", "--source", str(tmp_path / "none"), "--version", "1.0.0"]
    code, _, err = _run(capsys, *argv, "--sign-key", "k", "--out", str(tmp_path / "o.vsb"))
    assert code == 2 and "not a directory" in err


def test_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bundle", "verify", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "0  done" in out and "1  refused: an invalid or tampered bundle" in out and "2  bad command line" in out
