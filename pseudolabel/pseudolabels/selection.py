"""Pseudo-label selection, as the official Noisy Student code does it (google-research/noisystudent,
filter_unlabel.py): soft targets are the teacher's probabilities re-tempered (`p**(1/T)`
renormalised, i.e. softmax(logits / T)), hard targets the argmax one-hot with label smoothing;
images whose top probability is below `threshold` are dropped; balancing keeps, per predicted
class, the most confident images up to `per_class` and duplicates the images of classes with
fewer. The official code duplicates by random rounding of `target / count` copies, so its class
counts are only near the target; here every image gets `target // count` copies and a seeded
random `target % count` of them one more, so each class has exactly `target` rows and the same
seed gives the same rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from pseudolabel.pseudolabels.table import PseudoLabelError, PseudoLabelTable, class_counts, read_pseudo_labels
from pseudolabel.rundir import atomic_write_json

MODES = ("soft", "hard")

__all__ = ["MODES", "balance_indices", "describe_selection", "hard_targets", "select_pseudo_labels", "soft_targets",
           "write_selection_report"]

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
    counts = class_counts(predicted, num_classes)
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
        "per_class": {name: int(n) for name, n in zip(table.class_names, class_counts(predicted, len(table.class_names)))},
        "per_pool": dict(Counter(table.pools[i] for i in rows)),
    }



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
