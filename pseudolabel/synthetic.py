"""Small synthetic image sets for tests and `pseudolabel demo`.

Two kinds of images:
- "stripes" (tests): class k gets stripes at its own angle and its own colour cast, plus noise,
  so a tiny model learns them in seconds.
- "texture" (the demo): the class is only the fineness of a faint grating (class k: a period of
  about 8 / 1.8**k pixels), drawn on a patch of random place, size, colours and contrast over
  a random background with blobs and heavy noise. Colour, position and scale say nothing about
  the class, so a model that sees a few dozen labeled images latches onto them, while hundreds
  of (pseudo-)labeled ones teach it to look at the texture: the task where Noisy Student helps.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def synthetic_image(class_index: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One HxWx3 uint8 image of class `class_index`."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = np.pi * class_index / 2.0 + rng.normal(0, 0.15)
    freq = rng.uniform(3, 5)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6.3))
    cast = np.roll(np.array([0.9, 0.5, 0.3], np.float32), class_index)
    img = stripes[..., None] * cast * 200 + rng.normal(0, 18, (size, size, 3)) + 25
    return np.clip(img, 0, 255).astype(np.uint8)


def texture_image(class_index: int, rng: np.random.Generator, size: int = 32, *, period_ratio: float = 1.8,
                  contrast=(20, 45), noise=(12, 28)) -> np.ndarray:
    """One HxWx3 uint8 "texture" image of class `class_index` (see the module docstring): the
    grating's period shrinks by `period_ratio` per class; its amplitude and the pixel noise's
    standard deviation are drawn from the `contrast` and `noise` ranges (the task's difficulty)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base, tint = rng.uniform(40, 215, 3), rng.uniform(-60, 60, 3)
    ramp = (np.cos(rng.uniform(0, 2 * np.pi)) * xx + np.sin(rng.uniform(0, 2 * np.pi)) * yy) / size
    img = base + ramp[..., None] * tint
    for _ in range(int(rng.integers(3, 6))):  # blobs: colour and shape clutter with no class
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(2, size / 4)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    period = 8.0 / period_ratio ** class_index * rng.uniform(0.85, 1.15)
    angle = rng.uniform(0, np.pi)
    grating = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period + rng.uniform(0, 2 * np.pi))
    half = rng.uniform(0.3, 0.5) * size
    cy, cx = rng.uniform(half, size - half, 2)
    patch = (np.abs(yy - cy) < half) & (np.abs(xx - cx) < half)
    img[patch] += (grating[patch] * rng.uniform(*contrast))[:, None] * rng.uniform(0.3, 1.0, 3)
    img += rng.normal(0, rng.uniform(*noise), (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


IMAGE_KINDS = {"stripes": synthetic_image, "texture": texture_image}


def write_synthetic_dataset(
    root: str | Path,
    n_labeled: int = 40,
    n_unlabeled: int = 40,
    n_classes: int = 2,
    size: int = 32,
    seed: int = 0,
    letters: str = "MO",
    kind: str = "stripes",
    truth_names: Sequence[str] | None = None,
    draw_options: dict | None = None,
) -> Path:
    """Write a House-Rooms-shaped tree under `root` and return the labels CSV path.

    root/Labeled/img_{i}.jpg (labeled, listed in root/labels.csv with class letters from `letters`),
    root/Pool/img_{i}.jpg (unlabeled pool of the same classes, unlisted). `kind`: "stripes" or
    "texture" (see the module docstring). With `truth_names` (the class name of each letter), the
    pool's true classes go to root/pool_truth.csv (image,label; absolute paths, class names).
    `draw_options`: keyword arguments of the kind's image function (the texture task's difficulty).
    """
    import functools

    root = Path(root)
    rng = np.random.default_rng(seed)
    draw = functools.partial(IMAGE_KINDS[kind], **(draw_options or {}))
    (root / "Labeled").mkdir(parents=True, exist_ok=True)
    (root / "Pool").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_labeled):
        k = i % n_classes
        rel = f"Labeled/img_{i + 1}.jpg"
        Image.fromarray(draw(k, rng, size)).save(root / rel, quality=95)
        rows.append((rel, letters[k]))
    truth = []
    for i in range(n_unlabeled):
        k = int(rng.integers(n_classes))
        Image.fromarray(draw(k, rng, size)).save(root / f"Pool/img_{i + 1}.jpg", quality=95)
        truth.append((str((root / f"Pool/img_{i + 1}.jpg").resolve()), truth_names[k] if truth_names else ""))
    if truth_names:
        with open(root / "pool_truth.csv", "w", newline="") as f:
            csv.writer(f).writerows([("image", "label"), *truth])
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    return labels
