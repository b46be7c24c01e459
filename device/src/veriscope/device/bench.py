"""The simulated bench: the virtual item under the lens, the light on it, and where the focus is.

It is the one shared simulated world. The simulated controller writes LED
duties and the focus position here; the simulated camera renders what the
bench shows through the specimen imaging model; SimulationService places and
removes items; and, as the scan's :class:`~veriscope.device.stage.Stage`, it
moves the item so the requested region lies under the lens.

Each presentation of a region lands on a new random spot of it, as a person
putting the scanner down again would, while captures between presentations
(autofocus sweeps, previews, retakes of the same spot) see the same spot. The
spots follow a sequence seeded by the item, so a placed item replays the same
scan every time.

Besides the catalog's items, the bench can show the white reference target
(item type ``"white-reference"``): a flat, matte white diffuser that fills the
field, on which the camera is calibrated. Through it the simulated optics'
vignetting, cover-glass dust and the colour response of the sensor to the
LEDs (``channel_response``, neutral unless a tint such as
:data:`TINTED_RESPONSE` is given) show, as they would on the real unit.
"""

from __future__ import annotations

import functools
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from veriscope.device.controller import Controller, ControllerInfo, FocusRange
from veriscope.device.errors import InvalidArgument
from veriscope.device.specimen import catalog, imaging, materials
from veriscope.device.specimen.surface import Surface, VirtualItem
from veriscope.device.stage import Stage
from veriscope.device.types import Lighting, RGBImage

_CHANNELS = (Lighting.WHITE_RING, Lighting.RAKING, Lighting.UV)
WHITE_REFERENCE = "white-reference"
"""Item type that places the white reference target instead of a catalog item."""
WHITE_REFERENCE_ALBEDO = 0.92
"""Linear albedo of the simulated white reference target (a matte PTFE diffuser reflects a little more)."""
CHANNEL_RESPONSE = (1.0, 1.0, 1.0)
"""Default response of the red, green and blue pixels to the LEDs, relative to green: neutral, as a
factory-balanced unit's, so uncalibrated simulated captures match the renders the demo model was trained on.
:data:`TINTED_RESPONSE` is a typical uncorrected sensor (LED spectrum x colour filters)."""
TINTED_RESPONSE = (0.97, 1.0, 0.94)
"""A sensor whose red and blue pixels respond a little less than green to the white LEDs."""


@dataclass(frozen=True)
class PlacedItem:
    """The identity of the virtual item on the bench."""

    item_type: str
    source: str
    seed: int


@dataclass(frozen=True)
class MaterialInfo:
    """A simulated material and its sources."""

    name: str
    sources: tuple[str, ...]
    superfakes: tuple[str, ...]


class SimBench(Stage):
    """The simulated world under the lens. Thread-safe."""

    def __init__(
        self,
        *,
        sensor_width_px: int = 2028,
        sensor_height_px: int = 1520,
        noise_seed: int = 0,
        channel_response: tuple[float, float, float] = CHANNEL_RESPONSE,
    ) -> None:
        if len(channel_response) != 3 or not all(0.0 < r <= 1.0 for r in channel_response):
            raise InvalidArgument(f"channel_response must be three values in 0..1, got {channel_response!r}")
        self.optics = imaging.Optics(sensor_width_px=sensor_width_px, sensor_height_px=sensor_height_px)
        self._response = np.asarray(channel_response, dtype=np.float32)
        self._lock = threading.Lock()
        self._noise = np.random.default_rng(noise_seed)
        self._dust_seed = noise_seed
        self._leds: dict[Lighting, int] = dict.fromkeys(_CHANNELS, 0)
        self._focus_steps = 0
        self._item: VirtualItem | None = None
        self._white: PlacedItem | None = None
        self._surface: Surface | None = None
        self._region = ""
        self._pose = imaging.Pose()
        self._poses = np.random.default_rng(0)
        self._item_z_um = 1000.0

    # Items

    def place(self, item_type: str, source: str, seed: int) -> PlacedItem:
        """Put the virtual item (item_type, source, seed) under the lens, showing its first region.

        Item type ``"white-reference"`` places the white reference target
        (source and seed are kept but change nothing).
        """
        if item_type == WHITE_REFERENCE:
            return self.place_white_reference(source, seed)
        try:
            item = VirtualItem(item_type, source, seed)
        except KeyError as exc:
            raise InvalidArgument(str(exc.args[0]) if exc.args else str(exc)) from None
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        key = zlib.crc32(item.item_id.encode())
        with self._lock:
            self._item = item
            self._white = None
            self._poses = np.random.default_rng(key)
            # Items differ in thickness, so the in-focus position differs from item to item.
            self._item_z_um = float(np.random.default_rng(key ^ 0x5EED).uniform(800.0, 1200.0))
            self._region = ""
        self.present(catalog.item_type(item_type).regions[0].name)
        return PlacedItem(item_type, source, seed)

    def place_white_reference(self, source: str = "", seed: int = 0) -> PlacedItem:
        """Put the white reference target under the lens, flat and in contact, filling the field."""
        with self._lock:
            self._item = None
            self._white = PlacedItem(WHITE_REFERENCE, source, seed)
            self._surface = _white_surface()
            self._region = ""
            self._pose = imaging.Pose(surface_z_um=1000.0)
            self._item_z_um = 1000.0
        return self._white

    def clear(self) -> None:
        """Remove the item: the camera sees the empty stage."""
        with self._lock:
            self._item = None
            self._white = None
            self._surface = None
            self._region = ""

    def placed(self) -> PlacedItem | None:
        """The item on the bench, or None."""
        item = self._item
        if item is None:
            return self._white
        return PlacedItem(item.item_type, item.source, item.seed)

    def materials(self) -> list[MaterialInfo]:
        """Every simulated material with its sources."""
        return [MaterialInfo(m, materials.SOURCES, materials.superfake_sources(m)) for m in materials.MATERIALS]

    def present(self, region: str) -> None:
        """Move a new spot of ``region`` under the lens.

        A region the placed item does not have shows the item's region of the
        same material if it has one, and otherwise its first region: scanning
        the wrong item shows the wrong material, as it would for real.
        """
        with self._lock:
            item = self._item
            if item is None:
                return
            spec = catalog.item_type(item.item_type)
            names = [r.name for r in spec.regions]
            if region not in names:
                wanted = _material_of(region)
                region = next((r.name for r in spec.regions if r.material == wanted), names[0])
            self._surface = item.surface(region)
            self._region = region
            self._pose = imaging.good_pose(self._poses, surface_z_um=self._item_z_um)

    def in_focus_steps(self) -> float:
        """The focus position that is sharp for the current spot (for tests and diagnostics)."""
        return imaging.in_focus_steps(self._pose, self.optics)

    # Controller side

    def set_leds(self, duty_pct: dict[Lighting, int]) -> None:
        """Set LED duties in percent."""
        with self._lock:
            self._leds.update({k: v for k, v in duty_pct.items() if k in self._leds})

    def leds(self) -> dict[Lighting, int]:
        """Current LED duties."""
        with self._lock:
            return dict(self._leds)

    def set_focus_steps(self, steps: int) -> None:
        """Move the simulated focal plane."""
        with self._lock:
            self._focus_steps = steps

    def focus_steps(self) -> int:
        """Current focus position."""
        return self._focus_steps

    # Camera side

    def render(self, *, exposure_us: int, analogue_gain: float, width: int | None) -> RGBImage:
        """Expose a frame of what lies under the lens now."""
        with self._lock:
            surface, pose, duties, focus = self._surface, self._pose, dict(self._leds), self._focus_steps
            noise = np.random.default_rng(self._noise.integers(1 << 63))
        try:
            raw = imaging.render_raw(
                surface,
                pose,
                duties=duties,
                exposure_us=exposure_us,
                analogue_gain=analogue_gain,
                focus_steps=focus,
                rng=noise,
                optics=self.optics,
                width=width,
                dust_seed=self._dust_seed,
            )
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        return imaging.develop(raw * self._response, self.optics)


@functools.lru_cache(maxsize=1)
def _white_surface() -> Surface:
    return Surface.uniform(WHITE_REFERENCE_ALBEDO)


def _material_of(region: str) -> str | None:
    for spec in catalog.CATALOG:
        for r in spec.regions:
            if r.name == region:
                return r.material
    return None


class MirroredController(Controller):
    """A real (or emulated) controller board whose LED and focus commands also act on the simulated bench.

    It lets the simulated camera see what a real board was told to do, so the
    daemon can drive the emulated ATmega328P during a simulated scan and the
    pins and the images agree.
    """

    def __init__(self, board: Controller, bench: SimBench) -> None:
        self._board = board
        self._bench = bench

    @property
    def board(self) -> Controller:
        """The board itself, for maintenance such as flashing its firmware."""
        return self._board

    @property
    def info(self) -> ControllerInfo:
        """The board's identity."""
        return self._board.info

    def set_leds(self, duty_pct: Mapping[Lighting, int]) -> None:
        """Set the board's LEDs, then the bench's."""
        self._board.set_leds(duty_pct)
        self._bench.set_leds(dict(duty_pct))

    def leds(self) -> dict[Lighting, int]:
        """The board's LED duties."""
        return self._board.leds()

    @property
    def focus_range(self) -> FocusRange:
        """The board's soft limits."""
        return self._board.focus_range

    def move_focus(self, target_steps: int) -> int:
        """Move the board's motor; the bench follows to where it arrived."""
        reached = self._board.move_focus(target_steps)
        self._bench.set_focus_steps(reached)
        return reached

    def focus_position(self) -> int:
        """The board's focus position."""
        return self._board.focus_position()

    def home_focus(self) -> None:
        """Home the board's motor."""
        self._board.home_focus()
        self._bench.set_focus_steps(self._board.focus_position())

    def temperature_c(self) -> float:
        """The board's temperature."""
        return self._board.temperature_c()

    def close(self) -> None:
        """Close the board."""
        self._board.close()
