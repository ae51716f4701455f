"""Test-time augmentation and prediction: the views of a batch (none, flip, ten_crop), a compiled
noise-free predictor averaging them, and `predict` over a dataset. TensorFlow is imported inside."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from pseudolabel.evaluation.metrics import EvaluationError

__all__ = ["DEFAULT_CROP_FRACTION", "TTA_MODES", "predict", "tta_predictor", "tta_views"]

TTA_MODES = ("none", "flip", "ten_crop")
DEFAULT_CROP_FRACTION = 0.875


def tta_views(images, mode: str = "none", *, size: int | None = None,
              crop_fraction: float = DEFAULT_CROP_FRACTION) -> list:
    """The test-time views of a batch `[B, S, S, 3]`, each `[B, size, size, 3]` (size default S).

    none: the image; flip: image + horizontal flip; ten_crop: 4 corner crops and the centre crop
    at `crop_fraction` of the side (order: top-left, top-right, bottom-left, bottom-right, centre),
    then their horizontal flips, each resized (bilinear) to `size`. Views already at `size`
    are not resampled, so they are exact.
    """
    import tensorflow as tf

    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    height, width = int(images.shape[1]), int(images.shape[2])
    size = int(size or height)

    def fit(view):
        if view.shape[1] == size and view.shape[2] == size:
            return view
        return tf.image.resize(view, (size, size), method="bilinear")

    def hflip(view):
        return tf.reverse(view, axis=[2])

    if mode == "none":
        return [fit(images)]
    if mode == "flip":
        return [fit(images), fit(hflip(images))]
    crops = [images[:, top:top + ch, left:left + cw, :] for top, left, ch, cw in _ten_crop_boxes(height, width, crop_fraction)]
    crops = [fit(c) for c in crops]
    return crops + [hflip(c) for c in crops]


def _ten_crop_boxes(height: int, width: int, fraction: float) -> list[tuple[int, int, int, int]]:
    """(top, left, crop_h, crop_w) of the 4 corners and the centre."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {fraction}")
    ch, cw = max(1, round(height * fraction)), max(1, round(width * fraction))
    bottom, right = height - ch, width - cw
    return [(0, 0, ch, cw), (0, right, ch, cw), (bottom, 0, ch, cw), (bottom, right, ch, cw),
            (bottom // 2, right // 2, ch, cw)]


def _model_input_size(model) -> int | None:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else getattr(model, "input_shape", None)
    return int(shape[1]) if shape is not None and shape[1] is not None else None


def _image_batches(dataset, batch_size: int | None) -> Iterable:
    """Image batches from a tf.data.Dataset / iterable of batches (or (images, ...) tuples) or an array."""
    if isinstance(dataset, np.ndarray):
        step = batch_size or 32
        for start in range(0, len(dataset), step):
            yield dataset[start:start + step]
        return
    for element in dataset:
        yield element[0] if isinstance(element, (tuple, list)) else element


def tta_predictor(model, tta: str = "none", *, image_hw, crop_fraction: float = DEFAULT_CROP_FRACTION):
    """A compiled `images [B, H, W, 3] -> probabilities [B, K]`, averaged over the TTA views, in
    inference mode. One function for all batches of `image_hw` pixels: the batch dimension is
    None, so the last, smaller batch does not trigger a retrace."""
    import tensorflow as tf

    if tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    size = _model_input_size(model)

    @tf.function(input_signature=[tf.TensorSpec([None, *image_hw, 3], tf.float32)])
    def averaged_probs(images):
        views = tta_views(images, tta, size=size, crop_fraction=crop_fraction)
        return tf.reduce_mean(tf.stack([model(v, training=False) for v in views]), axis=0)

    return averaged_probs


def predict(model, dataset, *, tta: str = "none", batch_size: int | None = None,
            crop_fraction: float = DEFAULT_CROP_FRACTION) -> np.ndarray:
    """Probabilities `[N, K]` of a Keras classifier, averaged over the test-time views of `tta`.

    `dataset` yields float32 pixel batches `[B, S, S, 3]` (or `(images, ...)` tuples; the first
    element is used), or is an array `[N, S, S, 3]` cut into `batch_size` batches (default 32).
    Views are resized to the model's input size. The model runs in inference mode, compiled.
    """
    import tensorflow as tf

    if tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    out, averaged_probs = [], None
    for batch in _image_batches(dataset, batch_size):
        batch = tf.cast(batch, tf.float32)
        if averaged_probs is None:
            averaged_probs = tta_predictor(model, tta, image_hw=batch.shape[1:3], crop_fraction=crop_fraction)
        out.append(averaged_probs(batch).numpy())
    if not out:
        raise EvaluationError("the dataset yielded no images")
    return np.concatenate(out).astype(np.float32)
