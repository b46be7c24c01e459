"""``veriscope-tool provision --device``: what the tool checks before it sends anything, and its command line.

The whole flow against a real first-boot daemon is in tests/test_first_boot.py.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from veriscope.device.identity import certificate_request
from veriscope.device.provisioning import FirstBootIdentity
from veriscope.tools import _provision_device as remote
from veriscope.tools.ca import FleetCA
from veriscope.tools.cli import main as tool


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = tool(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    return FleetCA.create(tmp_path / "ca")


@pytest.fixture
def no_channel(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records any gRPC channel the tool opens: none may be opened to a unit that is not the one pinned."""
    opened: list[Any] = []

    def secure_channel(*args: Any, **kwargs: Any) -> None:
        opened.append(args)
        pytest.fail("the tool opened a channel to a unit it does not trust")

    monkeypatch.setattr("grpc.secure_channel", secure_channel)
    return opened


@pytest.mark.parametrize(
    "text",
    ["sha256:" + "ab" * 32, "SHA256:" + "AB" * 32, "ab" * 32, ":".join(["AB"] * 32), " sha256:" + "ab" * 32 + " "],
)
def test_fingerprints_are_normalised(text: str) -> None:
    assert remote.normalize_fingerprint(text) == "sha256:" + "ab" * 32


@pytest.mark.parametrize("text", ["", "sha256:abc", "md5:" + "ab" * 32, "zz" * 32])
def test_malformed_fingerprints_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        remote.normalize_fingerprint(text)


def test_a_unit_with_another_certificate_gets_nothing(
    tmp_path: Path, ca: FleetCA, monkeypatch: pytest.MonkeyPatch, no_channel: list[Any]
) -> None:
    label = FirstBootIdentity.load_or_create(tmp_path / "label-unit")
    impostor = FirstBootIdentity.load_or_create(tmp_path / "impostor")
    monkeypatch.setattr(remote, "fetch_certificate", lambda address, timeout_s: impostor.certificate)
    with pytest.raises(remote.DeviceProvisionError) as refused:
        remote.provision_device("10.0.0.7:50051", "ABCD-EFGH-JKMN-PQRS", label.fingerprint, ca)
    assert refused.value.sent is False
    assert impostor.fingerprint in str(refused.value) and label.fingerprint in str(refused.value)
    assert no_channel == []


def test_a_unit_of_this_ca_is_provisioned_already_and_gets_nothing(
    tmp_path: Path, ca: FleetCA, monkeypatch: pytest.MonkeyPatch, no_channel: list[Any]
) -> None:
    label = FirstBootIdentity.load_or_create(tmp_path / "unit")
    key = ec.generate_private_key(ec.SECP256R1())
    provisioned = ca.issue_unit_certificate(certificate_request(key, "VS-00C0FFEE"), "VS-00C0FFEE")
    monkeypatch.setattr(remote, "fetch_certificate", lambda address, timeout_s: provisioned)
    report = remote.provision_device("10.0.0.7:50051", "ABCD-EFGH-JKMN-PQRS", label.fingerprint, ca)
    assert report.changed is False and report.device_id == "VS-00C0FFEE"
    assert no_channel == []


def test_an_unreachable_unit_is_reported(ca: FleetCA) -> None:
    with pytest.raises(remote.DeviceProvisionError, match="cannot reach the unit") as failed:
        remote.provision_device("127.0.0.1:1", "ABCD", "sha256:" + "00" * 32, ca, timeout_s=5)
    assert failed.value.sent is False


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--device", "10.0.0.7:50051"], "needs --pairing-code and --fingerprint"),
        (["--device", "10.0.0.7:50051", "--pairing-code", "X", "--fingerprint", "Y", "--rotate"], "--rotate"),
        (["--device", "10.0.0.7:50051", "--pairing-code", "X", "--fingerprint", "Y", "--device-id", "VS-1"], "id"),
        (["--data-dir", "/tmp/x", "--pairing-code", "X"], "go with --device"),
        (["--device", "10.0.0.7:50051", "--pairing-code", "X", "--fingerprint", "nope"], "64 hex digits"),
    ],
)
def test_command_line_mistakes_exit_2(ca: FleetCA, extra: list[str], problem: str) -> None:
    code, _, err = _run("provision", "--ca", str(ca.directory), *extra)
    assert code == 2 and problem in err


def test_data_dir_and_device_are_exclusive(ca: FleetCA) -> None:
    code, _, err = _run("provision", "--ca", str(ca.directory), "--data-dir", "/tmp/x", "--device", "h:1")
    assert code == 2 and "not allowed with" in err
