"""End to end: the daemon in its own process, driven through the CLI and both SDK clients."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from veriscope.device import codec
from veriscope.device.launch import DaemonProcess
from veriscope.device.specimen import imaging
from veriscope.device.specimen.surface import VirtualItem
from veriscope.device.types import Lighting
from veriscope.sdk import AsyncClient, Client, InvalidArgumentError, Reason, Verdict

CLI = str(Path(sys.executable).with_name("veriscope"))
ITEM = "tote-classic"
REGIONS = ["canvas", "trim", "lining"]


def cli(unit: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "--device", unit.address, *args], capture_output=True, text=True, timeout=300)


def cli_json(unit: DaemonProcess, *args: str) -> dict:
    done = cli(unit, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check_result_shape(result: dict, item_type: str) -> None:
    assert set(result) >= {"scan_id", "item_type", "verdict", "reason", "score", "model", "regions"}
    assert result["item_type"] == item_type
    assert result["verdict"] in ("AUTHENTIC", "UNVERIFIED")
    if result["verdict"] == "AUTHENTIC":
        assert result["reason"] is None
    else:
        assert result["reason"] in (
            "COUNTERFEIT_INDICATORS",
            "UNFAMILIAR_MATERIAL",
            "INSUFFICIENT_QUALITY",
            "INSUFFICIENT_COVERAGE",
        )
    assert 0.0 <= result["score"] <= 1.0
    assert set(result["model"]) >= {"name", "version"}
    for region in result["regions"]:
        assert set(region) >= {"region", "score", "images"}
        for image in region["images"]:
            assert set(image) >= {"image_id", "score", "quality"}
            assert isinstance(image["quality"]["ok"], bool)
            assert all(isinstance(i, str) for i in image["quality"]["issues"])


def test_info_lists_item_types_and_versions(sim_daemon: DaemonProcess) -> None:
    info = cli_json(sim_daemon, "info")
    tote = next(t for t in info["item_types"] if t["name"] == ITEM)
    assert tote["regions"] == REGIONS
    assert info["device_id"].startswith("VS-SIM-")
    assert info["software_version"]
    assert info["model"]["name"] == "veriscope-demo"


def test_cli_scans_genuine_and_counterfeit(sim_daemon: DaemonProcess, tmp_path: Path) -> None:
    done = cli(sim_daemon, "sim", "place", "--item-type", ITEM, "--source", "genuine", "--seed", "101")
    assert done.returncode == 0, done.stderr
    genuine = cli_json(sim_daemon, "scan", "--item-type", ITEM)
    check_result_shape(genuine, ITEM)
    assert [r["region"] for r in genuine["regions"]] == REGIONS
    # Every region was captured in focus and judged as its own material.
    assert genuine["reason"] in (None, "COUNTERFEIT_INDICATORS"), genuine
    assert all(
        image["quality"]["ok"] for r in genuine["regions"] for image in r["images"] if image["score"] is not None
    )

    done = cli(sim_daemon, "sim", "place", "--item-type", ITEM, "--source", "counterfeit-a", "--seed", "101")
    assert done.returncode == 0, done.stderr
    fake = cli_json(sim_daemon, "scan", "--item-type", ITEM)
    check_result_shape(fake, ITEM)
    assert fake["verdict"] == "UNVERIFIED"
    assert fake["reason"] == "COUNTERFEIT_INDICATORS"
    # The model, not the test, tells them apart: a blatant fake scores far below the genuine item.
    assert fake["score"] < genuine["score"] - 0.3, (fake["score"], genuine["score"])

    listed = cli_json(sim_daemon, "scans")
    ids = [s["scan_id"] for s in (listed["scans"] if isinstance(listed, dict) else listed)]
    assert genuine["scan_id"] in ids and fake["scan_id"] in ids

    # The heat-maps of the counterfeit are red where its tiles score below the threshold.
    written = cli_json(sim_daemon, "explain", f"scans/{fake['scan_id']}", "--out", str(tmp_path / "why"))
    report = json.loads(Path(written["explanation"]).read_text())
    analysed = [i["image_id"] for r in fake["regions"] for i in r["images"] if i["score"] is not None]
    assert sorted(i["image_id"] for i in report["images"]) == sorted(analysed)
    assert [r["explanations"] for r in report["regions"]] == [r["explanations"] for r in fake["regions"]]
    reds = 0
    for image, path in zip(report["images"], written["heatmaps"], strict=True):
        assert Path(path).name == f"{image['region']}-{image['image_id']}.png"
        with Image.open(path) as heatmap:
            assert heatmap.size == (image["width_px"], image["height_px"])
            pixels = np.asarray(heatmap.convert("RGB")).astype(int)
        for r, y in enumerate(image["row_y_px"]):
            for c, x in enumerate(image["column_x_px"]):
                if image["tile_scores"][r][c] < image["score_threshold"] / 2 and (
                    image["tile_familiarity"][r][c] >= image["familiarity_threshold"]
                ):
                    red, green, _ = pixels[y + image["tile_px"] // 2, x + image["tile_px"] // 2]
                    assert red > green + 30
                    reds += 1
    assert reds > 0


def test_sync_client_scan(sim_daemon: DaemonProcess) -> None:
    with Client(sim_daemon.address) as client:
        client.place_item("wallet-compact", "genuine", 12)
        genuine = client.scan("wallet-compact")
        client.place_item(ITEM, "counterfeit-b", 7)
        result = client.scan(ITEM)
    assert genuine.verdict is Verdict.AUTHENTIC, genuine
    assert genuine.reason is None
    assert genuine.certificate is not None and genuine.certificate.scan_id == genuine.scan_id
    assert [r.region for r in genuine.regions] == ["canvas", "interior"]
    assert result.verdict is Verdict.UNVERIFIED
    assert [r.region for r in result.regions] == REGIONS
    assert all(image.quality.ok for r in result.regions for image in r.images if image.score is not None)


def test_async_client_scan(sim_daemon: DaemonProcess) -> None:
    async def run() -> None:
        async with AsyncClient(sim_daemon.address) as client:
            await client.place_item(ITEM, "genuine", 8)
            result = await client.scan(ITEM)
            assert result.reason is not Reason.UNFAMILIAR_MATERIAL, result
            assert [r.region for r in result.regions] == REGIONS
            again = await client.get_scan(result.scan_id)
            assert again.result is not None and again.result.score == pytest.approx(result.score)

    asyncio.run(run())


def _render(item: VirtualItem, region: str, seed: int, width: int | None = None, sensor: tuple[int, int] | None = None):
    rng = np.random.default_rng(seed)
    optics = (
        imaging.Optics() if sensor is None else imaging.Optics(sensor_width_px=sensor[0], sensor_height_px=sensor[1])
    )
    pose = imaging.good_pose(rng)
    return imaging.render(
        item.surface(region),
        pose,
        duties={Lighting.WHITE_RING: 60},
        exposure_us=8000,
        analogue_gain=1.0,
        focus_steps=imaging.in_focus_steps(pose, optics),
        rng=rng,
        optics=optics,
        width=width,
    )


def test_cli_analyze_uploaded_files(sim_daemon: DaemonProcess, tmp_path: Path) -> None:
    item = VirtualItem(ITEM, "genuine", 4242)
    args: list[str] = []
    for region in REGIONS:
        for k in range(2):
            path = tmp_path / f"{region}-{k}.{'png' if k == 0 else 'jpg'}"
            fmt = codec.ImageFormat.PNG if k == 0 else codec.ImageFormat.JPEG
            path.write_bytes(codec.encode(_render(item, region, k), fmt))
            args += ["--image", f"{region}={path}"]
    result = cli_json(sim_daemon, "analyze", "--item-type", ITEM, *args)
    check_result_shape(result, ITEM)
    assert [len(r["images"]) for r in result["regions"]] == [2, 2, 2]
    assert result["reason"] in (None, "COUNTERFEIT_INDICATORS"), result
    assert all(r["score"] is not None for r in result["regions"])


def test_analyze_twelve_megapixel_frames_and_blank_frames(sim_daemon: DaemonProcess) -> None:
    item = VirtualItem(ITEM, "genuine", 99)
    big = codec.encode(_render(item, "canvas", 1, sensor=(4056, 3040)), codec.ImageFormat.PNG)
    assert len(big) > 4 * 1024 * 1024  # larger than gRPC's default message limit
    blank = codec.encode(np.full((1520, 2028, 3), 3, dtype=np.uint8), codec.ImageFormat.PNG)
    with Client(sim_daemon.address) as client:
        result = client.analyze(ITEM, [("canvas", big), ("canvas", blank), ("trim", blank)])
    assert result.verdict is Verdict.UNVERIFIED
    assert result.reason in (Reason.INSUFFICIENT_QUALITY, Reason.INSUFFICIENT_COVERAGE)
    canvas = result.regions[0]
    assert canvas.images[0].quality.ok, canvas.images[0].quality
    assert "underexposed" in [i.code for i in canvas.images[1].quality.issues]


def test_errors_are_status_codes_with_one_line(sim_daemon: DaemonProcess) -> None:
    done = cli(sim_daemon, "scan", "--item-type", "handbag-unknown", "--json")
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "INVALID_ARGUMENT" in lines[0] and "handbag-unknown" in lines[0]
    with Client(sim_daemon.address) as client, pytest.raises(InvalidArgumentError):
        client.place_item(ITEM, "counterfeit-z", 1)


def test_health_and_reflection(sim_daemon: DaemonProcess) -> None:
    with grpc.insecure_channel(sim_daemon.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"veriscope.v1.ScanService", "veriscope.v1.SimulationService", "grpc.health.v1.Health"} <= names


def test_sigterm_drains_in_flight_rpcs(tmp_path: Path) -> None:
    from veriscope.device.launch import spawn_daemon

    unit = spawn_daemon(tmp_path / "data")
    try:
        with Client(unit.address, timeout_s=120) as client:
            client.place_item(ITEM, "genuine", 5)
            outcome: dict[str, object] = {}

            def focus() -> None:
                try:
                    outcome["result"] = client.autofocus()
                except Exception as exc:  # recorded for the assertion below
                    outcome["error"] = exc

            worker = threading.Thread(target=focus)
            worker.start()
            time.sleep(1.0)  # the sweep takes several seconds; stop the daemon in the middle of it
            unit.process.send_signal(signal.SIGTERM)
            worker.join(60)
        assert "error" not in outcome, outcome
        assert outcome["result"].converged  # type: ignore[attr-defined]
    finally:
        code = unit.stop()
    assert code == 0
    assert any("draining" in line for line in unit.output)


def test_sigterm_the_moment_the_address_is_printed_still_exits_0(tmp_path: Path) -> None:
    # Supervisors and scripts wait for "serving on" and may stop the daemon at once: by then SIGTERM must be
    # handled (drain, exit 0), not fall to the default action that kills the process.
    from veriscope.device.launch import spawn_daemon

    for k in range(3):
        unit = spawn_daemon(tmp_path / f"data{k}")
        assert unit.stop() == 0, "".join(unit.output)
