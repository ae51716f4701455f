"""The pseudo-label table format: `image,pool,sha256,p_<class>...,confidence,predicted`, one row
per labeled pool image, and its sidecars `<table>.skipped.csv` (images not labeled, with the
reason) and `<table>.summary.json` (rows per pool and predicted class, settings)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.data import DataError
from pseudolabel.rundir import atomic_path, file_sha256

FIXED_COLUMNS = ("image", "pool", "sha256")
TAIL_COLUMNS = ("confidence", "predicted")

__all__ = ["FIXED_COLUMNS", "TAIL_COLUMNS", "PseudoLabelError", "PseudoLabelTable", "class_counts", "file_sha256",
           "format_row", "format_summary", "header", "read_pseudo_labels", "read_skipped", "sidecar",
           "table_summary", "write_skipped"]


class PseudoLabelError(DataError):
    """A pseudo-label table that cannot be read or selected from as asked (the CLI shows it cleanly)."""


@dataclass
class PseudoLabelTable:
    """The rows of a pseudo-label table: one readable pool image each, with the teacher's probs."""

    images: list[str]
    pools: list[str]
    sha256: list[str]
    probs: np.ndarray  # [N, K] float32, rows sum to 1
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(axis=1) if len(self) else np.zeros(0, np.float32)

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class index per row."""
        return self.probs.argmax(axis=1) if len(self) else np.zeros(0, np.int64)

    @property
    def predicted_names(self) -> list[str]:
        return [self.class_names[k] for k in self.predicted]

    def summary(self) -> dict:
        """Rows per pool and per predicted class (what `label` prints and saves)."""
        return {
            "n": len(self),
            "per_pool": dict(Counter(self.pools)),
            "per_class": {name: int(n) for name, n in zip(self.class_names, class_counts(self.predicted, len(self.class_names)))},
        }


def class_counts(predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows per class index 0..num_classes-1."""
    return np.bincount(np.asarray(predicted, np.int64), minlength=num_classes)[:num_classes]


def header(class_names: Sequence[str]) -> list[str]:
    return [*FIXED_COLUMNS, *(f"p_{c}" for c in class_names), *TAIL_COLUMNS]


def format_row(image: str, pool: str, sha: str, probs: np.ndarray, class_names: Sequence[str]) -> list:
    """One table row of the image's probabilities."""
    k = int(np.argmax(probs))
    # %.9g round-trips float32 exactly, so a re-read table gives the same selection.
    return [image, pool, sha, *(f"{float(p):.9g}" for p in probs), f"{float(probs[k]):.9g}", class_names[k]]


def read_pseudo_labels(path: str | Path) -> PseudoLabelTable:
    """Read a table written by `label_pools`."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            rows = [r for r in reader if r]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such pseudo-label table") from None
    class_names = _class_names_from_header(path, head)
    k = len(class_names)
    try:
        probs = np.array([[float(v) for v in r[3:3 + k]] for r in rows], dtype=np.float32).reshape(len(rows), k)
    except ValueError as e:
        raise PseudoLabelError(f"{path}: malformed probability ({e})") from None
    return PseudoLabelTable(
        images=[r[0] for r in rows], pools=[r[1] for r in rows], sha256=[r[2] for r in rows],
        probs=probs, class_names=class_names,
    )


def _class_names_from_header(path: Path, head: list[str] | None) -> list[str]:
    if (not head or tuple(head[:3]) != FIXED_COLUMNS or tuple(head[-2:]) != TAIL_COLUMNS
            or not all(h.startswith("p_") for h in head[3:-2]) or len(head) < 7):
        raise PseudoLabelError(
            f"{path}: not a pseudo-label table (expected header image,pool,sha256,p_<class>...,"
            f"confidence,predicted; got {head})")
    return [h[2:] for h in head[3:-2]]


def sidecar(table_path: str | Path, kind: str) -> Path:
    """`pseudo.csv` -> `pseudo.skipped.csv` / `pseudo.summary.json` / `pseudo.pools.json`."""
    table_path = Path(table_path)
    suffix = ".json" if kind in ("summary", "pools") else ".csv"
    return table_path.with_name(f"{table_path.stem}.{kind}{suffix}")


def write_skipped(out_path: Path, skipped: list[tuple]) -> None:
    """`<table>.skipped.csv`: image,pool,reason of the images not labeled."""
    with atomic_path(sidecar(out_path, "skipped")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "pool", "reason"])
        writer.writerows(skipped)


def read_skipped(out_path: Path) -> list[tuple]:
    path = sidecar(out_path, "skipped")
    if not path.exists():
        raise PseudoLabelError(f"{path}: missing (every table written by label_pools has one)")
    with open(path, newline="") as f:
        return [tuple(row) for row in list(csv.reader(f))[1:] if row]


def table_summary(out_path: Path, class_names: list[str], row_pools: list[str], predicted: np.ndarray,
                  skipped: list[tuple], *, tta: str, image_size: int) -> dict:
    """`<table>.summary.json`: rows per pool and predicted class, skipped images, settings."""
    return {
        "n": len(row_pools),
        "per_pool": dict(Counter(row_pools)),
        "per_class": dict(zip(class_names, np.asarray(predicted).tolist())),
        "skipped": len(skipped),
        "skipped_per_pool": dict(Counter(pool for _, pool, _ in skipped)),
        "tta": tta, "image_size": int(image_size), "table": str(out_path),
    }


def format_summary(summary: dict) -> str:
    pools = ", ".join(f"{name}: {n}" for name, n in summary["per_pool"].items()) or "none"
    classes = ", ".join(f"{name}: {n}" for name, n in summary["per_class"].items())
    return (f"pseudo-labeled {summary['n']} images ({pools}); predicted {classes}; "
            f"skipped {summary['skipped']} unreadable -> {summary['table']}")
