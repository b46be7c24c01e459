"""The network: a small depthwise-separable CNN over one tile, with three outputs.

- ``material_logits``: the materials plus an outlier class.
- ``authenticity_logits``: one genuine-vs-counterfeit logit per material; only
  the tile's own material's column is trained.
- ``embedding``: the linear features both heads read, whose per-material
  statistics give the open-set familiarity.

Only int8-friendly layers (convolutions, batch norm folded at export, ReLU6,
average pooling, dense): the whole graph quantises to int8.
"""

from __future__ import annotations

from typing import Any

from veriscope.training._tf import keras, tf

_BLOCKS = ((32, 2), (64, 2), (64, 1), (128, 2), (128, 1))
"""(channels, stride) of each depthwise-separable block after the stem."""


def _channels(n: int, width: float) -> int:
    return max(8, round(n * width / 8) * 8)


def build(tile_px: int, n_classes: int, n_materials: int, *, embedding_size: int, width: float = 1.0) -> Any:
    """The Keras model: float tiles 0..255 (N x tile x tile x 3) in, the three outputs out, in that order."""
    inputs = keras.Input((tile_px, tile_px, 3), name="tiles")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(_channels(16, width), 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    for channels, stride in _BLOCKS:
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU(6.0)(x)
        x = keras.layers.Conv2D(_channels(channels, width), 1, use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    embedding = keras.layers.Dense(embedding_size, name="embedding")(x)
    hidden = keras.layers.ReLU(6.0)(embedding)
    material = keras.layers.Dense(n_classes, name="material_logits")(hidden)
    authenticity = keras.layers.Dense(n_materials, name="authenticity_logits")(hidden)
    return keras.Model(inputs, [material, authenticity, embedding], name="veriscope_tile_net")


def trainable_view(model: Any) -> Any:
    """The same layers with only the two trained outputs, named for the target dict."""
    material, authenticity, _ = model.outputs
    return keras.Model(
        model.inputs, {"material_logits": material, "authenticity_logits": authenticity}, name="veriscope_train"
    )


def masked_binary_crossentropy(pos_weight: float) -> Any:
    """BCE over the entries of an N x M target that are 0 or 1 (others, -1, are ignored); genuine weighted by ``pos_weight``."""

    def loss(y_true: Any, y_pred: Any) -> Any:
        y_true = tf.cast(y_true, tf.float32)
        mask = tf.cast(y_true >= 0.0, tf.float32)
        target = tf.maximum(y_true, 0.0)
        per = tf.nn.weighted_cross_entropy_with_logits(labels=target, logits=y_pred, pos_weight=pos_weight)
        return tf.reduce_sum(per * mask, axis=-1)

    return loss
