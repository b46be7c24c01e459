"""Virtual items and their surfaces: one deterministic, continuous patch of material per item region.

A :class:`VirtualItem` (item type, source, seed) is one physical object. Each
region's surface is a periodic tile (a few millimetres across, wrapping
seamlessly) that is a pure function of (item type, source, seed, region), so
every capture shows the same surface, only at another place. Tiles are built
lazily and a handful are kept in an LRU cache.
"""

from __future__ import annotations

import functools
import math
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from veriscope.device.specimen import _canvas, _fabric, _leather
from veriscope.device.specimen._synth import F32, SurfaceMaps, f32, tile_shape, vary
from veriscope.device.specimen.catalog import item_type as _item_type
from veriscope.device.specimen.materials import check_material, check_source

U8 = npt.NDArray[np.uint8]

_GENERATORS: dict[str, tuple[dict[str, Any], dict[str, float], Callable[..., SurfaceMaps]]] = {
    "coated-canvas": (_canvas.RECIPES, _canvas.SPREAD, _canvas.synthesize),
    "grained-leather": (_leather.RECIPES, _leather.SPREAD, _leather.synthesize),
    "woven-fabric": (_fabric.RECIPES, _fabric.SPREAD, _fabric.synthesize),
}

# Specular reflection of the ring light reaches the lens from facets tilted by about this slope.
_RING_SLOPE = 0.22
_RING_SLOPE_WIDTH = 0.1
_MAX_LEVELS = 5
# Relief finer than this does not shade visibly through the lens.
_SLOPE_SMOOTH_UM = 2.5
_GLINT_SMOOTH_UM = 6.0
# Darkening of steep facets under the ring: albedo / (1 + k * slope^2).
_RING_SHADE = 0.8


def _key(*parts: str | int) -> list[int]:
    # Stable across processes (unlike hash()): the same names always give the same surface.
    return [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]


class Surface:
    """A periodic patch of one material, encoded for fast imaging.

    The maps are stored as two 8-bit, 4-channel tiles: ``ring`` holds the
    albedo as the ring light shows it (square-root encoded, per-channel
    scaled) and the ring's specular glints; ``relief`` holds the height
    gradients, fluorescence and gloss. Coarser pyramid levels are built on
    first use. Tiles are a few megabytes each.

    ``placement`` maps item coordinates (um) to tile coordinates (um) before
    ``offset_um`` is added; it carries the surface's rotation on the item and
    any weave skew.
    """

    def __init__(
        self,
        maps: SurfaceMaps,
        *,
        material: str,
        source: str,
        placement_deg: float = 0.0,
        offset_um: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.material = material
        self.source = source
        self.size_um = maps.size_um
        ny, nx = maps.height_um.shape
        self.shape = (ny, nx)
        self.texel_um = (maps.size_um[0] / nx, maps.size_um[1] / ny)
        rot = math.radians(placement_deg)
        c, s = math.cos(rot), math.sin(rot)
        # Item -> tile: undo the weave skew (which tilts the tile's x axis), after rotating onto the tile.
        shear = np.array([[1.0, 0.0], [-math.tan(math.radians(maps.skew_deg)), 1.0]])
        self.placement = shear @ np.array([[c, s], [-s, c]])
        self.offset_um = offset_um
        self.fluorescence_rgb = np.asarray(maps.fluorescence_rgb, dtype=np.float32)

        (gx, gy), (sx, sy) = _gradients(maps.height_um, self.texel_um, (_SLOPE_SMOOTH_UM, _GLINT_SMOOTH_UM))
        slope = np.sqrt(gx * gx + gy * gy)
        # The ring lights a facet from all round: steep flanks and pits look darker, whichever way they face.
        albedo = np.clip(maps.albedo / (1.0 + _RING_SHADE * slope * slope)[..., None], 0.0, 1.0)
        # Scale factors from a sparse sample: cheap, and the rare brighter texel just clips at 255.
        sample = albedo[::3, ::3].reshape(-1, 3)
        self.albedo_scale = np.maximum(sample.max(axis=0) * 1.02, 1e-3).astype(np.float32)
        self.mean_albedo = sample.mean(axis=0).astype(np.float32)
        # Glints come from facets broad enough to mirror the ring into the lens, so use smoother slopes.
        glint_slope = np.sqrt(sx * sx + sy * sy)
        spec = maps.gloss * (
            0.02 + 0.3 * np.exp(-(((glint_slope - _RING_SLOPE) / np.float32(_RING_SLOPE_WIDTH)) ** 2), dtype=np.float32)
        )
        self.spec_scale = float(max(float(spec.max()), 1e-3))
        self.slope_scale = float(max(float(np.percentile(slope[::3, ::3], 99.5)), 1e-3))
        self.fluor_scale = float(max(float(maps.fluorescence.max()), 1e-3))
        self.mean_gloss = float(maps.gloss[::3, ::3].mean())

        ring = np.empty((ny, nx, 4), dtype=np.uint8)
        ring[..., :3] = _encode(f32(np.sqrt(albedo / self.albedo_scale[None, None, :])))
        ring[..., 3] = _encode(f32(spec / np.float32(self.spec_scale)))
        relief = np.empty((ny, nx, 4), dtype=np.uint8)
        relief[..., 0] = _encode(0.5 + 0.5 * gx / np.float32(self.slope_scale))
        relief[..., 1] = _encode(0.5 + 0.5 * gy / np.float32(self.slope_scale))
        relief[..., 2] = _encode(maps.fluorescence / np.float32(self.fluor_scale))
        relief[..., 3] = _encode(maps.gloss)
        self._levels: list[tuple[U8, U8]] = [(ring, relief)]
        self._lock = threading.Lock()

    @classmethod
    def uniform(cls, albedo: float | tuple[float, float, float] = 0.18, *, size_um: float = 2048.0) -> Surface:
        """A flat, matte, uniform card of the given linear albedo: a grey card for calibration and noise tests."""
        shape = tile_shape((size_um, size_um))
        colour = np.broadcast_to(np.asarray(albedo, dtype=np.float32), (3,))
        maps = SurfaceMaps(
            (size_um, size_um),
            np.broadcast_to(colour, (*shape, 3)).astype(np.float32),
            np.zeros(shape, dtype=np.float32),
            np.zeros(shape, dtype=np.float32),
            np.zeros(shape, dtype=np.float32),
            (0.5, 0.5, 0.5),
        )
        return cls(maps, material="grey-card", source="calibration")

    def level(self, k: int) -> tuple[U8, U8]:
        """The (ring, relief) tiles at pyramid level ``k`` (texels ``2**k`` times larger), built on first use.

        Safe to call from several threads.
        """
        k = max(0, min(k, _MAX_LEVELS))
        with self._lock:
            while len(self._levels) <= k:
                ring, relief = self._levels[-1]
                self._levels.append((_reduce(ring), _reduce(relief)))
            return self._levels[k]

    @property
    def nbytes(self) -> int:
        """Memory held by the encoded tiles and pyramid, in bytes."""
        return sum(a.nbytes + b.nbytes for a, b in self._levels)


def _encode(x: F32) -> U8:
    return np.asarray(np.clip(x * np.float32(255.0) + np.float32(0.5), 0.0, 255.0), dtype=np.uint8)


def _reduce(tile: U8) -> U8:
    return np.asarray(Image.fromarray(tile, "RGBX").reduce(2), dtype=np.uint8)


def _gradients(height: F32, texel_um: tuple[float, float], smooth_um: tuple[float, ...]) -> list[tuple[F32, F32]]:
    """Slopes (dh/dx, dh/dy) of a periodic height map, once per Gaussian smoothing in ``smooth_um`` (spectral)."""
    ny, nx = height.shape
    ky = np.fft.fftfreq(ny, d=texel_um[1]).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(nx, d=texel_um[0]).astype(np.float32)[None, :]
    k2 = kx * kx + ky * ky
    spectrum = np.fft.rfft2(height)
    two_pi_i = np.complex64(2j * np.pi)
    out = []
    for sigma in smooth_um:
        smoothed = spectrum * np.exp(np.float32(-2.0 * np.pi**2 * sigma**2) * k2)
        gx = np.fft.irfft2(smoothed * (two_pi_i * kx), s=(ny, nx)).astype(np.float32)
        gy = np.fft.irfft2(smoothed * (two_pi_i * ky), s=(ny, nx)).astype(np.float32)
        out.append((gx, gy))
    return out


@dataclass(frozen=True)
class VirtualItem:
    """One simulated physical item: an item type made by a source, told apart from its siblings by ``seed``.

    The source applies to the whole item (a counterfeit tote has counterfeit
    canvas, trim and lining). The same triple always gives the same item.
    """

    item_type: str
    source: str
    seed: int

    def __post_init__(self) -> None:
        _item_type(self.item_type)
        check_source(self.source)
        if self.seed < 0:
            raise ValueError(f"item seed must be >= 0, got {self.seed}")

    @property
    def item_id(self) -> str:
        """Unique, stable name of this item, for example ``tote-classic-genuine-000017``."""
        return f"{self.item_type}-{self.source}-{self.seed:06d}"

    def surface(self, region: str) -> Surface:
        """The surface of ``region``. Raises :class:`KeyError` for a region this item type does not have.

        Built on first use (a few tenths of a second) and cached with the few
        most recently used surfaces.
        """
        spec = _item_type(self.item_type).region(region)
        return _surface(self.item_type, self.source, self.seed, spec.name, spec.material)


def material_surface(material: str, source: str, seed: int) -> Surface:
    """A surface of ``material`` from ``source`` that belongs to no catalog item (for experiments and benchmarks).

    Raises :class:`KeyError` for an unknown material or source.
    """
    check_material(material)
    check_source(source)
    return _surface("", source, seed, material, material)


@functools.lru_cache(maxsize=4)
def _surface(item_type: str, source: str, seed: int, region: str, material: str) -> Surface:
    recipes, spread, synthesize = _GENERATORS[material]
    rng = np.random.default_rng(_key("surface", item_type, source, seed, region))
    params = vary(recipes[source].params, spread, rng)
    plate_seed = zlib.crc32(f"plate/{material}/{source}".encode())
    maps = synthesize(params, rng, plate_seed)
    placement_deg = float(rng.normal(0.0, 0.8))
    offset = (float(rng.uniform(0, maps.size_um[0])), float(rng.uniform(0, maps.size_um[1])))
    return Surface(maps, material=material, source=source, placement_deg=placement_deg, offset_um=offset)
