"""The settings of one training run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from veriscope.device.inference.tiling import Tiling

MATERIALS = ("coated-canvas", "grained-leather", "woven-fabric")
"""The materials Veriscope's simulator and the demo model know."""

GENUINE_SOURCE = "genuine"
"""The source name of genuine specimens; every other source is a counterfeit."""

HELD_OUT_SOURCES = ("counterfeit-e", "counterfeit-f")
"""Counterfeit sources kept out of training and threshold choice, reported separately."""

OUTLIER_CLASS = "other"
"""The material class trained on synthetic non-material tiles (blank, noise, gradients, stripes)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Defaults are the demo model's."""

    data_root: Path
    """Specimen images as ``ROOT/<material>/<source>/<item_id>/*.png``."""
    bundle_dir: Path
    """Where the model bundle is written."""
    name: str = "veriscope-demo"
    version: str = "0.3.3"
    materials: tuple[str, ...] = MATERIALS
    held_out_sources: tuple[str, ...] = HELD_OUT_SOURCES
    lighting: tuple[str, ...] = ("white_ring",)
    tiling: Tiling = field(default_factory=lambda: Tiling(work_width_px=512, tile_px=128, grid_rows=3, grid_cols=4))
    embedding_size: int = 32
    width_multiplier: float = 1.0
    """Scales the network's channel counts."""
    epochs: int = 20
    steps_per_epoch: int = 160
    batch_size: int = 64
    crops_per_image: int = 6
    """Random training crops cut from each decoded image before moving on."""
    scale_jitter: float = 0.0
    """Training crops are scaled by up to this fraction either way. Off by default: the captures already vary
    in scale as much as the unit does, and some counterfeits differ from genuine only by a few percent in
    weave or screen pitch, which extra scale jitter would hide."""
    material_weights: tuple[tuple[str, float], ...] = (("woven-fabric", 2.0),)
    """Relative share of training tiles per material (others 1.0), whatever its image count. Woven fabric gets
    twice the share: trained at equal shares the network under-learns it, the hardest of the three (see
    models/README.md). Materials absent from the data are ignored."""
    outlier_fraction: float = 0.1
    """Share of each batch drawn from synthetic outlier tiles."""
    learning_rate: float = 3e-3
    val_fraction: float = 0.25
    """Share of each (material, source)'s items used to calibrate and choose thresholds."""
    test_fraction: float = 0.25
    """Share of each (material, source)'s items kept to report metrics on."""
    target_far: float = 0.001
    """False-accept rate the item threshold is chosen for on validation items."""
    genuine_quantile: float = 0.02
    """Genuine validation items below this share's score are allowed to fall in or below the abstain band."""
    abstain_margin_logit: float = 0.5
    """Width of the abstain band above the threshold, in calibrated logits."""
    familiarity_threshold: float = 0.5
    """Least image familiarity accepted as the expected material."""
    familiar_quantile: float = 0.995
    """Share of in-distribution validation tiles whose embedding familiarity stays above one half."""
    image_familiar_margin: float = 1.5
    """An image's mean embedding is half familiar at this many times the 99.9 % (log-normal) distance of
    in-distribution validation images."""
    genuine_images: int = 400
    """Genuine training images whose mean embeddings give each material's genuine references."""
    genuine_distance_z: float = 3.09
    """A region farther from the genuine references than this quantile (in standard deviations of a log-normal
    fitted to genuine validation items; 3.09 is 99.9 %) scores below its threshold."""
    texture_item_budget: float = 0.025
    """Share of genuine items the whole-frame texture limits may turn away, spread evenly over every family of every
    region of the item type with the most regions: a tote's 3 regions x 4 families make 12 limits, each at the
    99.79 % quantile. Texture is what catches counterfeits the network never saw, so each limit is as tight as
    the whole item's budget allows."""
    texture_distance_z: float | None = None
    """Each texture limit's quantile in standard deviations of a log-normal fit (2.58 is 99.5 %), overriding
    ``texture_item_budget``."""
    texture_min_images: int = 32
    """Fewest genuine training images of a material its texture references are fitted from (fewer: none)."""
    texture_folds: int = 5
    """Folds of genuine training items whose out-of-fold distances join validation's in setting texture limits."""
    texture_head_l2: float = 1.0
    """L2 strength on the supervised texture head's standardised weights."""
    texture_components: int = 32
    """Most principal axes kept per family of genuine whole-frame texture references (also at most its width, and one
    per four genuine images)."""
    material_texture_quantile: float = 0.9999
    """Quantile (of a log-normal fit to out-of-fold single frames of every trained source) of each family's
    per-frame limit in a material's whole-material texture references."""
    material_texture_margin: float = 1.5
    """The whole-material limits lie this many times beyond that quantile: they are there to turn away what is not
    the material at all, never one of its frames."""
    representative_images: int = 120
    """Training images whose tiles calibrate the int8 quantisation."""
    open_set_images: int = 240
    """Training images whose tile embeddings give each material's open-set statistics."""
    seed: int = 0
    threads: int = 2
    """CPU threads TensorFlow may use."""
    checkpoint: Path | None = None
    """Where to save the trained float network (``.keras``); with ``reuse_checkpoint``, load it instead of training."""
    reuse_checkpoint: bool = False
    smoke: bool = False
    """A tiny run through the same code path, for tests."""
    item_types: tuple[dict[str, object], ...] = ()
    """The catalog snapshot written to the manifest; empty means one single-region type per material."""

    def smoke_variant(self) -> TrainConfig:
        """This config cut down to a run of seconds."""
        from dataclasses import replace

        return replace(
            self,
            epochs=1,
            steps_per_epoch=4,
            batch_size=16,
            crops_per_image=2,
            representative_images=8,
            open_set_images=12,
            genuine_images=8,
            texture_min_images=2,
            width_multiplier=0.5,
            tiling=Tiling(work_width_px=256, tile_px=64, grid_rows=2, grid_cols=2),
            smoke=True,
        )
