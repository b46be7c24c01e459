"""The simulated bench, camera and controller behave like the real parts: autofocus converges on them."""

from __future__ import annotations

import pytest

from veriscope.device.bench import SimBench
from veriscope.device.camera.simulated import SimulatedCamera
from veriscope.device.controller.simulated import SimulatedController
from veriscope.device.errors import InvalidArgument
from veriscope.device.imager import Imager
from veriscope.device.types import CaptureSettings, Lighting


@pytest.fixture
def rig() -> tuple[SimBench, SimulatedController, Imager]:
    bench = SimBench(sensor_width_px=1014, sensor_height_px=760)
    controller = SimulatedController(bench)
    return bench, controller, Imager(SimulatedCamera(bench), controller)


@pytest.mark.parametrize(
    ("source", "region"), [("genuine", "canvas"), ("counterfeit-d", "trim"), ("genuine", "lining")]
)
def test_autofocus_reaches_the_sharpest_plane_in_bounded_steps(rig, source: str, region: str) -> None:
    bench, controller, imager = rig
    bench.place("tote-classic", source, 5)
    bench.present(region)
    controller.move_focus(0)
    result = imager.autofocus(max_steps=40)
    assert result.converged
    assert abs(result.best_position - bench.in_focus_steps()) <= 2
    assert result.steps_taken <= 40
    assert controller.focus_position() == result.best_position
    # The focus curve has its peak where the search stopped, and falls off away from it.
    far = [s.sharpness for s in result.curve if abs(s.position - result.best_position) > 60]
    assert max(far) < 0.5 * result.best_sharpness


def test_refine_follows_a_new_spot(rig) -> None:
    bench, _controller, imager = rig
    bench.place("tote-classic", "genuine", 9)
    imager.autofocus()
    bench.present("canvas")
    result = imager.autofocus(refine=True)
    assert result.steps_taken <= 12
    assert abs(result.best_position - bench.in_focus_steps()) <= 2


def test_quality_gate_on_simulated_captures(rig) -> None:
    bench, controller, imager = rig
    bench.place("tote-classic", "genuine", 3)
    imager.autofocus()
    sharp = imager.capture(CaptureSettings())
    assert sharp.quality.ok, sharp.quality.issues
    controller.move_focus(int(bench.in_focus_steps()) + 60)
    assert "out_of_focus" in imager.capture(CaptureSettings()).quality.issue_codes
    controller.move_focus(round(bench.in_focus_steps()))
    assert "underexposed" in imager.capture(CaptureSettings(exposure_us=300)).quality.issue_codes
    assert "overexposed" in imager.capture(CaptureSettings(exposure_us=60000, analogue_gain=4.0)).quality.issue_codes


def test_lighting_reaches_the_camera(rig) -> None:
    bench, controller, imager = rig
    bench.place("tote-classic", "genuine", 3)
    imager.autofocus()
    ring = imager.capture(CaptureSettings(lighting=Lighting.WHITE_RING)).frame
    dark = imager.capture(CaptureSettings(lighting=Lighting.OFF)).frame
    assert controller.leds() == {Lighting.WHITE_RING: 0, Lighting.RAKING: 0, Lighting.UV: 0}
    assert dark.pixels.mean() < 0.25 * ring.pixels.mean()
    assert ring.settings.lighting is Lighting.WHITE_RING


def test_empty_stage_is_dim_and_featureless(rig) -> None:
    _bench, _, imager = rig
    judged = imager.capture(CaptureSettings())
    assert judged.frame.pixels.mean() < 60
    # Nothing to reflect the light: the gate calls it too dark, as it would a lens cap.
    assert judged.quality.issue_codes == ["underexposed"]


def test_bad_placements_and_settings_are_refused(rig) -> None:
    bench, controller, imager = rig
    with pytest.raises(InvalidArgument, match="unknown item type"):
        bench.place("handbag", "genuine", 1)
    with pytest.raises(InvalidArgument):
        bench.place("tote-classic", "counterfeit-z", 1)
    with pytest.raises(InvalidArgument, match="focus target"):
        controller.move_focus(10_000)
    with pytest.raises(InvalidArgument, match="exposure_us"):
        imager.capture(CaptureSettings(exposure_us=0 - 1))
