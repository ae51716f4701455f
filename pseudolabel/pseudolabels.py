"""Teacher predictions on unlabeled pools -> a pseudo-label table -> filtered, balanced targets.

Two steps, kept apart so a table (the expensive part) can be re-selected with other settings:

1. `label_pools` runs the teacher WITHOUT noise (inference mode, no augmentation; optional TTA)
   over every image of the already filtered pools and writes one row per readable image:
   `image,pool,sha256,p_<class>...,confidence,predicted`. It streams: images go through
   `pipeline.make_dataset` with no cache, rows are appended to a temporary file beside the table
   as each batch is predicted, and the file is renamed into place only when every batch is done
   (an interrupted run leaves no table under the final name). Unreadable images are skipped and
   listed in `<table>.skipped.csv`; `<table>.summary.json` counts rows per pool and class.

2. `select_pseudo_labels` turns the table into training targets, as the official Noisy Student
   code does (google-research/noisystudent, filter_unlabel.py): soft targets are the teacher's
   probabilities re-tempered (`p**(1/T)` renormalised, i.e. softmax(logits / T)), hard targets
   the argmax one-hot with label smoothing; images whose top probability is below `threshold` are
   dropped; balancing keeps, per predicted class, the most confident images up to `per_class` and
   duplicates the images of classes with fewer. The official code duplicates by random rounding
   of `target / count` copies, so its class counts are only near the target; here every image
   gets `target // count` copies and a seeded random `target % count` of them one more, so each
   class has exactly `target` rows and the same seed gives the same rows.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pseudolabel.data import DataError
from pseudolabel.rundir import atomic_path, atomic_write_json

FIXED_COLUMNS = ("image", "pool", "sha256")
TAIL_COLUMNS = ("confidence", "predicted")
MODES = ("soft", "hard")


class PseudoLabelError(DataError):
    """A pseudo-label table that cannot be read or selected from as asked (the CLI shows it cleanly)."""


# --------------------------------------------------------------------------- the table


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
            "per_class": {name: int(n) for name, n in zip(self.class_names, _class_counts(self.predicted, len(self.class_names)))},
        }


def header(class_names: Sequence[str]) -> list[str]:
    return [*FIXED_COLUMNS, *(f"p_{c}" for c in class_names), *TAIL_COLUMNS]


def _row(image: str, pool: str, sha: str, probs: np.ndarray, class_names: Sequence[str]) -> list:
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


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sidecar(table_path: str | Path, kind: str) -> Path:
    """`pseudo.csv` -> `pseudo.skipped.csv` / `pseudo.summary.json` / `pseudo.pools.json`."""
    table_path = Path(table_path)
    suffix = ".json" if kind in ("summary", "pools") else ".csv"
    return table_path.with_name(f"{table_path.stem}.{kind}{suffix}")


# --------------------------------------------------------------------------- labeling


def label_pools(
    model,
    pools: Iterable,
    *,
    image_size: int,
    batch_size: int = 64,
    tta: str = "none",
    class_names: Sequence[str],
    out_path: str | Path,
    progress: bool = True,
) -> PseudoLabelTable:
    """Predict every image of `pools` with `model` (no noise) and write the table to `out_path`.

    `pools` are `data.Pool`s (already filtered against the labeled images: `.name`, `.images`).
    Rows are streamed to a temporary file and renamed into place at the end. Images that cannot be
    read are skipped and listed in `<out>.skipped.csv` (image,pool,reason); never fatal.
    """
    class_names = [str(c) for c in class_names]
    paths, pool_names = _pool_images(pools)
    out_path = Path(out_path)
    seen = np.zeros(len(paths), dtype=bool)
    predicted = np.zeros(len(class_names), dtype=np.int64)
    # The table is renamed into place last, so a table that exists always has its sidecars.
    with atomic_path(out_path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header(class_names))
            if paths:
                for i, p in _predictions(model, paths, image_size, batch_size, tta, len(class_names), progress):
                    seen[i] = True
                    predicted[int(np.argmax(p))] += 1
                    writer.writerow(_row(paths[i], pool_names[i], file_sha256(paths[i]), p, class_names))
        skipped = _write_skipped(out_path, paths, pool_names, seen)
        summary = {
            "n": int(seen.sum()),
            "per_pool": dict(Counter(name for name, ok in zip(pool_names, seen) if ok)),
            "per_class": dict(zip(class_names, predicted.tolist())),
            "skipped": len(skipped),
            "skipped_per_pool": dict(Counter(pool for _, pool, _ in skipped)),
            "tta": tta, "image_size": int(image_size), "table": str(out_path),
        }
        atomic_write_json(sidecar(out_path, "summary"), summary)
    if progress:
        print(format_summary(summary))
    return read_pseudo_labels(out_path)


def _predictions(model, paths, image_size, batch_size, tta, num_classes, progress):
    """(index into `paths`, probabilities) of every readable image, one streamed batch at a time."""
    from tqdm import tqdm

    from pseudolabel.pipeline import make_dataset

    predict_batch = _batch_predictor(model, tta, image_size)
    # No cache, no shuffle, one pass: only the batches in flight are held in memory.
    dataset = make_dataset(paths, image_size=image_size, batch_size=batch_size, shuffle=False, augment=None,
                           cache=None, repeat=False, drop_remainder=False, on_error="skip", with_index=True)
    with tqdm(total=len(paths), desc="pseudo-labeling", unit="img", disable=not progress) as bar:
        for images, index in dataset:
            probs = _check_probs(predict_batch(images).numpy(), num_classes)
            yield from zip(index.numpy().tolist(), probs)
            bar.update(len(probs))
        bar.update(len(paths) - bar.n)  # the skipped ones


def _pool_images(pools: Iterable) -> tuple[list[str], list[str]]:
    """All image paths of the pools, in order, with the pool name of each."""
    paths, names = [], []
    for pool in pools:
        for image in pool.images:
            paths.append(str(image))
            names.append(str(pool.name))
    return paths, names


def _batch_predictor(model, tta: str, image_size: int):
    """A compiled `images -> probs` averaging the TTA views (evaluation.tta_views) in inference mode."""
    import tensorflow as tf

    from pseudolabel.evaluation import tta_views

    @tf.function(reduce_retracing=True)
    def predict_batch(images):
        views = tta_views(tf.cast(images, tf.float32), tta, size=image_size)
        return tf.reduce_mean(tf.stack([model(v, training=False) for v in views]), axis=0)

    return predict_batch


def _check_probs(probs: np.ndarray, num_classes: int) -> np.ndarray:
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise PseudoLabelError(f"the model outputs shape {probs.shape}, expected [batch, {num_classes}] probabilities")
    return probs


def _write_skipped(out_path: Path, paths: list[str], pool_names: list[str], seen: np.ndarray) -> list[tuple]:
    """List the images the pipeline skipped, with the reason `images.read_image` gives."""
    from pseudolabel.images import ImageError, read_image

    skipped = []
    for i in np.flatnonzero(~seen):
        try:
            read_image(paths[i])
            reason = "skipped by the input pipeline"
        except ImageError as e:
            reason = e.reason
        skipped.append((paths[i], pool_names[i], reason))
    with atomic_path(sidecar(out_path, "skipped")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "pool", "reason"])
        writer.writerows(skipped)
    return skipped


def format_summary(summary: dict) -> str:
    pools = ", ".join(f"{name}: {n}" for name, n in summary["per_pool"].items()) or "none"
    classes = ", ".join(f"{name}: {n}" for name, n in summary["per_class"].items())
    return (f"pseudo-labeled {summary['n']} images ({pools}); predicted {classes}; "
            f"skipped {summary['skipped']} unreadable -> {summary['table']}")


# --------------------------------------------------------------------------- selection


def soft_targets(probs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """`p**(1/T)` renormalised, computed in log space (== softmax(logits / T))."""
    if temperature <= 0:
        raise PseudoLabelError(f"temperature must be > 0, got {temperature}")
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-30, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)


def hard_targets(probs: np.ndarray, label_smoothing: float = 0.1) -> np.ndarray:
    """One-hot argmax smoothed as Keras does: `(1 - eps) * onehot + eps / K`."""
    if not 0.0 <= label_smoothing < 1.0:
        raise PseudoLabelError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    k = probs.shape[1]
    onehot = np.eye(k, dtype=np.float64)[np.argmax(probs, axis=1)]
    return ((1.0 - label_smoothing) * onehot + label_smoothing / k).astype(np.float32)


def balance_indices(predicted: np.ndarray, confidence: np.ndarray, num_classes: int,
                    per_class: int = 0, seed: int = 0) -> np.ndarray:
    """Row indices giving every predicted class exactly `per_class` rows (0: the largest class count).

    Classes with more keep their most confident rows; classes with fewer repeat every row
    `target // n` times plus a seeded random `target % n` rows once more. Empty classes stay empty.
    """
    counts = _class_counts(predicted, num_classes)
    target = int(per_class) if per_class > 0 else int(counts.max(initial=0))
    rng = np.random.default_rng(seed)
    keep = []
    for k in range(num_classes):
        members = np.flatnonzero(predicted == k)
        if len(members) == 0:
            continue
        ranked = members[np.argsort(-confidence[members], kind="stable")]
        if len(ranked) >= target:
            keep.append(ranked[:target])
        else:
            extra = rng.choice(ranked, size=target % len(ranked), replace=False)
            keep.append(np.concatenate([np.tile(ranked, target // len(ranked)), np.sort(extra)]))
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


def select_pseudo_labels(
    table: PseudoLabelTable | str | Path,
    *,
    mode: str = "soft",
    temperature: float = 1.0,
    label_smoothing: float = 0.1,
    threshold: float = 0.3,
    balance: bool = True,
    per_class: int = 0,
    seed: int = 0,
) -> tuple[list[str], np.ndarray, dict]:
    """Training targets from a table: (paths, targets [N, K] float32, report).

    Rows with confidence < `threshold` are dropped; with `balance`, every predicted class ends
    with exactly `per_class` rows (0: the largest class count after thresholding), so paths can
    repeat. The report counts rows per class and per pool before, after the threshold and after
    balancing, plus the settings.
    """
    if not isinstance(table, PseudoLabelTable):
        table = read_pseudo_labels(table)
    if mode not in MODES:
        raise PseudoLabelError(f"unknown pseudo-label mode {mode!r}; choose soft or hard")
    k = len(table.class_names)
    predicted, confidence = table.predicted, table.confidence
    kept = np.flatnonzero(confidence >= threshold)
    rows = kept
    if balance and len(kept):
        rows = kept[balance_indices(predicted[kept], confidence[kept], k, per_class, seed)]
    probs = table.probs[rows].reshape(len(rows), k)
    targets = soft_targets(probs, temperature) if mode == "soft" else hard_targets(probs, label_smoothing)
    paths = [table.images[i] for i in rows]
    report = {
        "settings": {"mode": mode, "temperature": temperature, "label_smoothing": label_smoothing,
                     "threshold": threshold, "balance": balance, "per_class": per_class, "seed": seed},
        "class_names": list(table.class_names),
        "before": _counts(table, np.arange(len(table))),
        "after_threshold": _counts(table, kept),
        "selected": {**_counts(table, rows), "unique_images": int(len(np.unique(rows)))},
    }
    # Balancing cannot create a class the teacher never predicted confidently: say so.
    report["empty_classes"] = [c for c, n in report["selected"]["per_class"].items() if n == 0]
    return paths, targets, report


def _counts(table: PseudoLabelTable, rows: np.ndarray) -> dict:
    predicted = table.predicted[rows] if len(rows) else np.zeros(0, np.int64)
    return {
        "n": int(len(rows)),
        "per_class": {name: int(n) for name, n in zip(table.class_names, _class_counts(predicted, len(table.class_names)))},
        "per_pool": dict(Counter(table.pools[i] for i in rows)),
    }


def _class_counts(predicted: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(predicted, np.int64), minlength=num_classes)[:num_classes]


def write_selection_report(path: str | Path, report: dict) -> Path:
    return atomic_write_json(path, report)


def describe_selection(report: dict) -> str:
    sel = report["selected"]
    classes = ", ".join(f"{c}: {n}" for c, n in sel["per_class"].items())
    pools = ", ".join(f"{p}: {n}" for p, n in sel["per_pool"].items()) or "none"
    text = (f"pseudo-labels: {report['before']['n']} rows, {report['after_threshold']['n']} with confidence >= "
            f"{report['settings']['threshold']}, {sel['n']} selected ({sel['unique_images']} unique; {classes}; "
            f"pools {pools})")
    if report.get("empty_classes"):
        text += f"\nwarning: no pseudo-labels for class(es) {', '.join(report['empty_classes'])}"
    return text


__all__ = [
    "PseudoLabelTable", "PseudoLabelError", "label_pools", "read_pseudo_labels", "select_pseudo_labels",
    "soft_targets", "hard_targets", "balance_indices", "file_sha256", "sidecar",
]
