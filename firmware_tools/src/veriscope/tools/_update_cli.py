"""``veriscope-tool update push|status|rollback``: over-the-air updates of a unit.

``push`` uploads a signed bundle (resuming from the unit's committed offset after a dropped connection, with
backoff), installs it, waits for the unit's trial and exits 0 only when the bundle is installed and active; for
a combined bundle, only when every part is installed and active.

Exit status:

- 0: done (for ``push``: the bundle is installed, committed and active);
- 1: refused: the unit refused the bundle (tampered, wrong key, wrong kind or hardware, not newer, no update
  key configured) or the call (permission), with the unit's reason; nothing was installed;
- 2: bad command line, or the file cannot be read;
- 3: the unit cannot be reached (after the retries, for an upload);
- 4: the bundle was installed but failed its trial, and the unit rolled back to the previous version (for a
  combined bundle: a part failed, and the parts installed before it were undone).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from veriscope.tools import bundles
from veriscope.v1 import update_service_pb2 as pb
from veriscope.v1 import update_service_pb2_grpc as pb_grpc

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_ROLLED_BACK = 0, 1, 2, 3, 4
CHUNK_BYTES = 1024 * 1024
"""Bytes sent per upload message."""
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
    }
)
"""Upload failures that a retry from the committed offset may cure."""
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_STATES = {v.number: v.name.removeprefix("SLOT_STATE_").lower() for v in pb.SlotState.DESCRIPTOR.values}
_OUTCOMES = {v.number: v.name.removeprefix("UPDATE_OUTCOME_").lower() for v in pb.UpdateOutcome.DESCRIPTOR.values}
_COMPONENTS = {v.number: v.name.removeprefix("COMPONENT_").lower() for v in pb.Component.DESCRIPTOR.values}
_PART_COMPONENTS = {
    "model": pb.COMPONENT_MODEL,
    "controller-firmware": pb.COMPONENT_CONTROLLER_FIRMWARE,
    "device-software": pb.COMPONENT_DEVICE_SOFTWARE,
}


_Metadata = tuple[tuple[str, str | bytes], ...]


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_commands(commands: Any) -> None:
    """Register ``update`` and its subcommands."""
    update = commands.add_parser(
        "update",
        help="push a signed update bundle (model, controller firmware, device software, or a combined bundle of "
        "them) to a unit over the air; show or roll back what it runs",
        description="Over-the-air updates of a unit (device/docs/updates.md). Exit status: 0 done, 1 refused by "
        "the unit, 2 bad command line, 3 unit unreachable, 4 trial failed and the unit rolled back (for a combined "
        "bundle: a part failed and the parts installed before it were undone).",
    )
    sub = update.add_subparsers(dest="update_command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", required=True, metavar="ADDR", help="the unit, HOST:PORT")
        p.add_argument("--token", default=os.environ.get("VERISCOPE_TOKEN"), help="API token ($VERISCOPE_TOKEN)")
        p.add_argument("--ca", type=Path, metavar="FILE", help="CA certificate (PEM) to verify the unit's TLS by")
        p.add_argument("--json", action="store_true", help="print the outcome as JSON")

    push = sub.add_parser(
        "push",
        help="upload (resuming after a dropped link), install and wait for the trial to commit",
        description="Upload a bundle, resuming from the unit's committed offset after a dropped connection, install "
        "it and wait for its trial. Exits 0 only when it is installed and active; for a combined bundle, only when "
        "every part is (firmware, then model, then device software; a part that fails undoes the ones before it).",
    )
    common(push)
    push.add_argument("file", type=Path, metavar="FILE", help="the signed bundle (veriscope-tool bundle build)")
    push.add_argument("--allow-downgrade", action="store_true", help="install a version not newer (admin only)")
    push.add_argument("--retries", type=int, default=8, help="upload attempts after a dropped connection (8)")
    push.add_argument("--trial-timeout", type=float, default=600.0, help="seconds to wait for the trial (600)")
    push.set_defaults(run=_push)
    status = sub.add_parser(
        "status", help="what each component runs, and the latest update of each (a combined one lists its parts)"
    )
    common(status)
    status.set_defaults(run=_status)
    rollback = sub.add_parser("rollback", help="make the previous model active again")
    common(rollback)
    rollback.set_defaults(run=_rollback)


def run(args: argparse.Namespace) -> int:
    """Run an ``update`` subcommand and return its exit status."""
    err = Console(stderr=True, highlight=False)
    try:
        return int(args.run(args, err))
    except _Exit as exc:
        if args.json:
            print(json.dumps({"ok": False, "exit": exc.code, "error": str(exc)}))
        err.print(f"[bold red]error:[/] {exc}")
        return exc.code


def _channel(args: argparse.Namespace) -> grpc.Channel:
    options = [("grpc.max_send_message_length", 8 * CHUNK_BYTES)]
    if args.ca is None:
        return grpc.insecure_channel(args.device, options=options)
    try:
        root = args.ca.read_bytes()
    except OSError as exc:
        raise _Exit(EXIT_USAGE, f"cannot read --ca {args.ca}: {exc.strerror}") from None
    return grpc.secure_channel(args.device, grpc.ssl_channel_credentials(root_certificates=root), options=options)


def _metadata(args: argparse.Namespace) -> _Metadata:
    return (("authorization", f"Bearer {args.token}"),) if args.token else ()


def _failure(exc: grpc.RpcError, what: str) -> _Exit:
    code = exc.code()
    if code in _UNREACHABLE:
        return _Exit(EXIT_UNREACHABLE, f"{what}: the unit cannot be reached ({code.name}): {exc.details()}")
    return _Exit(EXIT_REFUSED, f"{what}: {code.name}: {exc.details()}")


def _status_dict(status: pb.GetUpdateStatusResponse) -> dict[str, Any]:
    return {
        "slots": [
            {
                "component": _COMPONENTS[s.component],
                "slot": s.label,
                "name": s.name,
                "version": s.version,
                "state": _STATES[s.state],
                "active": s.state == pb.SLOT_STATE_ACTIVE,
            }
            for s in status.slots
        ],
        "results": [
            {
                "component": _COMPONENTS[r.component],
                "slot": r.label,
                "version": r.version,
                "outcome": _OUTCOMES[r.outcome],
                "message": r.message,
            }
            for r in status.results
        ],
    }


def _status(args: argparse.Namespace, err: Console) -> int:
    with _channel(args) as channel:
        try:
            status = pb_grpc.UpdateServiceStub(channel).GetUpdateStatus(
                pb.GetUpdateStatusRequest(), metadata=_metadata(args), timeout=30
            )
        except grpc.RpcError as exc:
            raise _failure(exc, "status") from None
    data = _status_dict(status)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for s in data["slots"]:
        print(f"{s['component']:20} {s['slot']:8} {s['name'] or '-':20} {s['version']:12} {s['state']}")
    for r in data["results"]:
        tail = f": {r['message']}" if r["message"] else ""
        where = f"{r['slot']}" if r["component"] == "combined" else f"in slot {r['slot']}"
        print(f"latest {r['component']} update: {r['version']} {where}, {r['outcome']}{tail}")
    return EXIT_OK


def _rollback(args: argparse.Namespace, err: Console) -> int:
    with _channel(args) as channel:
        try:
            slot = (
                pb_grpc.UpdateServiceStub(channel)
                .RollbackUpdate(
                    pb.RollbackUpdateRequest(component=pb.COMPONENT_MODEL), metadata=_metadata(args), timeout=300
                )
                .slot
            )
        except grpc.RpcError as exc:
            raise _failure(exc, "rollback") from None
    if args.json:
        print(json.dumps({"ok": True, "slot": slot.label, "version": slot.version, "name": slot.name}))
    else:
        print(f"rolled back: {slot.name} {slot.version} (slot {slot.label}) is active")
    return EXIT_OK


def _push(args: argparse.Namespace, err: Console) -> int:
    path: Path = args.file
    try:
        data = path.read_bytes()
        manifest = bundles.inspect_bundle(path)  # for display only; the unit verifies everything
    except OSError as exc:
        raise _Exit(EXIT_USAGE, f"cannot read {path}: {exc.strerror}") from None
    except bundles.BundleError as exc:
        raise _Exit(EXIT_REFUSED, f"{path} is not a bundle: {exc.reason}") from None
    try:
        parts = bundles.part_manifests(path) if manifest.kind == "combined" else {}
    except bundles.BundleError as exc:
        raise _Exit(EXIT_REFUSED, f"{path} is not a combined bundle: {exc.reason}") from None
    digest = hashlib.sha256(data).hexdigest()
    # The id follows from the file, so a second push of the same file resumes the first one's upload.
    upload_id = f"b-{digest[:32]}"
    md = _metadata(args)
    with _channel(args) as channel:
        stub = pb_grpc.UpdateServiceStub(channel)
        resumed = _upload(stub, md, data, digest, upload_id, args.retries, err, quiet=args.json)
        try:
            installed = stub.InstallBundle(
                pb.InstallBundleRequest(upload=f"uploads/{upload_id}", allow_downgrade=args.allow_downgrade),
                metadata=md,
                timeout=300,
            )
        except grpc.RpcError as exc:
            raise _failure(exc, "install refused") from None
        if not args.json and parts:
            listed = ", ".join(f"{kind} {part.version}" for kind, part in parts.items())
            err.print(f"installing {manifest.name} {manifest.version}: {listed}, in that order")
        elif not args.json:
            err.print(f"installed {manifest.name} {manifest.version} in slot {installed.slot.label}; on trial")
        component = installed.result.component or pb.COMPONENT_MODEL
        result = _wait_for_trial(stub, md, args.trial_timeout, component)
        if parts and result.outcome == pb.UPDATE_OUTCOME_COMMITTED:
            return _check_parts(args, stub, md, manifest, parts, result, resumed)
    if result.outcome == pb.UPDATE_OUTCOME_ROLLED_BACK:
        raise _Exit(EXIT_ROLLED_BACK, f"{manifest.version} failed its trial and the unit rolled back: {result.message}")
    if result.outcome != pb.UPDATE_OUTCOME_COMMITTED or result.version != manifest.version:
        raise _Exit(EXIT_REFUSED, f"the unit reports {_OUTCOMES[result.outcome]} {result.version}, not this bundle")
    if args.json:
        done = {"ok": True, "name": manifest.name, "version": manifest.version, "slot": result.label}
        print(json.dumps({**done, "resumed_at": resumed}))
    else:
        print(f"{manifest.name} {manifest.version} is installed and active (slot {result.label})")
    return EXIT_OK


def _check_parts(
    args: argparse.Namespace,
    stub: pb_grpc.UpdateServiceStub,
    md: _Metadata,
    manifest: bundles.Manifest,
    parts: dict[str, bundles.Manifest],
    result: Any,
    resumed: list[int],
) -> int:
    """Exit 0 only when the unit reports the combined update committed and every part's version active."""
    if result.version != manifest.version:
        raise _Exit(EXIT_REFUSED, f"the unit reports combined update {result.version}, not this bundle")
    try:
        status = stub.GetUpdateStatus(pb.GetUpdateStatusRequest(), metadata=md, timeout=30)
    except grpc.RpcError as exc:
        raise _failure(exc, "status") from None
    active = {(s.component, s.version) for s in status.slots if s.state == pb.SLOT_STATE_ACTIVE}
    missing = [
        f"{kind} {part.version}" for kind, part in parts.items() if (_PART_COMPONENTS[kind], part.version) not in active
    ]
    if missing:
        raise _Exit(EXIT_REFUSED, f"the unit reports the update committed, but not active: {', '.join(missing)}")
    if args.json:
        listed = [{"component": kind, "name": p.name, "version": p.version} for kind, p in parts.items()]
        done = {"ok": True, "name": manifest.name, "version": manifest.version, "parts": listed, "resumed_at": resumed}
        print(json.dumps(done))
    else:
        for kind, part in parts.items():
            print(f"{kind} {part.name} {part.version} is installed and active")
        print(f"{manifest.name} {manifest.version} is installed and active ({result.message})")
    return EXIT_OK


def _upload(
    stub: pb_grpc.UpdateServiceStub,
    md: _Metadata,
    data: bytes,
    digest: str,
    upload_id: str,
    retries: int,
    err: Console,
    *,
    quiet: bool,
) -> list[int]:
    """Upload ``data``, resuming from the unit's committed offset after each dropped connection; returns the
    offsets the upload resumed at after a drop (empty when it never dropped)."""
    header = pb.UploadHeader(upload_id=upload_id, size_bytes=len(data), sha256=digest)
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    resumed: list[int] = []
    with Progress("uploading", *columns, console=err, disable=quiet, transient=True) as progress:
        task = progress.add_task("upload", total=len(data))
        last: grpc.RpcError | None = None
        for attempt in range(retries + 1):
            if attempt:
                delay = min(8.0, 0.5 * 2 ** (attempt - 1))
                err.print(f"connection lost ({last and last.code().name}); resuming in {delay:g} s")
                time.sleep(delay)
            try:
                offset = _committed(stub, md, upload_id)
                if attempt:
                    resumed.append(offset)
                    err.print(f"resuming the upload at byte {offset} of {len(data)}, which the unit holds")
                progress.update(task, completed=offset)
                if offset >= len(data):
                    return resumed

                def requests(start: int) -> Iterator[pb.UploadBundleRequest]:
                    yield pb.UploadBundleRequest(header=header)
                    for at in range(start, len(data), CHUNK_BYTES):
                        chunk = data[at : at + CHUNK_BYTES]
                        yield pb.UploadBundleRequest(chunk=pb.UploadChunk(offset=at, data=chunk))
                        progress.update(task, completed=at + len(chunk))

                upload = stub.UploadBundle(requests(offset), metadata=md, timeout=600).upload
                if upload.complete:
                    return resumed
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise _failure(exc, "upload refused") from None
                last = exc
    assert last is not None
    raise _failure(last, f"upload failed after {retries + 1} attempts")


def _committed(stub: pb_grpc.UpdateServiceStub, md: _Metadata, upload_id: str) -> int:
    """The unit's committed offset of the upload; 0 when it holds none."""
    try:
        upload = stub.GetUpload(pb.GetUploadRequest(name=f"uploads/{upload_id}"), metadata=md, timeout=30).upload
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise
    return int(upload.size_bytes) if upload.complete else int(upload.committed_bytes)


def _wait_for_trial(
    stub: pb_grpc.UpdateServiceStub, md: _Metadata, timeout_s: float, component: pb.Component.ValueType
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = stub.GetUpdateStatus(pb.GetUpdateStatusRequest(), metadata=md, timeout=30)
        except grpc.RpcError as exc:
            if exc.code() not in RETRYABLE or time.monotonic() > deadline:
                raise _failure(exc, "waiting for the trial") from None
            time.sleep(1.0)
            continue
        result = next((r for r in status.results if r.component == component), None)
        if result is not None and result.outcome != pb.UPDATE_OUTCOME_TRIAL:
            return result
        if time.monotonic() > deadline:
            raise _Exit(EXIT_UNREACHABLE, f"the trial did not end within {timeout_s:g} s; see 'update status'")
        time.sleep(0.25)
