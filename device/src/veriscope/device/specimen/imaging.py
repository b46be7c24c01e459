"""Image formation of the Veriscope microscope (about 200x): optics, lighting and sensor, as numpy over a surface.

A frame is made in four stages on a working grid of at least 1.5 um per pixel
(finer sensor pixels are interpolated, as the lens cannot resolve them
anyway); sampling and blur run on 8-bit textures in Pillow, light and sensor
in float32 numpy:

1. Sampling: the surface tile is mapped onto the grid by the pose (position,
   rotation, magnification), with a pyramid level and box pre-filter so small
   frames do not alias.
2. Optics: blur grows smoothly with the distance between the surface and the
   focal plane set by the focus motor (flat within the depth of field, then in
   proportion), so a contrast search peaks exactly in focus; tilt makes that
   distance, and so the blur, vary across the field; lift-off adds a large
   defocus, shrinks the image a little and dims the LEDs. Motion smears
   along a line.
3. Light: the white ring gives diffuse light plus specular glints from glossy
   facets; the raking LED shades the relief from one side; the UV LED excites
   fluorescence. Each is scaled by its LED duty. Vignetting and dust on the
   cover glass (fixed to the sensor) darken the image.
4. Sensor: photo-electrons over the exposure, Poisson shot noise (Gaussian
   approximation, variance equal to the mean) and read noise, full-well
   clipping, analogue gain, a 12-bit ADC, and an sRGB tone curve to 8 bits.
   Smaller frames are what the camera's scaler makes of the full sensor, so
   their noise is averaged down accordingly.

Calibration: a typical genuine surface at 8000 us, gain 1.0 and the white
ring at 60 % gives a mean 8-bit level of about 100 to 140; the linear signal is
proportional to exposure, gain and duty until it clips.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from veriscope.device.specimen._synth import F32, f32
from veriscope.device.specimen.surface import Surface
from veriscope.device.types import Lighting, RGBImage

_MIN_WORKING_PITCH_UM = 1.5
_EMPTY_STAGE_ALBEDO = 0.035
_MAX_MARGIN_PX = 160
_NOISE_BANK_SIZE = 1 << 22
# LEDs to surface when the nose cone touches it; sets the fall-off of light with lift-off.
_LED_DISTANCE_UM = 6000.0
# Lens to surface: lifting the scanner by d shrinks the image by WD / (WD + d).
_WORKING_DISTANCE_UM = 12000.0


@dataclass(frozen=True)
class Optics:
    """Fixed properties of the microscope: field of view, focus mechanics, lights and sensor.

    Raises :class:`ValueError` on construction for values outside their ranges.
    """

    fov_width_mm: float = 1.5
    """Width of the field of view on the surface, 1..2 mm."""
    sensor_width_px: int = 2028
    sensor_height_px: int = 1520
    depth_of_field_um: float = 30.0
    """Depth over which the image stays sharp; blur grows steadily beyond it."""
    focus_um_per_step: float = 2.5
    """Travel of the focal plane per focus motor step."""
    focus_origin_um: float = 0.0
    """Height of the focal plane at focus step 0, above the stage reference."""
    psf_sigma_um: float = 1.5
    """In-focus blur of the lens and sensor as a Gaussian sigma, about a pixel of the working grid; see
    :meth:`blur_sigma_um` for how defocus adds to it."""
    vignetting: float = 0.3
    """Fractional fall-off of illumination at the frame corners."""
    full_well_e: float = 10000.0
    """Photo-electrons that fill a pixel (the ADC's full scale at gain 1.0)."""
    read_noise_e: float = 2.5
    adc_bits: int = 12
    ring_e_per_us: float = 1.55
    """Photo-electrons per microsecond from a white (albedo 1) surface under the ring at 100 % duty."""
    raking_e_per_us: float = 0.75
    uv_e_per_us: float = 0.5
    raking_elevation_deg: float = 14.0
    """Elevation of the raking LED above the surface."""
    raking_azimuth_deg: float = 0.0
    """Direction of the raking LED in the frame (0: from the right edge)."""

    def __post_init__(self) -> None:
        if not 1.0 <= self.fov_width_mm <= 2.0:
            raise ValueError(f"fov_width_mm must be 1..2, got {self.fov_width_mm}")
        if self.sensor_width_px < 64 or self.sensor_height_px < 48:
            raise ValueError(f"sensor of {self.sensor_width_px}x{self.sensor_height_px} px is too small")
        if self.depth_of_field_um <= 0 or self.focus_um_per_step <= 0 or self.psf_sigma_um <= 0:
            raise ValueError("depth_of_field_um, focus_um_per_step and psf_sigma_um must be > 0")
        if not 0.0 <= self.vignetting < 1.0:
            raise ValueError(f"vignetting must be 0..1, got {self.vignetting}")
        if not 8 <= self.adc_bits <= 16:
            raise ValueError(f"adc_bits must be 8..16, got {self.adc_bits}")

    @property
    def fov_height_mm(self) -> float:
        """Height of the field of view, from the sensor's aspect ratio."""
        return self.fov_width_mm * self.sensor_height_px / self.sensor_width_px

    @property
    def dn_max(self) -> int:
        """Largest raw value of the ADC."""
        return (1 << self.adc_bits) - 1

    def blur_sigma_um(self, defocus_um: float) -> float:
        """Blur (Gaussian sigma, um) of a point at ``defocus_um`` from the focal plane.

        It is the lens's own ``psf_sigma_um`` in focus, grows by a factor of
        sqrt(2) at half the depth of field and then in proportion to the defocus.
        """
        return self.psf_sigma_um * math.hypot(1.0, defocus_um / (0.5 * self.depth_of_field_um))


@dataclass(frozen=True)
class Pose:
    """Where and how the scanner sits on the surface for one capture.

    Position is in item coordinates; the frame's centre lands on (x_mm, y_mm).
    """

    x_mm: float = 0.0
    y_mm: float = 0.0
    rotation_deg: float = 0.0
    """Rotation of the scanner on the item."""
    scale: float = 1.0
    """Magnification relative to nominal (pressure and working-distance changes), about 0.95..1.05."""
    surface_z_um: float = 1000.0
    """Height of the surface above the stage reference (item thickness); sets the in-focus step."""
    tilt_x_deg: float = 0.0
    """Tilt about the frame's x axis: defocus changes from top to bottom."""
    tilt_y_deg: float = 0.0
    """Tilt about the frame's y axis: defocus changes from left to right."""
    lift_um: float = 0.0
    """Gap between the nose cone and the surface (0 when in contact)."""
    motion_px: float = 0.0
    """Length of the motion smear during the exposure, in output pixels at full sensor width."""
    motion_angle_deg: float = 0.0


def in_focus_steps(pose: Pose, optics: Optics | None = None) -> float:
    """Focus motor position (steps, fractional) that puts the centre of the frame in focus for ``pose``."""
    optics = optics or Optics()
    return (pose.surface_z_um + pose.lift_um - optics.focus_origin_um) / optics.focus_um_per_step


def good_pose(rng: np.random.Generator, *, surface_z_um: float = 1000.0, extent_mm: float = 40.0) -> Pose:
    """A pose a careful operator gets: flat, in contact and still, anywhere on the region, at any rotation.

    The nose cone rests on the item, so magnification varies only with how firmly it is pressed: about 1 %.

    ``extent_mm`` is the size of the region the position is drawn from.
    """
    return Pose(
        x_mm=float(rng.uniform(0.0, extent_mm)),
        y_mm=float(rng.uniform(0.0, extent_mm)),
        rotation_deg=float(rng.uniform(0.0, 360.0)),
        scale=float(rng.uniform(0.99, 1.01)),
        surface_z_um=surface_z_um + float(rng.normal(0.0, 4.0)),
        tilt_x_deg=float(rng.normal(0.0, 0.15)),
        tilt_y_deg=float(rng.normal(0.0, 0.15)),
        motion_px=float(abs(rng.normal(0.0, 0.4))),
        motion_angle_deg=float(rng.uniform(0.0, 180.0)),
    )


def careless_pose(rng: np.random.Generator, *, surface_z_um: float = 1000.0, extent_mm: float = 40.0) -> Pose:
    """A pose a careless operator gets: at least one of tilt, motion or lift-off, sometimes several."""
    base = good_pose(rng, surface_z_um=surface_z_um, extent_mm=extent_mm)
    faults = rng.permutation(3)[: int(rng.integers(1, 4))]
    tilt_x, tilt_y, motion, lift = base.tilt_x_deg, base.tilt_y_deg, base.motion_px, 0.0
    for fault in faults:
        if fault == 0:
            angle = rng.uniform(0.0, 2.0 * math.pi)
            magnitude = float(rng.uniform(1.5, 4.0))
            tilt_x, tilt_y = magnitude * math.cos(angle), magnitude * math.sin(angle)
        elif fault == 1:
            motion = float(rng.uniform(6.0, 40.0))
        else:
            lift = float(rng.uniform(80.0, 600.0))
    return Pose(
        x_mm=base.x_mm,
        y_mm=base.y_mm,
        rotation_deg=base.rotation_deg,
        scale=base.scale,
        surface_z_um=base.surface_z_um,
        tilt_x_deg=tilt_x,
        tilt_y_deg=tilt_y,
        lift_um=lift,
        motion_px=motion,
        motion_angle_deg=base.motion_angle_deg,
    )


def frame_size(optics: Optics, width: int | None = None) -> tuple[int, int]:
    """(width, height) in pixels of a frame rendered at ``width`` (``None``: full sensor)."""
    w = optics.sensor_width_px if width is None else int(width)
    if not 16 <= w <= optics.sensor_width_px:
        raise ValueError(f"width must be 16..{optics.sensor_width_px} px, got {width}")
    return w, max(12, round(w * optics.sensor_height_px / optics.sensor_width_px))


def render(
    surface: Surface | None,
    pose: Pose,
    *,
    duties: Mapping[Lighting, int],
    exposure_us: int,
    analogue_gain: float,
    focus_steps: float,
    rng: np.random.Generator,
    optics: Optics | None = None,
    width: int | None = None,
    dust_seed: int | None = None,
) -> RGBImage:
    """Expose one 8-bit sRGB frame of ``surface`` (``None``: an empty stage) seen at ``pose``.

    ``duties`` gives each LED channel's duty in percent (missing channels are
    off); ``width`` renders a smaller frame directly, as the camera's scaler
    would (for previews); ``dust_seed`` puts the same specks and scratches on
    the cover glass in every frame that shares it. ``rng`` draws the sensor
    noise. Raises :class:`ValueError` for out-of-range settings.
    """
    optics = optics or Optics()
    raw = render_raw(
        surface,
        pose,
        duties=duties,
        exposure_us=exposure_us,
        analogue_gain=analogue_gain,
        focus_steps=focus_steps,
        rng=rng,
        optics=optics,
        width=width,
        dust_seed=dust_seed,
    )
    return develop(raw, optics)


def render_raw(
    surface: Surface | None,
    pose: Pose,
    *,
    duties: Mapping[Lighting, int],
    exposure_us: int,
    analogue_gain: float,
    focus_steps: float,
    rng: np.random.Generator,
    optics: Optics | None = None,
    width: int | None = None,
    dust_seed: int | None = None,
) -> F32:
    """Like :func:`render`, but return the linear raw frame: H x W x 3 float32 ADC values, 0..``optics.dn_max``."""
    optics = optics or Optics()
    if not 1 <= exposure_us <= 1_000_000:
        raise ValueError(f"exposure_us must be 1..1000000, got {exposure_us}")
    if not 1.0 <= analogue_gain <= 16.0:
        raise ValueError(f"analogue_gain must be 1..16, got {analogue_gain}")
    for channel, duty in duties.items():
        if not 0 <= duty <= 100:
            raise ValueError(f"duty of {channel} must be 0..100 %, got {duty}")
    if not 0.5 <= pose.scale <= 2.0:
        raise ValueError(f"pose scale must be 0.5..2, got {pose.scale}")
    out_w, out_h = frame_size(optics, width)
    out_pitch = optics.fov_width_mm * 1000.0 / out_w
    pitch = max(out_pitch, _MIN_WORKING_PITCH_UM)
    work_w = max(16, round(optics.fov_width_mm * 1000.0 / pitch))
    work_h = max(12, round(work_w * out_h / out_w))
    pitch = optics.fov_width_mm * 1000.0 / work_w

    # Defocus across the field: the surface plane (with tilt and lift) against the focal plane.
    focal_um = optics.focus_origin_um + focus_steps * optics.focus_um_per_step
    dz0 = pose.surface_z_um + pose.lift_um - focal_um
    slope_x = math.tan(math.radians(pose.tilt_y_deg))  # um of height per um across the frame
    slope_y = math.tan(math.radians(pose.tilt_x_deg))
    half_w, half_h = 0.5 * work_w * pitch, 0.5 * work_h * pitch
    corners = [dz0 + sx * slope_x * half_w + sy * slope_y * half_h for sx in (-1, 1) for sy in (-1, 1)]
    sigma_hi = max(optics.blur_sigma_um(d) for d in corners) / pitch
    motion_work = pose.motion_px * (optics.fov_width_mm * 1000.0 / optics.sensor_width_px) / pitch
    margin = min(_MAX_MARGIN_PX, math.ceil(3.0 * sigma_hi + 0.5 * motion_work) + 2)
    grid_w, grid_h = work_w + 2 * margin, work_h + 2 * margin

    # Lifted off the surface, the LEDs sit further away and light it more weakly (inverse square).
    lift_falloff = (_LED_DISTANCE_UM / (_LED_DISTANCE_UM + max(pose.lift_um, 0.0))) ** 2
    ring_duty = duties.get(Lighting.WHITE_RING, 0) / 100.0 * lift_falloff
    rake_duty = duties.get(Lighting.RAKING, 0) / 100.0 * lift_falloff
    uv_duty = duties.get(Lighting.UV, 0) / 100.0 * lift_falloff

    if surface is None:
        radiance = _empty_stage(grid_h, grid_w, ring_duty, rake_duty, uv_duty, optics)
    else:
        radiance = _surface_radiance(
            surface,
            pose,
            optics,
            grid=(grid_w, grid_h),
            margin=margin,
            pitch_um=pitch,
            dz=(dz0, slope_x, slope_y),
            duties=(ring_duty, rake_duty, uv_duty),
        )
    if motion_work >= 0.5:
        radiance = _motion_blur(radiance, motion_work, pose.motion_angle_deg)
    radiance = radiance[margin : margin + work_h, margin : margin + work_w]
    radiance = radiance * _vignette(work_h, work_w, optics.vignetting)[..., None]
    if dust_seed is not None:
        radiance = radiance * _dust(dust_seed, work_h, work_w)[..., None]
    if (work_w, work_h) != (out_w, out_h):
        radiance = _resize(radiance, out_w, out_h)

    electrons = radiance * np.float32(exposure_us)
    # The camera's scaler averages sensor pixels into smaller frames, which averages the noise too.
    binning = min(1.0, out_w / optics.sensor_width_px)
    noise = _standard_normal(rng, electrons.shape)
    sigma = np.sqrt(np.maximum(electrons, 0.0) + np.float32(optics.read_noise_e**2))
    electrons = electrons + sigma * noise * np.float32(binning)
    np.clip(electrons, 0.0, optics.full_well_e, out=electrons)
    raw = electrons * np.float32(analogue_gain * optics.dn_max / optics.full_well_e)
    np.clip(raw, 0.0, optics.dn_max, out=raw)
    return f32(raw)


def develop(raw: F32, optics: Optics | None = None) -> RGBImage:
    """Turn a linear raw frame (ADC values) into 8-bit sRGB with the camera's tone curve."""
    optics = optics or Optics()
    lut = _srgb_lut(optics.adc_bits)
    index = raw.astype(np.uint16)
    return lut[index]


def jpeg_roundtrip(image: RGBImage, quality: int) -> RGBImage:
    """Compress ``image`` as JPEG at ``quality`` (1..95) and decode it again, as a camera or upload would."""
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be 1..95, got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8)


def sharpness(image: RGBImage) -> float:
    """Variance of the Laplacian of the grey image over its squared mean: a focus measure (dimensionless)."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    mean = float(grey.mean())
    return float(lap.var()) / max(mean * mean, 1e-6)


# --- sampling and light -------------------------------------------------------------------------


def _surface_radiance(
    surface: Surface,
    pose: Pose,
    optics: Optics,
    *,
    grid: tuple[int, int],
    margin: int,
    pitch_um: float,
    dz: tuple[float, float, float],
    duties: tuple[float, float, float],
) -> F32:
    """Photo-electrons per microsecond per pixel on the working grid (margin included), before vignetting."""
    grid_w, grid_h = grid
    ring_duty, rake_duty, uv_duty = duties
    # Working pixel (continuous, edge convention) -> sensor um from the frame centre -> item um -> tile texels.
    rot = math.radians(pose.rotation_deg)
    c, s = math.cos(rot), math.sin(rot)
    scale = pose.scale * _WORKING_DISTANCE_UM / (_WORKING_DISTANCE_UM + max(pose.lift_um, 0.0))
    to_item = np.array([[c, -s], [s, c]]) * (pitch_um / scale)
    jac = surface.placement @ np.array([[c, -s], [s, c]]) / scale  # tile um per sensor um
    texel = np.diag([1.0 / surface.texel_um[0], 1.0 / surface.texel_um[1]])
    lin = texel @ surface.placement @ to_item
    centre_item = np.array([pose.x_mm * 1000.0, pose.y_mm * 1000.0])
    origin_px = np.array([margin + 0.5 * (grid_w - 2 * margin), margin + 0.5 * (grid_h - 2 * margin)])
    off = texel @ (surface.placement @ centre_item + np.asarray(surface.offset_um)) - lin @ origin_px

    texels_per_px = math.sqrt(abs(np.linalg.det(lin)))
    level = max(0, min(5, math.floor(math.log2(texels_per_px)))) if texels_per_px >= 2.0 else 0
    lin_l, off_l = lin / (1 << level), off / (1 << level)
    rho = texels_per_px / (1 << level)

    need_relief = rake_duty > 0 or uv_duty > 0
    need_ring = ring_duty > 0 or rake_duty > 0
    ring_tile, relief_tile = surface.level(level)
    sampled: dict[str, Image.Image] = {}
    for name, tile, needed in (("ring", ring_tile, need_ring), ("relief", relief_tile, need_relief)):
        if needed:
            sampled[name] = _sample(tile, lin_l, off_l, grid_w, grid_h, rho)

    # Defocus: blur each sampled image by the local defocus, blending a few blur levels when tilted.
    dz0, slope_x, slope_y = dz
    xs = (np.arange(grid_w, dtype=np.float32) + 0.5 - 0.5 * grid_w) * np.float32(pitch_um)
    ys = (np.arange(grid_h, dtype=np.float32) + 0.5 - 0.5 * grid_h) * np.float32(pitch_um)
    sigma_map: F32 | None = None
    if abs(slope_x) + abs(slope_y) > 1e-6:
        defocus = np.float32(dz0) + np.float32(slope_x) * xs[None, :] + np.float32(slope_y) * ys[:, None]
        rel = defocus * np.float32(1.0 / (0.5 * optics.depth_of_field_um))
        sigma_map = np.sqrt(1.0 + rel * rel) * np.float32(optics.psf_sigma_um / pitch_um)
    # A blur that varies by less than a tenth of a pixel across the frame is indistinguishable from a uniform one.
    if sigma_map is not None and float(sigma_map.max() - sigma_map.min()) > _UNIFORM_BLUR_TOLERANCE_PX:
        blurred: dict[str, np.ndarray] = {k: _blur_varying(v, sigma_map) for k, v in sampled.items()}
    else:
        sig = optics.blur_sigma_um(dz0) / pitch_um
        blurred = {k: np.asarray(_blur(v, sig)) for k, v in sampled.items()}

    radiance = np.zeros((grid_h, grid_w, 3), dtype=np.float32)
    albedo: F32 | None = None
    if need_ring:
        ring = blurred["ring"]
        albedo = _decode_albedo(surface, ring)
    if ring_duty > 0 and albedo is not None:
        spec = ring[..., 3].astype(np.float32) * np.float32(surface.spec_scale / 255.0)
        veil = np.float32(0.03 * surface.mean_gloss)
        radiance += np.float32(ring_duty * optics.ring_e_per_us) * (albedo + (spec + veil)[..., None])
    if need_relief:
        relief = blurred["relief"]
    if rake_duty > 0 and albedo is not None:
        az = math.radians(optics.raking_azimuth_deg)
        # Slope along the light's direction in the frame, from tile-frame gradients: (J d) . grad_t h.
        v = jac @ np.array([math.cos(az), math.sin(az)])
        k = np.float32(surface.slope_scale / 127.5)
        gx, gy = relief[..., 0].astype(np.float32), relief[..., 1].astype(np.float32)
        slope = ((gx - 127.5) * np.float32(v[0]) + (gy - 127.5) * np.float32(v[1])) * k
        elev = math.radians(optics.raking_elevation_deg)
        shade = np.maximum(0.0, np.float32(math.sin(elev)) + np.float32(math.cos(elev)) * slope) / np.float32(
            math.sin(elev)
        )
        falloff = np.clip(1.0 + 0.35 * xs / np.float32(0.5 * grid_w * pitch_um), 0.3, 1.6)[None, :]
        radiance += np.float32(rake_duty * optics.raking_e_per_us) * albedo * (0.04 + shade * falloff)[..., None]
    if uv_duty > 0:
        fluor = relief[..., 2].astype(np.float32) * np.float32(surface.fluor_scale / 255.0)
        hotspot = _vignette(grid_h, grid_w, 0.35)
        emission = fluor[..., None] * surface.fluorescence_rgb[None, None, :]
        # A little of the LED's violet tail reflects off the surface.
        leak = (albedo if albedo is not None else surface.mean_albedo[None, None, :]) * np.asarray(
            [0.012, 0.0, 0.03], dtype=np.float32
        )[None, None, :]
        radiance += np.float32(uv_duty * optics.uv_e_per_us) * (emission + leak) * hotspot[..., None]
    return radiance


def _sample(tile: np.ndarray, lin: np.ndarray, off: np.ndarray, grid_w: int, grid_h: int, rho: float) -> Image.Image:
    """Resample a wrapping tile onto the working grid through the affine map (texel = lin @ px + off)."""
    corners = np.array([[0, 0], [grid_w, 0], [0, grid_h], [grid_w, grid_h]], dtype=np.float64).T
    uv = lin @ corners + off[:, None]
    u0, v0 = math.floor(uv[0].min()) - 2, math.floor(uv[1].min()) - 2
    u1, v1 = math.ceil(uv[0].max()) + 3, math.ceil(uv[1].max()) + 3
    window = Image.fromarray(_wrapped_window(tile, u0, u1, v0, v1), "RGBX")
    if rho > 1.2:
        # Pre-filter so the frame does not alias when texels are smaller than pixels.
        window = window.filter(ImageFilter.BoxBlur(_box_radius(0.5 * math.sqrt(rho * rho - 1.0), passes=1)))
    data = (lin[0, 0], lin[0, 1], off[0] - u0, lin[1, 0], lin[1, 1], off[1] - v0)
    return window.transform((grid_w, grid_h), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)


def _wrapped_window(tile: np.ndarray, u0: int, u1: int, v0: int, v1: int) -> np.ndarray:
    """Rows v0..v1 and columns u0..u1 of a periodic tile, wrapping; plain slices when no wrap is needed."""
    ny, nx = tile.shape[:2]
    su, sv = u0 - (u0 % nx), v0 - (v0 % ny)
    u0, u1, v0, v1 = u0 - su, u1 - su, v0 - sv, v1 - sv
    rows = tile[v0:v1] if v1 <= ny else np.take(tile, np.arange(v0, v1), axis=0, mode="wrap")
    if u1 <= nx:
        return np.ascontiguousarray(rows[:, u0:u1])
    return np.take(rows, np.arange(u0, u1), axis=1, mode="wrap")


def _box_radius(sigma: float, passes: int) -> float:
    # A box of radius r has variance ((2r+1)^2 - 1) / 12; n passes add their variances.
    return 0.5 * (math.sqrt(12.0 * sigma * sigma / passes + 1.0) - 1.0)


def _fractional_box_radius(sigma: float, passes: int) -> float:
    """Radius of Pillow's box blur whose ``passes`` passes have a variance of exactly ``sigma`` squared.

    A box of radius n + f (n whole, 0 <= f < 1) weighs the 2n + 1 central
    pixels 1 and the two next f, so its variance is (n(n+1)(2n+1)/3 +
    2f(n+1)^2) / (2n+1+2f): below one pixel it is far from the ((2r+1)^2 - 1)
    / 12 of a whole box, and a blur of sigma 0.7 would come out as 1.0.
    """
    variance = sigma * sigma / passes
    n = 0
    while (n + 1) * (n + 2) / 3.0 <= variance:
        n += 1
    f = (2 * n + 1) * (variance - n * (n + 1) / 3.0) / (2.0 * ((n + 1) ** 2 - variance))
    return n + f


def _blur(image: Image.Image, sigma_px: float) -> Image.Image:
    """Defocus blur of ``sigma_px`` (two box passes: smooth in sigma, cheap at any size, exact below a pixel)."""
    if sigma_px <= 1e-3:
        return image
    radius = _fractional_box_radius(sigma_px, passes=2)
    return image.filter(ImageFilter.BoxBlur(radius)).filter(ImageFilter.BoxBlur(radius))


_UNIFORM_BLUR_TOLERANCE_PX = 0.1
"""Largest spread of the defocus blur across a frame (sigma, in output pixels) rendered as one uniform blur."""


def _blur_varying(image: Image.Image, sigma_map: F32) -> F32:
    """Blur that varies across the frame: blend a few uniformly blurred copies by the local sigma."""
    lo, hi = float(sigma_map.min()), float(sigma_map.max())
    count = max(2, min(6, 2 + math.ceil((hi - lo) / max(0.6, 0.25 * hi))))
    levels = np.linspace(lo, hi, count)
    out = np.zeros((*sigma_map.shape, len(image.getbands())), dtype=np.float32)
    position = (sigma_map - np.float32(lo)) / np.float32(max(hi - lo, 1e-6)) * np.float32(count - 1)
    for k, sig in enumerate(levels):
        weight = np.clip(1.0 - np.abs(position - np.float32(k)), 0.0, 1.0)
        if not weight.any():
            continue
        out += np.asarray(_blur(image, float(sig)), dtype=np.float32) * weight[..., None]
    return out


def _decode_albedo(surface: Surface, ring: np.ndarray) -> F32:
    # Albedo is stored square-root encoded to keep dark leathers smooth.
    if ring.dtype == np.uint8:
        lut = _square_lut()
        out = np.empty((*ring.shape[:2], 3), dtype=np.float32)
        for k in range(3):
            np.multiply(lut.take(ring[..., k]), surface.albedo_scale[k], out=out[..., k])
        return out
    enc = ring[..., :3] * np.float32(1.0 / 255.0)
    return f32(enc * enc * surface.albedo_scale[None, None, :])


@functools.lru_cache(maxsize=1)
def _square_lut() -> F32:
    return ((np.arange(256, dtype=np.float32) / np.float32(255.0)) ** 2).astype(np.float32)


def _empty_stage(h: int, w: int, ring: float, rake: float, uv: float, optics: Optics) -> F32:
    """Nothing under the lens: the stage far below focus reflects a little, without any detail."""
    level = (
        ring * optics.ring_e_per_us + 0.3 * rake * optics.raking_e_per_us + 0.05 * uv * optics.uv_e_per_us
    ) * _EMPTY_STAGE_ALBEDO
    return np.full((h, w, 3), np.float32(level), dtype=np.float32)


def _motion_blur(radiance: F32, length_px: float, angle_deg: float) -> F32:
    """Smear along a line of ``length_px`` (average of shifted copies; the margin supplies the edges)."""
    taps = max(2, math.ceil(length_px) + 1)
    a = math.radians(angle_deg)
    h, w = radiance.shape[:2]
    out = np.zeros_like(radiance)
    pad = math.ceil(0.5 * length_px) + 1
    padded = np.pad(radiance, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    for t in np.linspace(-0.5 * length_px, 0.5 * length_px, taps):
        dx, dy = round(t * math.cos(a)), round(t * math.sin(a))
        out += padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    return out / np.float32(taps)


def _resize(radiance: F32, w: int, h: int) -> F32:
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(radiance[..., k])).resize((w, h), Image.Resampling.BILINEAR))
        for k in range(3)
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _vignette(h: int, w: int, strength: float) -> F32:
    y = (np.arange(h, dtype=np.float32) + 0.5 - 0.5 * h) / np.float32(0.5 * h)
    x = (np.arange(w, dtype=np.float32) + 0.5 - 0.5 * w) / np.float32(0.5 * w)
    aspect = h / w
    r2 = (x[None, :] ** 2 + (aspect * y[:, None]) ** 2) / np.float32(1.0 + aspect * aspect)
    out = (1.0 - np.float32(strength) * r2).astype(np.float32)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _dust(seed: int, h: int, w: int) -> F32:
    """Transmission of the cover glass (1 clear): soft specks and faint scratches, fixed to the sensor."""
    rng = np.random.default_rng([seed, 0x0D057])
    out = np.ones((h, w), dtype=np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    for _ in range(int(rng.integers(3, 12))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = float(rng.uniform(0.003, 0.014)) * w
        opacity = float(rng.uniform(0.12, 0.55))
        x0, x1 = max(0, int(cx - 3 * r)), min(w, int(cx + 3 * r) + 1)
        y0, y1 = max(0, int(cy - 3 * r)), min(h, int(cy + 3 * r) + 1)
        d2 = (xx[:, x0:x1] - cx) ** 2 + (yy[y0:y1] - cy) ** 2
        out[y0:y1, x0:x1] *= 1.0 - opacity * np.exp(-d2 / np.float32(2 * r * r))
    for _ in range(int(rng.integers(0, 3))):
        a = rng.uniform(0, math.pi)
        px, py = rng.uniform(0, w), rng.uniform(0, h)
        dist = np.abs((xx - px) * math.sin(a) - (yy - py) * math.cos(a))
        along = np.abs((xx - px) * math.cos(a) + (yy - py) * math.sin(a))
        width = max(0.8, 0.0015 * w)
        line = np.exp(-((dist / np.float32(width)) ** 2)) * (along < rng.uniform(0.1, 0.5) * w)
        out *= 1.0 - float(rng.uniform(0.08, 0.22)) * line
    out.setflags(write=False)
    return out


_noise_bank: F32 | None = None


def _standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> F32:
    """Standard normal noise of ``shape``: a random window of a shared bank when small enough (fast), else fresh."""
    global _noise_bank
    n = int(np.prod(shape))
    if n > _NOISE_BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    if _noise_bank is None:
        _noise_bank = np.random.default_rng(0x5EED).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
    start = int(rng.integers(0, _NOISE_BANK_SIZE - n))
    sign = np.float32(1.0 if rng.random() < 0.5 else -1.0)
    return (_noise_bank[start : start + n] * sign).reshape(shape)


@functools.lru_cache(maxsize=4)
def _srgb_lut(bits: int) -> npt.NDArray[np.uint8]:
    x = np.arange(1 << bits, dtype=np.float64) / ((1 << bits) - 1)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(srgb * 255.0), 0, 255).astype(np.uint8)
