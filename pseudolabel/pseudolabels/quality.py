"""How good a round's pseudo-labels are, where the pool's truth is known (`data.read_truth`).

Read only to report (`pseudo_quality.json` in a student's run directory, the per-round section
of the comparison): nothing here feeds training, and the truth is in no run's config.

Two sets of images, each scored with scikit-learn (accuracy, per-class precision and recall,
confusion matrix) and the expected calibration error:
- "all": every row of the round's pseudo-label table whose image has a truth; the pseudo-label is
  the teacher's argmax and its confidence the teacher's top probability (the table as `label`
  wrote it);
- "selected": the images the student trained on (`pseudo_labels_selected.csv`, after threshold,
  keep fraction and balancing), each counted ONCE however often balancing repeated it; the
  pseudo-label is the argmax of the target the student saw and the confidence its top value (with
  hard targets that is 1 - smoothing + smoothing / K for every row). `accuracy_rows` also counts
  every repeated row as often as it was trained on.

ECE (Guo et al. 2017): ECE_BINS equal-width bins of the confidence on [0, 1] (bin b holds
confidences in (b/B, (b+1)/B], the first bin includes 0); ECE = sum over bins of
n_b / n * |accuracy_b - mean confidence_b|. With K classes the confidence is >= 1/K, so the bins
below 1/K stay empty.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pseudolabel.data.truth import truth_key
from pseudolabel.pseudolabels.selection import SELECTED_TABLE
from pseudolabel.pseudolabels.table import PseudoLabelError, PseudoLabelTable, read_pseudo_labels
from pseudolabel.rundir import atomic_write_json, file_sha256, read_json

QUALITY_JSON = "pseudo_quality.json"
ECE_BINS = 15
BINNING = (f"{ECE_BINS} equal-width bins of the confidence on [0, 1]; ECE = sum over bins of "
           "n_b / n * |accuracy_b - mean confidence_b| (Guo et al. 2017)")

__all__ = ["BINNING", "ECE_BINS", "QUALITY_JSON", "expected_calibration_error", "label_metrics",
           "pseudo_label_quality", "read_quality", "read_selected", "write_round_quality"]


def expected_calibration_error(correct, confidence, n_bins: int = ECE_BINS, weights=None) -> float:
    """ECE of predictions that were `correct` (bool [N]) at `confidence` [N] (module doc)."""
    correct, confidence = np.asarray(correct, np.float64), np.asarray(confidence, np.float64)
    weights = np.ones(len(correct)) if weights is None else np.asarray(weights, np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total, ece = weights.sum(), 0.0
    for b in np.unique(bins):
        mine = bins == b
        w = weights[mine]
        ece += w.sum() / total * abs(np.average(correct[mine], weights=w) - np.average(confidence[mine], weights=w))
    return float(ece)


def label_metrics(y_true, y_pred, confidence, class_names: Sequence[str]) -> dict:
    """n, accuracy, ECE, mean confidence, per-class precision / recall / support / predicted,
    and the confusion matrix (rows: true class, columns: pseudo-label). None where undefined."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    k = len(class_names)
    if not len(y_true):
        return {"n": 0, "accuracy": None, "ece": None, "mean_confidence": None, "per_class": {}, "confusion": []}
    labels = list(range(k))
    precision, recall, _, support = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                                    zero_division=np.nan)
    predicted = np.bincount(y_pred, minlength=k)[:k]
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "ece": expected_calibration_error(y_true == y_pred, confidence),
        "mean_confidence": float(np.mean(confidence)),
        "per_class": {name: {"precision": _number(precision[i]), "recall": _number(recall[i]),
                             "support": int(support[i]), "predicted": int(predicted[i])}
                      for i, name in enumerate(class_names)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _number(value) -> float | None:
    return None if np.isnan(value) else float(value)


def pseudo_label_quality(table: PseudoLabelTable, selected_paths: Sequence[str], selected_targets: np.ndarray,
                         truth: Mapping[str, int]) -> dict:
    """The quality report of one round (module doc): `truth` maps `truth_key(image)` -> class index."""
    names = list(table.class_names)
    keys = [truth_key(image) for image in table.images]
    known = np.array([key in truth for key in keys], bool)
    rows = np.flatnonzero(known)
    y_all = np.array([truth[keys[i]] for i in rows], np.int64)
    everything = label_metrics(y_all, table.predicted[rows], table.confidence[rows], names)

    copies = Counter(truth_key(p) for p in selected_paths)
    first = {}
    for i, path in enumerate(selected_paths):
        first.setdefault(truth_key(path), i)
    unique = [key for key in first if key in truth]
    targets = np.asarray(selected_targets, np.float64).reshape(len(selected_paths), len(names))
    picked = targets[[first[key] for key in unique]].reshape(len(unique), len(names))
    y_sel = np.array([truth[key] for key in unique], np.int64)
    selected = label_metrics(y_sel, picked.argmax(axis=1), picked.max(axis=1), names)
    weights = np.array([copies[key] for key in unique], np.float64)
    correct = y_sel == picked.argmax(axis=1)
    selected.update(rows=int(weights.sum()),
                    accuracy_rows=float(np.average(correct, weights=weights)) if len(unique) else None)
    return {
        "class_names": names,
        "ece_binning": BINNING,
        "table_rows": len(table),
        "table_rows_without_truth": int((~known).sum()),
        "selected_images": len(first),
        "selected_images_without_truth": len(first) - len(unique),
        "all": everything,
        "selected": selected,
    }


def read_selected(path: str | Path, class_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(paths, targets [N, K]) of a `pseudo_labels_selected.csv` (`students.write_selected`)."""
    path = Path(path)
    expected = ["image", *(f"t_{c}" for c in class_names)]
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            if next(reader, None) != expected:
                raise PseudoLabelError(f"{path}: not a selected pseudo-label table (header is not {','.join(expected)})")
            rows = [row for row in reader if row]
        return [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows], np.float64)
    except (ValueError, IndexError, UnicodeDecodeError, csv.Error) as e:
        raise PseudoLabelError(f"{path}: damaged ({e})") from None


def write_round_quality(run_dir: str | Path, truth: Mapping[str, int], truth_files: Sequence[str | Path],
                        *, table_name: str = "pseudo_labels.csv",
                        selected_name: str = SELECTED_TABLE) -> dict:
    """Measure the round in `run_dir` (its table and selected rows) against `truth`; write
    pseudo_quality.json there and return it."""
    run_dir = Path(run_dir)
    table = read_pseudo_labels(run_dir / table_name)
    paths, targets = read_selected(run_dir / selected_name, table.class_names)
    report = pseudo_label_quality(table, paths, targets, truth)
    report["truth_files"] = [{"path": str(Path(p).resolve()), "sha256": file_sha256(p)} for p in truth_files]
    atomic_write_json(run_dir / QUALITY_JSON, report)
    return report


def read_quality(run_dir: str | Path) -> dict | None:
    """A run's pseudo_quality.json, None when it has none."""
    path = Path(run_dir) / QUALITY_JSON
    return read_json(path) if path.is_file() else None
