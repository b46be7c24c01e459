"""The ``veriscope`` command line, run in-process against the scripted unit: output contracts, errors, exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from sdk_fakes import ITEM_TYPE, JPEG_MAGIC, FakeUnit, blurry_report, fake_heatmap_png, png_bytes

from veriscope.sdk import ScanEvent, ScanEventType
from veriscope.sdk._cli import main
from veriscope.sdk._cli_output import Progress
from veriscope.sdk._client import Client


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("veriscope: error: ")
    return lines[0]


# --- Contracts ---------------------------------------------------------------------------------------------------


def test_info_json_contract(capsys: pytest.CaptureFixture[str], address: str) -> None:
    info = run_json(capsys, "--device", address, "info", "--json")
    assert info["device_id"] == "VS-0001" and info["software_version"] == "0.1.0"
    assert info["model"]["name"] == "veriscope-demo" and info["model"]["version"] == "1.2.0"
    assert {"name": ITEM_TYPE, "regions": ["canvas", "handle"]}.items() <= info["item_types"][0].items()
    assert info["item_types"][0]["region_details"][0]["min_images"] == 2
    assert all(isinstance(r, str) for t in info["item_types"] for r in t["regions"])


def test_json_is_accepted_before_the_command_too(capsys: pytest.CaptureFixture[str], address: str) -> None:
    assert run_json(capsys, "--json", "--device", address, "info")["device_id"] == "VS-0001"
    assert run_json(capsys, "info", "--device", address, "--json")["device_id"] == "VS-0001"


def test_scan_json_contract_with_a_retake(capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit) -> None:
    unit.capture_quality.append(blurry_report())
    code, out, err = run(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "--json")
    assert code == 0, err
    result = json.loads(out)  # stdout holds exactly one JSON object, no progress
    assert result["scan_id"] == "scan-0001" and result["item_type"] == ITEM_TYPE
    assert result["verdict"] == "AUTHENTIC" and result["reason"] is None
    assert 0 <= result["score"] <= 1
    assert {"name": "veriscope-demo", "version": "1.2.0"}.items() <= result["model"].items()
    canvas = result["regions"][0]
    assert canvas["region"] == "canvas" and canvas["score"] == pytest.approx(0.9)
    first = canvas["images"][0]
    assert first["image_id"] == "img-1" and first["score"] is None
    assert first["quality"]["ok"] is False and first["quality"]["issues"] == ["out_of_focus"]
    assert canvas["images"][1]["quality"] == {**canvas["images"][1]["quality"], "ok": True, "issues": []}
    # Progress went to stderr, one plain line per event (stderr is not a terminal here).
    assert "canvas: retake needed: Press the scanner flat and refocus" in err
    assert "finished: AUTHENTIC" in err


def test_scan_json_reason_when_retakes_run_out(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit
) -> None:
    unit.capture_quality.extend([blurry_report()] * 2)
    result = run_json(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "--max-retakes", "1", "--json")
    assert result["verdict"] == "UNVERIFIED" and result["reason"] == "INSUFFICIENT_QUALITY"


def test_scan_quiet_and_human_output(capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit) -> None:
    unit.capture_quality.append(blurry_report())
    code, out, err = run(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "-q")
    assert code == 0 and err == ""
    assert out.startswith("AUTHENTIC  score 0.93 (threshold 0.80)")
    assert "canvas  img-1  out_of_focus: Press the scanner flat and refocus" in out


def test_analyze_json_contract(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, tmp_path: Path
) -> None:
    canvas1, canvas2, handle = tmp_path / "c1.png", tmp_path / "c2.png", tmp_path / "h.jpg"
    canvas1.write_bytes(png_bytes(3_000_000))
    canvas2.write_bytes(png_bytes(1000))
    handle.write_bytes(JPEG_MAGIC + b"x" * 500)
    result = run_json(
        capsys,
        "--device",
        address,
        "analyze",
        "--item-type",
        ITEM_TYPE,
        "--image",
        f"canvas={canvas1}",
        "--image",
        f"canvas={canvas2}",
        "--image",
        f"handle={handle}",
        "--json",
    )
    assert result["verdict"] == "AUTHENTIC" and result["reason"] is None
    assert [len(r["images"]) for r in result["regions"]] == [2, 1]
    assert [u.data for u in unit.uploads] == [canvas1.read_bytes(), canvas2.read_bytes(), handle.read_bytes()]


def test_scans_json_lists_scans_and_pages(capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit) -> None:
    for _ in range(3):
        run_json(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "--json", "-q")
    scans = run_json(capsys, "--device", address, "scans", "--json")
    assert [s["scan_id"] for s in scans] == ["scan-0003", "scan-0002", "scan-0001"]
    assert scans[0].items() >= {"state": "COMPLETED", "verdict": "AUTHENTIC", "item_type": ITEM_TYPE}.items()
    assert scans[0]["create_time"] == "2026-05-28T20:26:42.500000Z"
    code, out, err = run(capsys, "--device", address, "scans", "--page-size", "2", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    assert err == "veriscope: more scans: veriscope scans --page-token 2\n"
    assert [s["scan_id"] for s in run_json(capsys, "--device", address, "scans", "--page-token", "2", "--json")] == [
        "scan-0001"
    ]
    assert len(run_json(capsys, "--device", address, "scans", "--all", "--page-size", "1", "--json")) == 3


def test_scan_get_and_cancel(capsys: pytest.CaptureFixture[str], address: str) -> None:
    with Client(address) as client:
        scan_id = client.create_scan(ITEM_TYPE).scan_id
    shown = run_json(capsys, "--device", address, "get", scan_id, "--json")
    assert shown["scan_id"] == scan_id and shown["state"] == "IN_PROGRESS" and shown["result"] is None
    assert run_json(capsys, "--device", address, "scan-get", f"scans/{scan_id}", "--json")["scan_id"] == scan_id
    code, out, _ = run(capsys, "--device", address, "cancel", scan_id)
    assert code == 0 and out == f"scan {scan_id} cancelled\n"


def test_status_models_and_simulation(capsys: pytest.CaptureFixture[str], address: str) -> None:
    status = run_json(capsys, "--device", address, "status", "--json")
    assert status["state"] == "BUSY" and status["board_temperature_c"] is None
    models = run_json(capsys, "--device", address, "models", "--json")
    assert [m["model_id"] for m in models] == ["veriscope-demo@1.2.0", "veriscope-demo@1.1.0"]
    placed = run_json(
        capsys,
        "--device",
        address,
        "sim",
        "place",
        "--item-type",
        ITEM_TYPE,
        "--source",
        "counterfeit-a",
        "--seed",
        "7",
        "--json",
    )
    assert placed == {"item_type": ITEM_TYPE, "source": "counterfeit-a", "seed": 7}
    assert run_json(capsys, "--device", address, "sim", "get", "--json") == placed
    assert run_json(capsys, "--device", address, "sim", "clear", "--json") == {"cleared": True}
    assert run_json(capsys, "--device", address, "sim", "get", "--json") is None
    sources = run_json(capsys, "--device", address, "sim", "sources", "--json")
    assert sources[0]["superfake_sources"] == ["counterfeit-b"]


def test_human_output_of_every_read_command(capsys: pytest.CaptureFixture[str], address: str) -> None:
    for argv, expected in [
        (["info"], "tote-classic  Classic tote"),
        (["status"], "Active scan   scan-0042"),
        (["models"], "veriscope-demo@1.2.0  yes"),
        (["scans"], "no scans"),
        (["sim", "get"], "the stage is empty"),
        (["sim", "sources"], "coated-canvas  genuine, counterfeit-a, counterfeit-b  counterfeit-b"),
    ]:
        code, out, err = run(capsys, "--device", address, *argv)
        assert code == 0 and err == "", argv
        assert expected in out, (argv, out)


def test_explain_writes_one_png_per_image_and_the_explanation(
    capsys: pytest.CaptureFixture[str], address: str, tmp_path: Path
) -> None:
    image_module = pytest.importorskip("PIL.Image")
    scan_id = run_json(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "--json", "-q")["scan_id"]
    out_dir = tmp_path / "why" / "nested"
    code, out, err = run(capsys, "--device", address, "explain", f"scans/{scan_id}", "--out", str(out_dir))
    assert (code, err) == (0, "")
    pngs = ["canvas-img-1.png", "canvas-img-2.png", "handle-img-3.png"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([*pngs, "explanation.json"])
    for name in pngs:
        assert (out_dir / name).read_bytes() == fake_heatmap_png()
        with image_module.open(out_dir / name) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (60, 40))
            low, high = image.getpixel((10, 10)), image.getpixel((50, 10))  # tiles scoring 0.1 and 0.9
        assert low[0] > low[1] and high[1] > high[0]
    report = json.loads((out_dir / "explanation.json").read_text())
    assert report["scan_id"] == scan_id and report["model"]["name"] == "veriscope-demo"
    assert [i["file"] for i in report["images"]] == pngs
    assert [i["region"] for i in report["images"]] == ["canvas", "canvas", "handle"]
    assert [v for row in report["images"][0]["tile_scores"] for v in row] == pytest.approx(
        [0.1, 0.5, 0.9, 0.95, 0.3, 0.8]
    )
    assert len(report["images"][0]["tile_familiarity"]) == 2
    assert report["regions"][1]["explanations"] == ["leather grain matches genuine references"]
    for name in [*pngs, "explanation.json"]:
        assert str(out_dir / name) in out
    assert "handle: leather grain matches genuine references" in out
    # Again into the same directory, with --json: the files are replaced and listed.
    data = run_json(capsys, "--device", address, "explain", scan_id, "--out", str(out_dir), "--json")
    assert data == {
        "scan_id": scan_id,
        "directory": str(out_dir),
        "heatmaps": [str(out_dir / name) for name in pngs],
        "explanation": str(out_dir / "explanation.json"),
    }


def test_explain_of_a_scan_that_is_not_completed_exits_1_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], address: str, tmp_path: Path
) -> None:
    with Client(address) as client:
        scan = client.create_scan(ITEM_TYPE)
    out_dir = tmp_path / "why"
    code, out, err = run(capsys, "--device", address, "explain", scan.scan_id, "--out", str(out_dir))
    assert (code, out) == (1, "")
    assert "FAILED_PRECONDITION" in one_error_line(err) and "only COMPLETED scans" in err
    code, out, err = run(capsys, "--device", address, "explain", "nosuchscan", "--out", str(out_dir))
    assert (code, out) == (1, "") and "NOT_FOUND" in one_error_line(err)
    assert not out_dir.exists()


def test_explain_into_a_path_that_is_a_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], address: str, tmp_path: Path
) -> None:
    scan_id = run_json(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "--json", "-q")["scan_id"]
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a directory")
    code, out, err = run(capsys, "--device", address, "explain", scan_id, "--out", str(blocker))
    assert (code, out) == (2, "") and str(blocker) in one_error_line(err)


def test_explain_of_an_unreachable_device_exits_3(
    capsys: pytest.CaptureFixture[str], unused_address: str, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "--device", unused_address, "explain", "abc", "--out", str(tmp_path / "why"))
    assert (code, out) == (3, "") and "UNAVAILABLE" in one_error_line(err)
    assert not (tmp_path / "why").exists()


def test_device_defaults_to_the_environment(
    capsys: pytest.CaptureFixture[str], address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERISCOPE_DEVICE", address)
    assert run_json(capsys, "info", "--json")["device_id"] == "VS-0001"


# --- Errors and exit codes ---------------------------------------------------------------------------------------


def test_not_found_is_one_line_with_the_status_and_exit_1(capsys: pytest.CaptureFixture[str], address: str) -> None:
    code, out, err = run(capsys, "--device", address, "scan-get", "abc", "--json")
    assert (code, out) == (1, "")
    assert err == 'veriscope: error: NOT_FOUND: scan "abc" not found\n'


def test_device_errors_exit_1_and_name_the_status(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit
) -> None:
    unit.faults["PlaceItem"] = (
        grpc.StatusCode.FAILED_PRECONDITION,
        "the unit is not simulating\nstart it with --simulate",
    )
    code, _, err = run(capsys, "--device", address, "sim", "place", "--item-type", ITEM_TYPE)
    assert code == 1
    assert (
        one_error_line(err)
        == "veriscope: error: FAILED_PRECONDITION: the unit is not simulating start it with --simulate"
    )


def test_unreachable_device_exits_3(capsys: pytest.CaptureFixture[str], unused_address: str) -> None:
    code, out, err = run(capsys, "--device", unused_address, "info", "--json")
    assert (code, out) == (3, "")
    line = one_error_line(err)
    assert "UNAVAILABLE" in line and unused_address in line


def test_deadline_exits_3(capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit) -> None:
    unit.delays_s["GetDevice"] = 30
    code, _, err = run(capsys, "--device", address, "--timeout", "0.05", "info")
    assert code == 3 and "DEADLINE_EXCEEDED" in one_error_line(err)


def test_a_failed_scan_prints_progress_then_one_error_line(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit
) -> None:
    unit.faults["CompleteScan"] = (grpc.StatusCode.INTERNAL, "inference failed")
    code, out, err = run(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "--json")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == "veriscope: error: INTERNAL: inference failed"
    assert sum(line.startswith("veriscope: error:") for line in err.splitlines()) == 1
    assert unit.calls[-1] == "CancelScan"


def test_interrupt_exits_130(capsys: pytest.CaptureFixture[str], address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "scan", interrupted)
    code, _, err = run(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE)
    assert code == 130 and one_error_line(err) == "veriscope: error: interrupted"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["scan"], "the following arguments are required: --item-type"),
        (["--timeout", "-1", "info"], "argument --timeout: must be a finite number of seconds > 0"),
        (["--timeout", "soon", "info"], "argument --timeout: expected a number of seconds"),
        (["analyze", "--item-type", ITEM_TYPE, "--image", "canvas.png"], "argument --image: expected REGION=PATH"),
        (
            ["analyze", "--item-type", ITEM_TYPE, "--image", "canvas=/no/such.png"],
            "argument --image: '/no/such.png' does not exist",
        ),
        (["analyze", "--item-type", ITEM_TYPE, "--image", "=x.png"], "argument --image: expected REGION=PATH"),
        (["get", "a/b"], "argument SCAN_ID: SCAN_ID must be"),
        (["explain", "a/b", "--out", "why"], "argument SCAN_ID: SCAN_ID must be"),
        (["explain", "abc"], "the following arguments are required: --out"),
        (["scans", "--page-size", "0"], "argument --page-size: must be 1..1000"),
        (["sim", "place", "--item-type", ITEM_TYPE, "--seed", "-3"], "argument --seed: must be 0.."),
        (["scan", "--item-type", "tote classic"], "argument --item-type: must not contain whitespace"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], unit: FakeUnit, argv: list[str], expected: str
) -> None:
    code, out, err = run(capsys, "--device", "127.0.0.1:1", *argv)
    assert (code, out) == (2, "")
    assert expected in one_error_line(err)


def test_analyze_of_a_file_that_is_not_an_image_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    code, _, err = run(capsys, "--device", address, "analyze", "--item-type", ITEM_TYPE, "--image", f"canvas={text}")
    assert code == 2 and "neither PNG nor JPEG" in one_error_line(err)
    assert unit.calls == []


def test_help_teaches_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "exit codes:" in out and "examples:" in out and "3    the device is unreachable" in out
    for command in [
        "info",
        "status",
        "models",
        "scan",
        "analyze",
        "scans",
        "scan-get",
        "get",
        "explain",
        "cancel",
        "sim",
    ]:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "examples:" in out, command
    for command in ["place", "get", "clear", "sources"]:
        code, out, _ = run(capsys, "sim", command, "--help")
        assert code == 0 and "examples:" in out and "veriscope sim" in out, command


# --- Progress display --------------------------------------------------------------------------------------------


def _event(kind: ScanEventType, address: str) -> ScanEvent:
    with Client(address) as client:
        scan = client.create_scan(ITEM_TYPE)
    return ScanEvent(type=kind, scan=scan, region="canvas", message="Press the scanner flat and refocus")


def test_progress_rewrites_one_line_on_a_terminal_and_keeps_problems(address: str) -> None:
    stream = io.StringIO()
    progress = Progress(stream, live=True)
    progress(_event(ScanEventType.CAPTURING, address))
    progress(_event(ScanEventType.RETAKE_REQUESTED, address))
    progress(_event(ScanEventType.IMAGE_ACCEPTED, address))
    progress.close()
    text = stream.getvalue()
    assert text.count("\r\x1b[K") == 4 and text.count("\n") == 1
    assert "\r\x1b[Kcanvas: retake needed: Press the scanner flat and refocus\n" in text


def test_interactive_scan_waits_for_enter_before_each_capture(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n" * 3))
    code, out, err = run(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "--interactive", "--json")
    assert code == 0 and json.loads(out)["verdict"] == "AUTHENTIC"
    assert err.count("place the scanner on canvas, then press Enter") == 2
    assert err.count("place the scanner on handle, then press Enter") == 1


def test_interactive_scan_without_input_cancels_and_exits_2(
    capsys: pytest.CaptureFixture[str], address: str, unit: FakeUnit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "--device", address, "scan", "--item-type", ITEM_TYPE, "-i", "-q")
    assert code == 2 and err.splitlines()[-1] == "veriscope: error: --interactive needs a terminal or input on stdin"
    assert unit.calls == ["CreateScan", "CancelScan"]
