"""Keras' own EfficientNetB0..B7 as `backbone` models, with configurable stochastic depth.

Stochastic depth: the public constructors fix `drop_connect_rate` at 0.2 and build it as
per-sample Dropout layers `block*_drop` (noise_shape (None, 1, 1, 1)) whose rate rises linearly,
`0.2 * b / num_blocks`. Keras 3's `Dropout.call` reads `self.rate` at call time, so we set each
layer's `rate` to `drop_connect_rate * b / num_blocks` (the same linear schedule) right after
construction, before anything is traced. `rate` is also what `Dropout.get_config` saves, so the
new rates survive a `.keras` round trip. This uses only the public constructor and the layer's
public attribute; the private `keras.src...EfficientNet(drop_connect_rate=...)` is avoided.

Weights from a keras-applications `.h5` file are loaded by passing the path to the constructor
(no hash check, no deletion). Keras only adds its ImageNet stddev correction (a Rescaling after
the Normalization layer) when `weights="imagenet"`; with a path we fold the same correction into
the Normalization variance: (x - m) / sqrt(v) / sqrt(s) == (x - m) / sqrt(v * s).
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np

from pseudolabel.backbones.weights import keras_weights_remedy, loading_weights_file


# Keras' built-in schedule: the top rate of its public constructors.
KERAS_DROP_CONNECT_RATE = 0.2
# keras.src.applications.efficientnet.IMAGENET_STDDEV_RGB (private, hence copied).
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
_DROP_LAYER = re.compile(r"^block\d+[a-z]+_drop$")


def build_keras_efficientnet(variant: int, image_size: int, weights_file: Path | None,
                             drop_connect_rate: float) -> keras.Model:
    """B{variant} backbone; `weights_file` from `weights.resolve_keras_weights_arg` (None: random)."""
    constructor = getattr(keras.applications, f"EfficientNetB{variant}")
    legacy_h5 = weights_file is not None and not weights_file.name.endswith(".weights.h5")
    remedy = keras_weights_remedy(variant, weights_file) if weights_file is not None else ""
    with loading_weights_file(weights_file, remedy):
        inner = constructor(
            include_top=False,
            weights=str(weights_file) if legacy_h5 else None,
            input_shape=(image_size, image_size, 3),
            pooling="avg",
        )
    if legacy_h5:
        fold_imagenet_stddev(inner)
    _rescale_keras_drop_rates(inner, drop_connect_rate)
    # Same layers, flat, under the project's name.
    backbone = keras.Model(inner.input, inner.output, name="backbone")  # single tensors, not lists
    if weights_file is not None and not legacy_h5:
        with loading_weights_file(weights_file, "replace it with a .weights.h5 saved from this backbone"):
            backbone.load_weights(weights_file)   # a backbone saved by us: correction already folded
    return backbone


def drop_layers(model: keras.Model) -> list[keras.layers.Dropout]:
    """The stochastic-depth Dropout layers (`block*_drop`), in network order."""
    return [layer for layer in model.layers if _DROP_LAYER.match(layer.name)]


def _rescale_keras_drop_rates(model: keras.Model, drop_connect_rate: float) -> None:
    """Rescale Keras' linear 0..0.2 stochastic-depth schedule to 0..drop_connect_rate.

    Only valid on a freshly constructed model, whose rates are still Keras' own.
    """
    if not 0.0 <= drop_connect_rate < 1.0:
        raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}")
    for layer in drop_layers(model):
        # Keras built rate = 0.2 * b / blocks; recover b / blocks and apply the requested top rate.
        # (Layers exist only where Keras' rate was > 0, so each has its seed generator.)
        layer.rate = float(layer.rate) / KERAS_DROP_CONNECT_RATE * drop_connect_rate


def fold_imagenet_stddev(model: keras.Model) -> None:
    norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    mean, variance, count = norm.get_weights()
    norm.set_weights([mean, variance * np.asarray(IMAGENET_STDDEV_RGB, dtype=variance.dtype), count])
    norm.finalize_state()   # the layer caches mean/variance tensors from its variables
