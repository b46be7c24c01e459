"""Training-time tile sampling and augmentation, and synthetic outlier tiles, as TensorFlow ops.

Augmentations model what varies between captures of one surface and not between
materials or makers: position, rotation (never mirroring), optionally scale,
exposure, contrast and white balance (a few percent per channel), and sensor
noise. Hue is otherwise left alone, since dye colour can be evidence.

Outlier tiles (blank, noise, gradients, smooth blobs, stripes, 1/f noise,
hard-edged mosaics, chequers, printed marks) teach the material head a class for "none of the
materials", so inputs unlike any specimen lose familiarity even where the
embedding statistics alone would not notice.
"""

from __future__ import annotations

import math
from typing import Any

from veriscope.training._tf import tf


def random_tiles(pixels: Any, count: int, tile_px: int, scale_jitter: float) -> Any:
    """``count`` augmented ``tile_px`` tiles (float32 0..255) cut at random from one working-scale image."""
    image = tf.cast(pixels, tf.float32)
    shape = tf.shape(image)
    limit = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    log_jitter = math.log1p(scale_jitter)
    tiles = []
    for _ in range(count):
        scale = tf.exp(tf.random.uniform([], -log_jitter, log_jitter))
        side = tf.cast(tf.minimum(tf.round(tile_px * scale), limit), tf.int32)
        crop = tf.image.random_crop(image, tf.stack([side, side, 3]))
        crop = tf.image.resize(crop, [tile_px, tile_px], method="area", antialias=True)
        # Quarter turns only: the scanner sits at any angle, but never sees a mirror image, and mirroring
        # would swap S- and Z-twisted yarns and twill directions, which tell some counterfeits apart.
        crop = tf.image.rot90(crop, tf.random.uniform([], 0, 4, dtype=tf.int32))
        tiles.append(crop)
    batch = tf.stack(tiles)
    # Exposure, contrast and a little white balance vary between units and sessions.
    gain = tf.random.uniform([count, 1, 1, 1], 0.85, 1.15) * tf.random.uniform([count, 1, 1, 3], 0.96, 1.04)
    mean = tf.reduce_mean(batch, axis=[1, 2], keepdims=True)
    contrast = tf.random.uniform([count, 1, 1, 1], 0.85, 1.15)
    batch = (batch - mean) * contrast + mean * gain
    noise_std = tf.random.uniform([count, 1, 1, 1], 0.0, 3.0)
    batch = batch + tf.random.normal(tf.shape(batch)) * noise_std
    return tf.clip_by_value(batch, 0.0, 255.0)


def _outlier(seed: Any, tile_px: int) -> Any:
    base = tf.stack([seed, tf.constant(0, tf.int64)])

    def sub(k: int) -> Any:
        # Each draw gets its own stateless seed, derived from the tile's.
        return base + tf.constant([0, k], tf.int64)

    def uniform(shape: Any, lo: float, hi: float, k: int) -> Any:
        return tf.random.stateless_uniform(shape, seed=sub(k), minval=lo, maxval=hi)

    colour = uniform([1, 1, 3], 0.0, 255.0, 1)
    colour2 = uniform([1, 1, 3], 0.0, 255.0, 2)
    grid = tf.cast(tf.range(tile_px), tf.float32)
    yy, xx = tf.meshgrid(grid, grid, indexing="ij")
    angle = uniform([], 0.0, math.pi, 3)
    along = (tf.cos(angle) * xx + tf.sin(angle) * yy)[:, :, None]

    def flat() -> Any:
        return colour + tf.zeros([tile_px, tile_px, 3])

    def noise() -> Any:
        std = uniform([], 10.0, 90.0, 4)
        return colour + tf.random.stateless_normal([tile_px, tile_px, 3], seed=sub(5)) * std

    def gradient() -> Any:
        t = along / (tile_px * 1.5) + 0.25
        return colour * (1.0 - t) + colour2 * t

    def blobs() -> Any:
        cells = tf.cast(uniform([], 3.0, 12.0, 6), tf.int32)
        coarse = tf.random.stateless_uniform(tf.stack([cells, cells, 3]), seed=sub(7))
        smooth = tf.image.resize(coarse, [tile_px, tile_px], method="bicubic")
        return colour * 0.5 + smooth * uniform([], 40.0, 200.0, 8)

    def stripes() -> Any:
        period = uniform([], 3.0, 24.0, 9)
        wave = 0.5 + 0.5 * tf.sin(2.0 * math.pi * along / period)
        return colour * wave + colour2 * (1.0 - wave)

    def fractal() -> Any:
        # 1/f noise over four octaves with its own colour per octave: rock, soil and foliage-like textures.
        out = colour * 0.5
        for octave in range(4):
            cells = 4 * 2**octave
            coarse = tf.random.stateless_uniform([cells, cells, 3], seed=sub(20 + octave), minval=-1.0, maxval=1.0)
            weight = uniform([1, 1, 3], 20.0, 90.0, 30 + octave) / (1.4**octave)
            out = out + tf.image.resize(coarse, [tile_px, tile_px], method="bicubic") * weight
        return out

    def mosaic() -> Any:
        # Flat patches with hard edges, as in photographs of man-made things, text or packaging.
        cells = tf.cast(uniform([], 2.0, 10.0, 13), tf.int32)
        coarse = tf.random.stateless_uniform(tf.stack([cells, cells, 3]), seed=sub(14)) * 255.0
        patches = tf.image.resize(coarse, [tile_px, tile_px], method="nearest")
        return tf.image.rot90(patches, tf.cast(uniform([], 0.0, 4.0, 15), tf.int32))

    def checker() -> Any:
        period = uniform([], 4.0, 40.0, 16)
        across = (-tf.sin(angle) * xx + tf.cos(angle) * yy)[:, :, None]
        square = tf.sign(tf.sin(math.pi * along / period) * tf.sin(math.pi * across / period))
        return colour * (0.5 + 0.5 * square) + colour2 * (0.5 - 0.5 * square)

    def marks() -> Any:
        # Dark printed marks on a light ground, as on labels, tags and packaging: thresholded smooth noise.
        cells = tf.cast(uniform([], 6.0, 40.0, 17), tf.int32)
        coarse = tf.random.stateless_uniform(tf.stack([cells, cells, 1]), seed=sub(18))
        field = tf.image.resize(coarse, [tile_px, tile_px], method="bicubic")
        # Thin strokes along a level line of the field, or solid marks above one.
        level = uniform([], 0.3, 0.7, 19)
        stroke = tf.cast(tf.abs(field - level) < uniform([], 0.015, 0.06, 25), tf.float32)
        solid = tf.cast(field > level + 0.15, tf.float32)
        ink = tf.maximum(stroke, solid * tf.cast(uniform([], 0.0, 1.0, 26) > 0.5, tf.float32))
        paper = uniform([1, 1, 3], 170.0, 250.0, 24)
        return paper * (1.0 - ink) + colour * 0.3 * ink

    kind = tf.random.stateless_uniform([], seed=sub(10), minval=0, maxval=9, dtype=tf.int32)
    tile = tf.switch_case(kind, [flat, noise, gradient, blobs, stripes, fractal, mosaic, checker, marks])
    # Many photographs and prints are grey or muted: desaturate by a random amount.
    grey = tf.reduce_mean(tile, axis=-1, keepdims=True)
    muted = uniform([], -1.0, 1.0, 27)
    tile = grey + (tile - grey) * tf.clip_by_value(1.0 - tf.maximum(muted, 0.0) * 1.5, 0.0, 1.0)
    tile = tile + tf.random.stateless_normal([tile_px, tile_px, 3], seed=sub(11)) * uniform([], 0.0, 4.0, 12)
    return tf.clip_by_value(tile, 0.0, 255.0)


def outlier_dataset(tile_px: int, *, class_index: int, n_materials: int, seed: int) -> Any:
    """An endless ``tf.data`` stream of (tile, class_index, authenticity -1s) synthetic outliers."""
    ignore = tf.fill([n_materials], -1.0)

    def make(value: Any) -> Any:
        return _outlier(value, tile_px), tf.constant(class_index, tf.int32), ignore

    return tf.data.Dataset.random(seed=seed).map(make)


def synthetic_outliers(count: int, tile_px: int, seed: int) -> Any:
    """``count`` outlier tiles as a float32 tensor, for evaluation."""
    return tf.stack([_outlier(tf.constant(seed * 100_003 + i, tf.int64), tile_px) for i in range(count)])
