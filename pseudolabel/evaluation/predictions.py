"""`test_predictions.csv` (`image,label,p_<class>...`, label = class index): one row per test
image, what `report` reads to compare runs on the same test images."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from pseudolabel.evaluation.metrics import EvaluationError, as_labels, as_prob_matrix
from pseudolabel.rundir import atomic_path

__all__ = ["Predictions", "read_predictions", "write_predictions"]


class Predictions(NamedTuple):
    """The content of a `test_predictions.csv`."""

    images: list[str]
    y_true: np.ndarray      # [N] class indices
    probs: np.ndarray       # [N, K]
    class_names: list[str]


def write_predictions(path, images: Sequence, y_true, probs, class_names: Sequence[str]) -> Path:
    """Write `test_predictions.csv` (`image,label,p_<class>...`, label = class index), atomically."""
    y = as_labels(y_true)
    p = as_prob_matrix(probs, len(y))
    names = [str(c) for c in class_names]
    if len(images) != len(y):
        raise EvaluationError(f"{len(images)} image names for {len(y)} labels")
    if len(names) != p.shape[1]:
        raise EvaluationError(f"{len(names)} class names for {p.shape[1]} probability columns")
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "label"] + [f"p_{c}" for c in names])
            for image, label, row in zip(images, y, p):
                writer.writerow([str(image), int(label)] + [repr(float(v)) for v in row])
    return Path(path)


def read_predictions(path) -> Predictions:
    """Read a `test_predictions.csv` written by `write_predictions`."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[:2] != ["image", "label"] or not all(h.startswith("p_") for h in header[2:]):
            raise EvaluationError(f"{path}: expected header image,label,p_<class>..., got {header}")
        rows = [r for r in reader if r]
    names = [h[2:] for h in header[2:]]
    try:
        y = np.array([int(r[1]) for r in rows], dtype=np.int64)
        probs = np.array([[float(v) for v in r[2:]] for r in rows], dtype=np.float64).reshape(len(rows), len(names))
    except ValueError as err:
        raise EvaluationError(f"{path}: malformed row ({err})") from None
    return Predictions([r[0] for r in rows], y, probs, names)
