"""What the ``veriscope`` command line prints: plain-text renderings, JSON encoding and the scan progress display."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from veriscope.sdk._discovery import DiscoveredDevice
from veriscope.sdk._models import (
    Calibration,
    CalibrationState,
    CaptureResult,
    DeviceInfo,
    DeviceStatus,
    ExportProgress,
    ExportSummary,
    ModelInfo,
    PlacedItem,
    PreviewFrame,
    Reason,
    Scan,
    ScanCertificate,
    ScanEvent,
    ScanEventType,
    ScanExplanation,
    ScanResult,
    SimulatedMaterial,
    WhiteBalanceGains,
)

if TYPE_CHECKING:
    from veriscope.sdk.certificates import Certificate


def to_json(data: Any) -> str:
    """Encode ``data`` as strict JSON (indented); NaN and infinities, which JSON lacks, become null."""
    return json.dumps(_finite(data), indent=2, ensure_ascii=False, allow_nan=False)


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a left-aligned plain-text table with a header line."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def score(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _time(scan: Scan) -> str:
    return scan.create_time.strftime("%Y-%m-%d %H:%M:%S")


def reason_text(reason: Reason | None) -> str:
    return "" if reason is None else reason.name.lower().replace("_", " ")


# --- Commands ----------------------------------------------------------------------------------------------------


NO_DEVICES_HINTS = """\
Check that:
  - this computer is on the same local network (subnet) as the unit;
  - the network lets multicast DNS through (UDP port 5353; guest Wi-Fi, VPNs and some
    firewalls block it);
  - the unit's daemon listens on the network (server.listen = "0.0.0.0:50051", with TLS)
    and its discovery is enabled ([discovery] enabled = true, and no --no-advertise).
Or name the unit directly: veriscope --device HOST:PORT info"""


def devices_text(devices: Sequence[DiscoveredDevice], timeout_s: float) -> str:
    if not devices:
        return f"no Veriscope units answered within {timeout_s:g} s.\n{NO_DEVICES_HINTS}"
    rows = [
        [
            d.device_id,
            d.address,
            d.model,
            d.software_version,
            d.api_version,
            d.model_version,
            "yes" if d.tls else "no",
            "yes" if d.simulated else "no",
        ]
        for d in devices
    ]
    return table(["DEVICE", "ADDRESS", "HARDWARE", "SOFTWARE", "API", "MODEL", "TLS", "SIMULATED"], rows)


def device_text(device: DeviceInfo) -> str:
    hw = device.hardware
    ctl = hw.controller
    model = "none" if device.model is None else f"{device.model.name} {device.model.version}"
    controller = (
        f"{ctl.kind} firmware {ctl.firmware_version} (protocol {ctl.protocol_version})"
        if ctl.connected
        else "not connected"
    )
    lines = [
        f"Device        {device.device_id}  ({hw.model}{', simulated' if hw.simulated else ''})",
        f"Software      {device.software_version}  (API {device.api_version or '?'})",
        f"Model         {model}",
        f"Camera        {hw.camera_model}  {hw.sensor_width_px}x{hw.sensor_height_px} px",
        f"Controller    {controller}",
        f"Capabilities  {', '.join(sorted(c.name.lower() for c in device.capabilities)) or 'none'}",
        f"Signing key   {'Ed25519 (PEM in info --json)' if device.signing_public_key else 'none'}",
        "",
        "Item types",
    ]
    for item_type in device.item_types:
        lines.append(f"  {item_type.name}  {item_type.display_name}")
        rows = [["", r.name, r.material, f"x{r.min_images}", r.hint] for r in item_type.regions]
        lines.extend("  " + line for line in table(["", "REGION", "MATERIAL", "IMAGES", "WHERE"], rows).splitlines())
    if not device.item_types:
        lines.append("  none")
    return "\n".join(lines)


def status_text(status: DeviceStatus) -> str:
    temperature = "unknown" if status.board_temperature_c is None else f"{status.board_temperature_c:.1f} C"
    lines = [
        f"State         {status.state.name}{'  ' + status.message if status.message else ''}",
        f"Uptime        {int(status.uptime.total_seconds())} s",
        f"Active scan   {status.active_scan_id or 'none'}",
        f"Controller    {'connected' if status.controller_connected else 'not connected'}",
        f"Temperature   {temperature}",
        f"Focus         {status.focus_steps} steps",
        f"Lit           {', '.join(c.name.lower() for c in status.lit_channels) or 'none'}",
        f"Storage free  {status.storage_free_bytes / 1e9:.2f} GB",
    ]
    return "\n".join(lines)


def models_text(models: Sequence[ModelInfo]) -> str:
    if not models:
        return "no models installed"
    rows = [
        [
            m.model_id,
            "yes" if m.active else "",
            m.slot or "-",
            m.state.name.lower() if m.state is not None else "-",
            f"{m.threshold:.2f}",
            ", ".join(m.materials),
            m.ref.sha256[:12],
        ]
        for m in models
    ]
    return table(["MODEL", "ACTIVE", "SLOT", "STATE", "THRESHOLD", "MATERIALS", "SHA256"], rows)


def result_text(result: ScanResult) -> str:
    verdict = result.verdict.name + (f" ({reason_text(result.reason)})" if result.reason else "")
    lines = [f"{verdict}  score {score(result.score)} (threshold {score(result.threshold)})"]
    if result.summary:
        lines.append(result.summary)
    lines.append(f"scan {result.scan_id}  item {result.item_type}  model {result.model.name} {result.model.version}")
    lines.append("")
    rows = []
    rejected: list[str] = []
    for region in result.regions:
        ok = sum(1 for image in region.images if image.quality.ok)
        bad = len(region.images) - ok
        rows.append(
            [region.region, region.material, score(region.score), f"{ok} ok" + (f", {bad} rejected" if bad else "")]
        )
        for image in region.images:
            if not image.quality.ok:
                issues = ", ".join(issue.code for issue in image.quality.issues) or "rejected"
                hints = "; ".join(image.quality.hints)
                rejected.append(f"  {region.region}  {image.image_id}  {issues}" + (f": {hints}" if hints else ""))
    lines.append(table(["REGION", "MATERIAL", "SCORE", "IMAGES"], rows))
    if rejected:
        lines += ["", "Rejected images", *rejected]
    explained = [(r.region, e) for r in result.regions for e in r.explanations]
    if explained:
        lines += ["", "Why", *(f"  {region}: {text}" for region, text in explained)]
    return "\n".join(lines)


def scan_text(scan: Scan) -> str:
    lines = [
        f"Scan          {scan.scan_id}",
        f"Item type     {scan.item_type}" + (f"  (partner id {scan.partner_item_id})" if scan.partner_item_id else ""),
        f"State         {scan.state.name}" + (f": {scan.error_message}" if scan.error_message else ""),
        f"Created       {scan.create_time.isoformat()}",
    ]
    if scan.label is not None:
        when = f" (set {scan.label_time.isoformat()})" if scan.label_time else ""
        lines.append(f"Label         {scan.label.name}{when}")
    if scan.next_region:
        lines.append(f"Next region   {scan.next_region}")
    lines.append("")
    rows = [[r.region, r.material, f"{r.accepted_images}/{r.min_images}", r.rejected_images] for r in scan.regions]
    lines.append(table(["REGION", "MATERIAL", "ACCEPTED", "REJECTED"], rows))
    if scan.result is not None:
        lines += ["", result_text(scan.result)]
    return "\n".join(lines)


def explanation_text(explanation: ScanExplanation, heatmaps: Sequence[Path], report: Path) -> str:
    """What ``veriscope explain`` wrote: one row per heat-map (``heatmaps`` in the order of the images), then why."""
    lines = [
        f"scan {explanation.scan_id}: {len(heatmaps)} heat-map{'' if len(heatmaps) == 1 else 's'} "
        f"(model {explanation.model.name} {explanation.model.version})",
        "red = counterfeit-like, amber = at the threshold, green = genuine-like, grey hatched = unfamiliar",
        "",
    ]
    rows = []
    for image, path in zip(explanation.images, heatmaps, strict=True):
        scores = [value for row in image.tile_scores for value in row]
        below = sum(1 for value in scores if value < image.score_threshold)
        rows.append(
            [
                str(path),
                image.material,
                f"{image.width_px}x{image.height_px}",
                f"{image.grid_rows}x{image.grid_cols}",
                score(sum(scores) / len(scores)),
                score(min(scores)),
                f"{below}/{len(scores)}",
            ]
        )
    if rows:
        lines.append(table(["FILE", "MATERIAL", "PIXELS", "TILES", "MEAN", "MIN", "BELOW THRESHOLD"], rows))
    else:
        lines.append("no image was analysed, so there is no heat-map")
    lines.append(f"{report}  (tile scores, familiarity and the reasons of each region)")
    explained = [(r.region, e) for r in explanation.regions for e in r.explanations]
    if explained:
        lines += ["", "Why", *(f"  {region}: {text}" for region, text in explained)]
    return "\n".join(lines)


def certificate_saved_text(certificate: ScanCertificate, path: Path) -> str:
    return (
        f"certificate of scan {certificate.scan_id} saved to {path} ({len(certificate.document)} bytes, signed by "
        f"key sha256 {certificate.signing_key_sha256[:16]}…)\n"
        f"check it offline: veriscope verify-certificate {path} --trust UNIT.pem"
    )


def certificate_text(certificate: Certificate) -> str:
    verdict = certificate.verdict.name
    if certificate.reason is not None:
        verdict += f" ({reason_text(certificate.reason)})"
    item = certificate.item_type
    if certificate.partner_item_id is not None:
        item += f", partner item id {certificate.partner_item_id}"
    used = sum(1 for image in certificate.images if image.used)
    accepted = sum(1 for image in certificate.images if image.accepted)
    uploads = sum(1 for image in certificate.images if image.origin.name == "UPLOAD")
    images = f"{len(certificate.images)} ({accepted} accepted, {used} used for the verdict"
    images += f", {uploads} uploaded)" if uploads else ")"
    model = certificate.model
    lines = [
        "VALID certificate of authenticity",
        f"Verdict     {verdict}",
        f"Item        {item}",
        f"Device      {certificate.device_id}",
        f"Time        {certificate.complete_time.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        f"Scan        {certificate.scan_id}",
        f"Score       {certificate.score} (threshold {certificate.threshold})",
        f"Model       {model.name} {model.version}",
        f"Images      {images}",
        f"Signed by   Ed25519 key sha256 {certificate.signing_key_sha256[:16]}… ({certificate.trusted_by})",
        "",
        certificate.statement,
    ]
    return "\n".join(lines)


def scans_text(scans: Sequence[Scan]) -> str:
    if not scans:
        return "no scans"
    rows = [
        [
            s.scan_id,
            _time(s),
            s.item_type,
            s.state.name,
            "" if s.result is None else s.result.verdict.name,
            "" if s.result is None else score(s.result.score),
        ]
        for s in scans
    ]
    return table(["SCAN", "CREATED (UTC)", "ITEM TYPE", "STATE", "VERDICT", "SCORE"], rows)


def scan_summary(scan: Scan) -> dict[str, Any]:
    """The JSON of one row of ``veriscope scans``."""
    result = scan.result
    return {
        "scan_id": scan.scan_id,
        "item_type": scan.item_type,
        "partner_item_id": scan.partner_item_id,
        "state": scan.state.name,
        "verdict": None if result is None else result.verdict.name,
        "reason": None if result is None or result.reason is None else result.reason.name,
        "score": None if result is None else result.score,
        "create_time": scan.to_dict()["create_time"],
        "label": None if scan.label is None else scan.label.name,
    }


def _gains_text(gains: WhiteBalanceGains) -> str:
    return f"{gains.red:.3f} / {gains.green:.3f} / {gains.blue:.3f}"


def calibration_text(calibration: Calibration, *, fresh: bool = False) -> str:
    """The unit's calibration: when and where it was made, and per lighting channel what it corrects."""
    again = "place the white reference target under the lens and run 'veriscope calibrate'"
    if calibration.state is CalibrationState.UNCALIBRATED:
        return f"Not calibrated: captures are not corrected for vignetting or colour.\nTo calibrate, {again}."
    if calibration.state is not CalibrationState.CALIBRATED:
        problem = calibration.problem or "the unit reports no usable calibration"
        return (
            f"Calibration unusable: {problem}\nCaptures are not corrected until the unit is calibrated again: {again}."
        )
    made = "" if calibration.create_time is None else calibration.create_time.strftime("%Y-%m-%d %H:%M:%S UTC, ")
    rows = [
        [
            "-" if c.lighting is None else c.lighting.name.lower(),
            f"{c.vignetting_depth:.0%}",
            f"{1 - c.vignetting_depth:.2f}",
            _gains_text(c.white_balance_gains),
            f"{c.exposure_us} us",
            f"{c.texture:.1%}",
        ]
        for c in calibration.channels
    ]
    now = "is now" if fresh else "is"
    return "\n".join(
        [
            f"Calibrated    {calibration.calibration_id}  ({made}unit {calibration.device_id or '?'}, "
            f"camera {calibration.camera_model or '?'})",
            f"Frames        {calibration.frames} per lighting channel",
            f"Stored        {calibration.storage_path or '?'} (on the unit)",
            "",
            table(["CHANNEL", "VIGNETTING", "CORNERS", "WHITE BALANCE R / G / B", "EXPOSURE", "TEXTURE"], rows),
            "",
            f"Every capture {now} corrected for vignetting and colour; its metadata names calibration "
            f"{calibration.calibration_id}.",
        ]
    )


def placed_text(item: PlacedItem | None) -> str:
    return "the stage is empty" if item is None else f"{item.item_type}  source {item.source}  seed {item.seed}"


def sources_text(materials: Sequence[SimulatedMaterial]) -> str:
    rows = [[m.name, ", ".join(m.sources), ", ".join(m.superfake_sources)] for m in materials]
    return table(["MATERIAL", "SOURCES", "SUPERFAKES"], rows)


# --- Progress ----------------------------------------------------------------------------------------------------


def event_text(event: ScanEvent) -> str:
    """One line describing a scan event, for the progress display."""
    kind, region, scan = event.type, event.region or "", event.scan
    if kind is ScanEventType.SNAPSHOT:
        regions = ", ".join(f"{r.region} x{r.min_images}" for r in scan.regions)
        return f"scan {scan.scan_id}: {scan.item_type} ({regions})"
    if kind is ScanEventType.IMAGE_ACCEPTED:
        progress = next((r for r in scan.regions if r.region == region), None)
        count = f" ({progress.accepted_images}/{progress.min_images})" if progress else ""
        return f"{region}: image accepted{count}"
    if kind is ScanEventType.RETAKE_REQUESTED:
        return f"{region}: retake needed: {event.message}"
    if kind is ScanEventType.IMAGE_REJECTED:
        return f"{region}: image rejected: {event.message}"
    if kind is ScanEventType.RETAKES_EXHAUSTED:
        return f"{region}: still failing after the allowed retakes, moving on: {event.message}"
    if kind is ScanEventType.REGION_COMPLETE:
        return f"{region}: done"
    if kind is ScanEventType.ANALYZING:
        return "analyzing..."
    if kind is ScanEventType.FINISHED:
        result = scan.result
        return "finished" if result is None else f"finished: {result.verdict.name}"
    return event.message or kind.name.lower()


_STICKY = {ScanEventType.RETAKE_REQUESTED, ScanEventType.IMAGE_REJECTED, ScanEventType.RETAKES_EXHAUSTED}


class Progress:
    """Shows scan events on ``stream``: one rewritten live line on a terminal, one plain line per event otherwise.

    On a terminal, quality problems stay on screen while routine steps overwrite each other.
    """

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self._stream = stream
        self._live = live
        self._dirty = False

    def __call__(self, event: ScanEvent) -> None:
        line = event_text(event)
        if not self._live:
            self._stream.write(line + "\n")
        else:
            self._stream.write("\r\x1b[K" + line + ("\n" if event.type in _STICKY else ""))
            self._dirty = event.type not in _STICKY
        self._stream.flush()

    def close(self) -> None:
        """Clear the live line, so what follows starts on a clean line."""
        if self._live and self._dirty:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._dirty = False


# --- Labels and training data ------------------------------------------------------------------------------------


def label_text(scan: Scan) -> str:
    """One line on a labelled scan: its new label beside the verdict the unit reached."""
    verdict = "no verdict" if scan.result is None else f"verdict {scan.result.verdict.name}"
    if scan.label is None:
        return f"scan {scan.scan_id}: label removed ({verdict})"
    return f"scan {scan.scan_id} labelled {scan.label.name} ({verdict})"


def export_summary(summary: ExportSummary) -> dict[str, Any]:
    """The ``veriscope export --json`` object: {out, scans, items, images, skipped}."""
    return {
        "out": str(summary.out),
        "scans": summary.scans,
        "items": summary.items,
        "images": summary.images,
        "skipped": summary.skipped,
    }


def export_text(summary: ExportSummary, since: str | None) -> str:
    """What ``veriscope export`` did, and how to train on it."""
    lines = []
    if summary.scans == 0:
        when = f" since {since}" if since else ""
        lines.append(
            f"nothing to export: no completed scan{when} is labelled (veriscope label SCAN_ID genuine|counterfeit)"
        )
    else:
        lines.append(
            f"exported {summary.scans} labelled scan{'' if summary.scans == 1 else 's'} as {summary.items} "
            f"item{'' if summary.items == 1 else 's'} to {summary.out}: {summary.images} image"
            f"{'' if summary.images == 1 else 's'} written, {summary.skipped} already in place"
        )
    if summary.removed:
        lines.append(f"removed {summary.removed} item{'' if summary.removed == 1 else 's'} whose label changed or went")
    if summary.manifest is not None and summary.items:
        lines.append(f"train on it: make train TRAIN_DATA={summary.out}")
    return "\n".join(lines)


class ExportProgressView:
    """Shows export progress on ``stream``: a rewritten live line on a terminal, a line per scan otherwise."""

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self._stream = stream
        self._live = live
        self._dirty = False
        self._scan = ""

    def __call__(self, progress: ExportProgress) -> None:
        line = (
            f"scan {progress.scans_done + 1}/{progress.scans_total}: {progress.images_written} images written, "
            f"{progress.images_skipped} already in place"
        )
        if self._live:
            self._stream.write("\r\x1b[K" + line)
            self._dirty = True
        elif progress.scan_id != self._scan:
            self._stream.write(line + "\n")
        self._scan = progress.scan_id
        self._stream.flush()

    def close(self) -> None:
        """End the live line, so what follows starts on a clean line."""
        if self._live and self._dirty:
            self._stream.write("\n")
            self._stream.flush()
            self._dirty = False


# --- Capture and preview -----------------------------------------------------------------------------------------


def capture_summary(path: Path, result: CaptureResult) -> dict[str, Any]:
    """The ``veriscope capture --json`` object: {path, quality, settings, metadata, format, size_bytes}."""
    meta = result.metadata
    return {
        "path": str(path),
        "quality": result.quality.to_dict(),
        "settings": {
            "exposure_us": meta.exposure_us,
            "analogue_gain": meta.analogue_gain,
            "lighting": None if meta.lighting is None else meta.lighting.name,
            "led_duty_pct": meta.led_duty_pct,
            "focus_steps": meta.focus_steps,
            "lens_position": meta.lens_position,
        },
        "metadata": meta.to_dict(),
        "format": None if result.format is None else result.format.name,
        "size_bytes": len(result.data),
    }


def capture_text(path: Path, result: CaptureResult) -> str:
    """A few lines on a saved capture: the file, the quality gate's verdict with hints, the settings used."""
    meta, quality = result.metadata, result.quality
    kind = result.format.name if result.format is not None else "image"
    lines = [f"saved {path} ({meta.width_px}x{meta.height_px} {kind}, {len(result.data) / 1e6:.1f} MB)"]
    if quality.ok:
        lines.append("quality: ok")
    else:
        lines.append("quality: FAILED " + ", ".join(issue.code for issue in quality.issues))
        lines += [f"  {hint}" for hint in quality.hints]
    lighting = meta.lighting.name.lower() if meta.lighting is not None else "unknown light"
    lines.append(
        f"settings: {meta.exposure_us} us, gain {meta.analogue_gain:.2f}, {lighting} at {meta.led_duty_pct} %, "
        f"focus {meta.focus_steps} steps"
    )
    if meta.device_id:
        lines.append(f"device: {meta.device_id} ({meta.camera_model})")
    return "\n".join(lines)


def preview_summary(
    directory: Path, files: Sequence[Path], frames: Sequence[PreviewFrame], elapsed_s: float, lighting: str
) -> dict[str, Any]:
    """The ``veriscope preview --json`` object."""
    sequences = [frame.sequence for frame in frames]
    dropped = sum(b - a - 1 for a, b in itertools.pairwise(sequences))
    return {
        "directory": str(directory),
        "frames": len(files),
        "files": [str(path) for path in files],
        "width_px": frames[0].width_px if frames else None,
        "height_px": frames[0].height_px if frames else None,
        "fps": (len(frames) - 1) / elapsed_s if len(frames) > 1 and elapsed_s > 0 else None,
        "dropped": dropped,
        "first_sequence": sequences[0] if sequences else None,
        "last_sequence": sequences[-1] if sequences else None,
        "lighting": lighting,
        "elapsed_s": elapsed_s,
    }


def preview_text(summary: dict[str, Any]) -> str:
    """One line on a finished preview."""
    if not summary["frames"]:
        return f"no preview frames arrived; nothing saved in {summary['directory']}"
    fps = f" at {summary['fps']:.1f} fps" if summary["fps"] is not None else ""
    dropped = f"; {summary['dropped']} dropped on the unit for a slow reader" if summary["dropped"] else ""
    return (
        f"saved {summary['frames']} frames ({summary['width_px']}x{summary['height_px']}) to "
        f"{summary['directory']}{fps}{dropped}"
    )


class PreviewProgress:
    """Shows preview progress on ``stream``: a rewritten live line on a terminal, a line every 10 frames otherwise."""

    def __init__(self, stream: TextIO, total: int, *, live: bool) -> None:
        self._stream = stream
        self._total = total
        self._live = live
        self._dirty = False

    def __call__(self, frame: PreviewFrame, saved: int, elapsed_s: float) -> None:
        fps = (saved - 1) / elapsed_s if saved > 1 and elapsed_s > 0 else 0.0
        line = f"frame {saved}/{self._total}  {fps:4.1f} fps  sharpness {frame.sharpness:.4f}"
        if self._live:
            self._stream.write("\r\x1b[K" + line)
            self._dirty = True
        elif saved % 10 == 0 or saved == self._total:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """End the live line, so what follows starts on a clean line."""
        if self._live and self._dirty:
            self._stream.write("\n")
            self._stream.flush()
            self._dirty = False
