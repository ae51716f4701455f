"""Registered augmentation policies (albumentations 2.x) on single uint8 HxWx3 RGB images.

    aug = get_augment("randaugment", image_size=224, magnitude=12, seed=0)
    out = aug(image)             # next draw of the augmenter's own seeded stream
    out = aug(image, seed=1234)  # a pure function of (image, seed): what the tf.data pipeline uses

Policies:
  none         identity
  flip         horizontal flip (p = 0.5)
  teacher      the original Keras tutorial's ImageDataGenerator noise: rotation +-20 deg, zoom 0.15,
               width/height shift 0.2, shear 0.15 rad, horizontal flip, brightness x0.8-1.2
  randaugment  Noisy Student's student noise: N ops (default 2) drawn from RandAugment's list, each
               at `magnitude` on the paper's 0-30 scale, plus horizontal flip and a random resized
               crop. Magnitude 0 makes every op a no-op (flip and crop remain).
  weak         FixMatch's weak view: horizontal flip and a shift of up to 12.5% of the side
               (reflected borders). What online algorithms take their pseudo-labels from.
  strong       FixMatch's strong view: the weak view, then N RandAugment ops (default 2) at
               `magnitude`, then Cutout (one grey square of half the side, as in FixMatch's code).
               What online algorithms train on against the weak view's pseudo-labels.

Every policy returns an image of `image_size` (int or (h, w)); `none`/`flip`/`teacher` keep the
input's shape, which is `image_size` inside the pipeline.

Determinism: with `seed=` per call the output depends only on (image, seed) -- not on threads or call
order -- so tf.data can run augmentation in parallel and stay reproducible. Each thread gets its own
copy of the albumentations pipeline (they hold random state, so one shared copy would race).
"""

from __future__ import annotations

import math
import os
import queue
import random
import threading
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no online version check at import
# albumentations (and OpenCV) are imported where a policy is built, not here: reading a recipe
# checks its augmentation names against this registry, and must stay fast (no 2 s import).
if TYPE_CHECKING:
    import albumentations as A

MAX_MAGNITUDE = 30.0  # RandAugment's scale as Noisy Student uses it (B7 students: 27)
_GREY = (128, 128, 128)  # RandAugment fills uncovered pixels with grey

_REGISTRY: dict[str, Callable[..., A.BasicTransform]] = {}


def register_augment(name: str):
    """Decorator: register `builder(image_size: (h, w), magnitude: float, **options) -> albumentations
    transform` under `name`."""

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"augmentation {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_augments() -> list[str]:
    return sorted(_REGISTRY)


def get_augment(
    name: str, image_size: int | Sequence[int], magnitude: float = 0.0, seed: int | None = 0, **options
) -> "Augmenter":
    """The augmentation `name` as a callable `aug(image, seed=None) -> image` (uint8 HxWx3)."""
    import albumentations as A

    if name not in _REGISTRY:
        raise KeyError(f"unknown augmentation {name!r}; known: {', '.join(list_augments())}")
    if not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ValueError(f"magnitude must be in [0, {MAX_MAGNITUDE:g}], got {magnitude}")
    size = _hw(image_size)
    builder = _REGISTRY[name]
    return Augmenter(name, lambda: A.Compose([builder(size, float(magnitude), **options)]), seed)


class Augmenter:
    """Callable wrapper around an albumentations pipeline: thread-safe and seedable per call."""

    def __init__(self, name: str, build: Callable[[], A.Compose], seed: int | None):
        self.name = name
        self._build = build
        # Idle pipelines, one per call in flight at most. Not thread-local: tf.data runs each
        # numpy_function call on a thread of its own, so a per-thread pipeline would be built anew
        # (milliseconds) for every image, costing far more than augmenting it.
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._stream = np.random.default_rng(seed)  # seeds for calls that bring none
        self._stream_lock = threading.Lock()
        self._idle.put(build())  # fail now, not in a tf.data worker, if the options are wrong

    def __call__(self, image: np.ndarray, seed: int | None = None) -> np.ndarray:
        if seed is None:
            with self._stream_lock:
                seed = int(self._stream.integers(2**63))
        try:
            compose = self._idle.get_nowait()
        except queue.Empty:
            compose = self._build()
        try:
            # One fresh stream shared by all transforms of this call (albumentations' set_random_seed
            # would give every transform the same seed, correlating e.g. flip with rotation).
            compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
            return compose(image=np.ascontiguousarray(image, dtype=np.uint8))["image"]
        finally:
            self._idle.put(compose)

    def __repr__(self):
        return f"Augmenter({self.name!r})"


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


# ---------------------------------------------------------------- policies

@register_augment("none")
def _none(size, magnitude):
    import albumentations as A

    return A.NoOp(p=1.0)


@register_augment("flip")
def _flip(size, magnitude):
    import albumentations as A

    return A.HorizontalFlip(p=0.5)


@register_augment("teacher")
def _teacher(size, magnitude, *, fill_mode: int | None = None):
    """Keras ImageDataGenerator(rotation_range=20, zoom_range=0.15, width/height_shift_range=0.2,
    shear_range=0.15, horizontal_flip=True, brightness_range=(0.8, 1.2)), fill_mode 'nearest'.

    Keras reads shear_range in degrees (0.15 deg is no shear at all); the tutorial meant a visible
    shear, so 0.15 rad (8.6 deg) here. Brightness is multiplicative, as in Keras.
    """
    import albumentations as A
    import cv2

    fill_mode = cv2.BORDER_REPLICATE if fill_mode is None else fill_mode
    return A.Compose([
        A.Affine(rotate=(-20, 20), scale=(0.85, 1.15), translate_percent=(-0.2, 0.2),
                 shear=(-math.degrees(0.15), math.degrees(0.15)), border_mode=fill_mode, p=1.0),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=(0.8, 1.2), contrast=(1, 1), saturation=(1, 1), hue=(0, 0), p=1.0),
    ])


@register_augment("randaugment")
def _randaugment(size, magnitude, *, num_ops: int = 2, crop_scale=(0.6, 1.0), flip: bool = True):
    """RandAugment (Cubuk et al. 2020) as in Noisy Student: `num_ops` ops drawn uniformly (without
    replacement), each at the fixed `magnitude`, random signs where the op has a direction (see
    `randaugment_ops`). Before the ops: a random resized crop of `crop_scale` of the area and a
    horizontal flip, the standard training noise that Noisy Student keeps even for students
    without RandAugment.
    """
    import albumentations as A

    ops = randaugment_ops(magnitude)
    stages = [A.RandomResizedCrop(size=size, scale=tuple(crop_scale), ratio=(3 / 4, 4 / 3), p=1.0)]
    if flip:
        stages.append(A.HorizontalFlip(p=0.5))
    if ops and num_ops > 0:
        stages.append(A.SomeOf(ops, n=min(num_ops, len(ops)), replace=False, p=1.0))
    return A.Compose(stages)


def randaugment_ops(magnitude: float) -> list[A.BasicTransform]:
    """RandAugment's op list at `magnitude` (0-30); empty at 0, where every op would be a no-op.

    At m = magnitude/30: rotate +-30m deg, shear +-0.3m (as a tangent), translate +-0.3m of the side,
    solarize threshold 256(1-m), posterize to 8-4m bits, colour/contrast/brightness x(1 +- 0.9m),
    sharpen alpha up to 0.9m; autocontrast, equalize and identity have no magnitude.
    """
    import albumentations as A
    import cv2

    m = magnitude / MAX_MAGNITUDE
    if m <= 0:
        return []
    shear = math.degrees(math.atan(0.3 * m))
    factor = (max(0.0, 1 - 0.9 * m), 1 + 0.9 * m)
    affine = dict(border_mode=cv2.BORDER_CONSTANT, fill=_GREY, p=1.0)
    bits = int(round(8 - 4 * m))
    still = dict(contrast=(1, 1), saturation=(1, 1), brightness=(1, 1), hue=(0, 0), p=1.0)
    return [
        A.NoOp(p=1.0),  # identity
        A.AutoContrast(p=1.0),
        A.Equalize(mode="pil", p=1.0),
        A.Affine(rotate=(-30 * m, 30 * m), **affine),
        A.Solarize(threshold_range=(1 - m, 1 - m), p=1.0),
        A.ColorJitter(**{**still, "saturation": factor}),  # PIL's ImageEnhance.Color
        A.Posterize(num_bits=(bits, bits), p=1.0),
        A.ColorJitter(**{**still, "contrast": factor}),
        A.ColorJitter(**{**still, "brightness": factor}),
        A.Sharpen(alpha=(0.0, 0.9 * m), lightness=(1.0, 1.0), p=1.0),
        A.Affine(shear={"x": (-shear, shear), "y": (0, 0)}, **affine),
        A.Affine(shear={"x": (0, 0), "y": (-shear, shear)}, **affine),
        A.Affine(translate_percent={"x": (-0.3 * m, 0.3 * m), "y": (0, 0)}, **affine),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.3 * m, 0.3 * m)}, **affine),
    ]


@register_augment("weak")
def _weak(size, magnitude, *, shift: float = 0.125):
    """Flip and shift (FixMatch): the view whose prediction becomes the pseudo-label, mild enough
    that the label stays the image's. `magnitude` is unused."""
    import albumentations as A
    import cv2

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-shift, shift), border_mode=cv2.BORDER_REFLECT_101, p=1.0),
    ])


@register_augment("strong")
def _strong(size, magnitude, *, num_ops: int = 2, cutout: float = 0.5, shift: float = 0.125):
    """The weak view, RandAugment (`num_ops` ops at `magnitude`, see `randaugment_ops`) and Cutout:
    one square of `cutout` x the side, grey (FixMatch's RandAugmentMC + CutoutAbs)."""
    import albumentations as A

    stages = [_weak(size, magnitude, shift=shift)]
    ops = randaugment_ops(magnitude)
    if ops and num_ops > 0:
        stages.append(A.SomeOf(ops, n=min(num_ops, len(ops)), replace=False, p=1.0))
    if cutout > 0:
        stages.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(cutout, cutout),
                                      hole_width_range=(cutout, cutout), fill=_GREY, p=1.0))
    return A.Compose(stages)
