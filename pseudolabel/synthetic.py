"""Small synthetic image sets for tests and `pseudolabel demo`.

Two (or more) visually separable classes: class k gets stripes at its own angle and its own colour
cast, plus noise, so a tiny model can learn them in seconds while the task is not trivial.
"""

from __future__ import annotations

import csv
from pathlib import Path

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


def write_synthetic_dataset(
    root: str | Path,
    n_labeled: int = 40,
    n_unlabeled: int = 40,
    n_classes: int = 2,
    size: int = 32,
    seed: int = 0,
    letters: str = "MO",
) -> Path:
    """Write a House-Rooms-shaped tree under `root` and return the labels CSV path.

    root/Labeled/img_{i}.jpg (labeled, listed in root/labels.csv with class letters from `letters`),
    root/Pool/img_{i}.jpg (unlabeled pool of the same classes, unlisted).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "Labeled").mkdir(parents=True, exist_ok=True)
    (root / "Pool").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_labeled):
        k = i % n_classes
        rel = f"Labeled/img_{i + 1}.jpg"
        Image.fromarray(synthetic_image(k, rng, size)).save(root / rel, quality=95)
        rows.append((rel, letters[k]))
    for i in range(n_unlabeled):
        k = int(rng.integers(n_classes))
        Image.fromarray(synthetic_image(k, rng, size)).save(root / f"Pool/img_{i + 1}.jpg", quality=95)
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    return labels
