"""Time what a capture costs beyond the camera's own exposure, and how fast the live preview runs in simulation.

Run: ``.venv/bin/python device/bench/bench_capture.py``. Prints timings; asserts nothing.

1. A full-resolution capture (the IMX477's 2028 x 1520 binned mode) on the
   simulated bench: the camera's own capture (the simulator's render stands in
   for the exposure and readout), then what the daemon adds to every frame:
   the flat-field and white-balance calibration (when that module is
   installed), the quality gate, and encoding for storage (PNG). The last
   line is the overhead ratio, their sum over the capture, and its parts:
   ``overhead/capture = 0.xx (calibration a, gate b, PNG c)``. JPEG encoding
   (what a Capture sends on the wire when asked for JPEG) is shown beside it.
2. The live preview: frames per second of ``StreamPreview`` through an
   in-process daemon at two widths, and the per-frame parts (render, JPEG and
   sharpness) that bound it. It runs first, so the overhead line ends the
   report.

Each time is the median of several runs after a warm-up; on a shared machine
run it twice and trust the lower ratio.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from veriscope.device import codec
from veriscope.device.bench import SimBench
from veriscope.device.camera.simulated import SimulatedCamera
from veriscope.device.controller.simulated import SimulatedController
from veriscope.device.imager import Imager
from veriscope.device.pipeline import quality
from veriscope.device.types import CaptureSettings, Lighting, RGBImage
from veriscope.v1 import capture_service_pb2, capture_service_pb2_grpc, simulation_service_pb2
from veriscope.v1 import simulation_service_pb2_grpc as sim_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from device_daemon import InProcessDaemon

SENSOR = (2028, 1520)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and best wall time of ``fn`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), min(times)


def _calibrate(bench: SimBench, imager: Imager) -> Callable[[RGBImage], object] | None:
    """A calibration correction of white-ring frames, made on the bench's white target; None when not installed."""
    try:
        from veriscope.device.pipeline import calibration
    except ImportError:
        return None
    bench.place_white_reference()
    made = calibration.calibrate(
        lambda lighting, params: imager.auto_expose(lighting, params, corrected=False),
        imager.uncorrected_frames,
        [Lighting.WHITE_RING],
        frames=2,
        params=imager.exposure_params,
        device_id="bench",
        camera_model=imager.camera.info.model,
    )
    return lambda pixels: made.apply(pixels, Lighting.WHITE_RING)


def capture_overhead(repeat: int) -> None:
    bench = SimBench(sensor_width_px=SENSOR[0], sensor_height_px=SENSOR[1])
    controller = SimulatedController(bench)
    camera = SimulatedCamera(bench)
    imager = Imager(camera, controller)
    correct = _calibrate(bench, imager)
    bench.place("tote-classic", "genuine", 1)
    imager.autofocus()
    controller.light_only(Lighting.WHITE_RING, 60)
    settings = CaptureSettings(exposure_us=8000, analogue_gain=1.0, led_duty_pct=60)
    pixels = camera.capture(settings).pixels
    controller.light_only(Lighting.OFF, 0)

    capture_ms, _ = timed(lambda: camera.capture(settings), repeat)
    gate_ms, _ = timed(lambda: quality.assess(pixels, lighting="white_ring"), 3 * repeat)
    png_ms, _ = timed(lambda: codec.encode(pixels, codec.ImageFormat.PNG), repeat)
    jpeg_ms, _ = timed(lambda: codec.encode(pixels, codec.ImageFormat.JPEG, jpeg_quality=92), repeat)
    calibration_ms = timed(lambda: correct(pixels), repeat)[0] if correct is not None else None
    report = quality.assess(pixels, lighting="white_ring")

    h, w = pixels.shape[:2]
    stored = codec.encode(pixels, codec.ImageFormat.PNG)
    print(f"full-resolution capture, {w} x {h} (gate: {'ok' if report.ok else report.issue_codes})")
    print(f"  camera capture (simulated render)   {capture_ms:8.1f} ms")
    calibration_text = f"{calibration_ms:8.1f} ms" if calibration_ms is not None else "     n/a (not installed)"
    print(f"  calibration correction              {calibration_text}")
    print(f"  quality gate                        {gate_ms:8.1f} ms")
    print(
        f"  PNG encoding (stored scan image)    {png_ms:8.1f} ms  "
        f"({len(stored) / 1e6:.1f} MB, {len(stored) / pixels.nbytes:.0%} of raw)"
    )
    print(f"  JPEG encoding, q92 (on the wire)    {jpeg_ms:8.1f} ms  (not stored; for comparison)")
    calibration_ratio = (calibration_ms or 0.0) / capture_ms
    gate_ratio, png_ratio = gate_ms / capture_ms, png_ms / capture_ms
    total = calibration_ratio + gate_ratio + png_ratio
    print(
        f"overhead/capture = {total:.2f} (calibration {calibration_ratio:.2f}, gate {gate_ratio:.2f}, "
        f"PNG {png_ratio:.2f})"
    )


def preview_parts(width: int, repeat: int) -> float:
    bench = SimBench(sensor_width_px=SENSOR[0], sensor_height_px=SENSOR[1])
    controller = SimulatedController(bench)
    imager = Imager(SimulatedCamera(bench), controller)
    bench.place("tote-classic", "genuine", 1)
    imager.autofocus()
    frame = imager.preview(width)
    render_ms, _ = timed(lambda: imager.preview(width), repeat)
    jpeg_ms, _ = timed(lambda: codec.encode(frame.pixels, codec.ImageFormat.JPEG, jpeg_quality=75), repeat)
    sharp_ms, _ = timed(lambda: quality.sharpness(frame.pixels), repeat)
    total = render_ms + jpeg_ms + sharp_ms
    print(
        f"  {width:4d} px parts: render {render_ms:6.1f} ms, JPEG {jpeg_ms:5.1f} ms, sharpness {sharp_ms:5.1f} ms "
        f"-> at most {1000.0 / total:5.1f} fps"
    )
    return total


def preview_rate(widths: tuple[int, ...], frames: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        unit = InProcessDaemon(Path(tmp) / "data", camera=SENSOR)
        try:
            item = simulation_service_pb2.PlacedItem(item_type="tote-classic", source="genuine", seed=1)
            sim_grpc.SimulationServiceStub(unit.channel).PlaceItem(simulation_service_pb2.PlaceItemRequest(item=item))
            stub = capture_service_pb2_grpc.CaptureServiceStub(unit.channel)
            stub.Autofocus(capture_service_pb2.AutofocusRequest())
            for width in widths:
                request = capture_service_pb2.StreamPreviewRequest(max_fps=30, width=width, max_frames=frames)
                stamps, sequences = [], []
                for frame in stub.StreamPreview(request):
                    stamps.append(time.perf_counter())
                    sequences.append(frame.sequence)
                fps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
                skipped = sequences[-1] - sequences[0] + 1 - len(sequences)
                print(
                    f"  {width:4d} px StreamPreview: {fps:5.1f} fps over {len(stamps)} frames "
                    f"(asked for 30; {skipped} slots skipped)"
                )
        finally:
            unit.close()


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print("live preview, simulated 2028 x 1520 sensor")
    for width in (320, 640):
        preview_parts(width, 3 * repeat)
    preview_rate((320, 640), 40)
    # Last, so the overhead line ends the report.
    capture_overhead(repeat)


if __name__ == "__main__":
    main()
