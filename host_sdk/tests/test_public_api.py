"""The public surface stays small, complete and in step with veriscope.v1."""

from __future__ import annotations

import ast
import enum
import inspect

import grpc
import pytest

import veriscope.sdk as sdk
from veriscope.sdk import _async_client, _client, _convert, _discovery, _exceptions, _models, _types
from veriscope.sdk._client import Client
from veriscope.sdk._exceptions import VeriscopeError, error_class_for

PUBLIC_MODULES = [_models, _exceptions, _client, _async_client, _types, _discovery]


def _defined_public_names() -> set[str]:
    names = set()
    for module in PUBLIC_MODULES:
        for name, value in vars(module).items():
            if name.startswith("_"):
                continue
            if inspect.isclass(value) and value.__module__ == module.__name__:
                names.add(name)
        if module is _types:
            # Type aliases are not classes; find them as ``Name: TypeAlias = ...`` in the source.
            tree = ast.parse(inspect.getsource(module))
            names.update(
                node.target.id
                for node in tree.body
                if isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and ast.unparse(node.annotation) == "TypeAlias"
            )
    return names


def test_all_is_sorted_and_complete() -> None:
    assert sdk.__all__ == sorted(sdk.__all__)
    missing = _defined_public_names() - set(sdk.__all__)
    assert not missing, f"add to veriscope.sdk.__all__: {sorted(missing)}"
    for name in sdk.__all__:
        assert hasattr(sdk, name), name


def test_every_public_class_has_a_docstring() -> None:
    for name in sdk.__all__:
        value = getattr(sdk, name)
        if inspect.isclass(value):
            assert value.__doc__ and value.__doc__.strip(), name


def test_sync_and_async_clients_mirror_each_other() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {n: inspect.signature(f) for n, f in vars(cls).items() if not n.startswith("_") and callable(f)}

    sync, asynchronous = public(Client), public(sdk.AsyncClient)
    assert set(sync) - {"close"} == set(asynchronous) - {"aclose"}
    for name, signature in sync.items():
        if name != "close":
            assert signature.parameters.keys() == asynchronous[name].parameters.keys(), name
            iterator = name in {"stream_preview", "iter_scans", "watch_scan", "run_self_test", "read_logs"}
            assert inspect.iscoroutinefunction(getattr(sdk.AsyncClient, name)) is not iterator, name


def test_error_tree_covers_every_status_code_once() -> None:
    codes = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
    leaves = {error_class_for(code) for code in codes}
    assert len(leaves) == len(codes)
    for code in codes:
        leaf = error_class_for(code)
        assert issubclass(leaf, VeriscopeError) and leaf.code == code.name
        assert leaf.__name__ in (_exceptions.__doc__ or ""), f"draw {leaf.__name__} in the _exceptions docstring"
    assert "ProtocolError" in (_exceptions.__doc__ or "")


@pytest.mark.parametrize(
    ("sdk_enum", "wire", "prefix"), _convert.ENUM_PAIRS, ids=[p[0].__name__ for p in _convert.ENUM_PAIRS]
)
def test_enums_agree_with_the_wire(sdk_enum: type[enum.Enum], wire: object, prefix: str) -> None:
    wire_names = {name.removeprefix(prefix) for name in wire.DESCRIPTOR.values_by_name}  # type: ignore[attr-defined]
    sdk_only = (
        {"CAPTURING", "UPLOADING", "IMAGE_REJECTED", "RETAKES_EXHAUSTED"} if sdk_enum is sdk.ScanEventType else set()
    )
    assert set(sdk_enum.__members__) - sdk_only <= wire_names
    # Every wire value except UNSPECIFIED has an SDK member, and round-trips.
    assert wire_names - {"UNSPECIFIED"} <= set(sdk_enum.__members__)
    for member in sdk_enum:
        if member.name not in sdk_only and member.name != "UNSPECIFIED":
            assert _convert.enum_from_pb(sdk_enum, _convert.enum_to_pb(member)) is member


def test_the_sdk_and_cli_need_no_numpy_tflite_or_daemon() -> None:
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    heavy = ("numpy", "PIL", "tflite_runtime", "ai_edge_litert", "tensorflow", "veriscope.device")
    probe = f"import sys, veriscope.sdk, veriscope.sdk._cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    dependencies = " ".join(tomllib.loads(pyproject.read_text())["project"]["dependencies"]).lower()
    assert not any(name in dependencies for name in ("numpy", "pillow", "tflite", "litert", "tensorflow"))
