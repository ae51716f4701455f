"""Pseudo-label selection, as the official Noisy Student code does it (google-research/noisystudent,
filter_unlabel.py): soft targets are the teacher's probabilities re-tempered (`p**(1/T)`
renormalised, i.e. softmax(logits / T)), hard targets the argmax one-hot with label smoothing;
images whose top probability is below `threshold` are dropped; balancing keeps, per predicted
class, the most confident images up to `per_class` and duplicates the images of classes with
fewer. The official code duplicates by random rounding of `target / count` copies, so its class
counts are only near the target; here every image gets `target // count` copies and a seeded
random `target % count` of them one more, so each class has exactly `target` rows and the same
seed gives the same rows. The defaults do exactly that; the rules that keep the class shares from
drifting (distribution alignment, FlexMatch / FreeMatch thresholds, a per-class keep fraction,
balancing to the labeled prior) are in `class_shares`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from pseudolabel.pseudolabels.class_shares import (
    THRESHOLD_RULES,
    align_to_prior,
    allocate,
    class_thresholds,
    ineffective_threshold,
    keep_most_confident,
)
from pseudolabel.pseudolabels.table import PseudoLabelError, PseudoLabelTable, class_counts, read_pseudo_labels
from pseudolabel.rundir import atomic_write_json

MODES = ("soft", "hard")
# What a student's run directory holds of its selection (students.StudentRun writes them).
SELECTION_REPORT = "pseudo_labels_report.json"
SELECTED_TABLE = "pseudo_labels_selected.csv"

__all__ = ["MODES", "SELECTED_TABLE", "SELECTION_REPORT", "balance_indices", "describe_selection", "hard_targets",
           "select_pseudo_labels", "selection_report", "soft_targets", "write_selection_report"]

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
                    per_class: int = 0, seed: int = 0, targets=None) -> np.ndarray:
    """Row indices giving every predicted class exactly `per_class` rows (0: the largest class
    count), or `targets[c]` rows for class c when given (`class_shares.allocate`).

    Classes with more keep their most confident rows; classes with fewer repeat every row
    `target // n` times plus a seeded random `target % n` rows once more. Empty classes stay empty.
    """
    if targets is None:
        targets = allocate(class_counts(predicted, num_classes), per_class)
    rng = np.random.default_rng(seed)
    keep = []
    for k in range(num_classes):
        members = np.flatnonzero(predicted == k)
        target = int(targets[k])
        if len(members) == 0 or target == 0:
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
    balance: bool | str = True,
    per_class: int = 0,
    seed: int = 0,
    threshold_rule: str = "fixed",
    keep_fraction: float = 1.0,
    align: str = "none",
    prior=None,
) -> tuple[list[str], np.ndarray, dict]:
    """Training targets from a table: (paths, targets [N, K] float32, report).

    In order (`config.PseudoConfig` says what each setting means): `align` the probabilities to the
    labeled train `prior` (class shares [K], needed by align / balance "prior"), drop rows below
    their class's threshold (`threshold_rule`), keep the surest `keep_fraction` of every class,
    `balance` (paths can repeat), make the targets. The report counts rows per class and per pool
    before, after the threshold and after balancing, plus the settings, the thresholds and notes.
    """
    if not isinstance(table, PseudoLabelTable):
        table = read_pseudo_labels(table)
    _check_settings(mode, balance, align, threshold_rule, prior)
    k = len(table.class_names)
    probs = align_to_prior(table.probs, prior) if align == "prior" else table.probs
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    thresholds = class_thresholds(probs, threshold_rule, threshold)
    passed = np.flatnonzero(confidence >= thresholds[predicted]) if len(table) else np.zeros(0, np.int64)
    kept = passed[keep_most_confident(predicted[passed], confidence[passed], k, keep_fraction)]
    rows = kept
    if balance and len(kept):
        targets = allocate(class_counts(predicted[kept], k), per_class, prior if balance == "prior" else None)
        rows = kept[balance_indices(predicted[kept], confidence[kept], k, seed=seed, targets=targets)]
    chosen = probs[rows].reshape(len(rows), k)
    targets = soft_targets(chosen, temperature) if mode == "soft" else hard_targets(chosen, label_smoothing)
    paths = [table.images[i] for i in rows]
    settings = {"mode": mode, "temperature": temperature, "label_smoothing": label_smoothing,
                "threshold": threshold, "threshold_rule": threshold_rule, "keep_fraction": keep_fraction,
                "align": align, "balance": balance, "per_class": per_class, "seed": seed}
    report = selection_report(table, settings, predicted, thresholds, passed, kept, rows, targets, prior)
    return paths, targets, report


def _check_settings(mode: str, balance, align: str, threshold_rule: str, prior) -> None:
    if mode not in MODES:
        raise PseudoLabelError(f"unknown pseudo-label mode {mode!r}; choose soft or hard")
    if balance not in (True, False, "equal", "prior"):
        raise PseudoLabelError(f"unknown balance {balance!r}; choose true, false, \"equal\" or \"prior\"")
    if align not in ("none", "prior"):
        raise PseudoLabelError(f"unknown align {align!r}; choose \"none\" or \"prior\"")
    if threshold_rule not in THRESHOLD_RULES:
        raise PseudoLabelError(f"unknown threshold rule {threshold_rule!r}; choose {', '.join(THRESHOLD_RULES)}")
    if prior is None and "prior" in (balance, align):
        raise PseudoLabelError("balance = \"prior\" and align = \"prior\" need the labeled train prior")


def selection_report(table: PseudoLabelTable, settings: dict, predicted, thresholds, passed, kept, rows,
                     targets, prior) -> dict:
    """What `select_pseudo_labels` did, JSON-ready (pseudo_labels_report.json)."""
    names = list(table.class_names)
    report = {
        "settings": settings,
        "class_names": names,
        "labeled_prior": None if prior is None else {n: float(p) for n, p in zip(names, prior)},
        "thresholds": {n: round(float(t), 6) for n, t in zip(names, thresholds)},
        "before": _counts(table, table.predicted, np.arange(len(table))),
    }
    if settings["align"] != "none":
        report["aligned"] = _counts(table, predicted, np.arange(len(table)))
    report["after_threshold"] = _counts(table, predicted, passed)
    if settings["keep_fraction"] < 1:
        report["after_keep"] = _counts(table, predicted, kept)
    report["selected"] = {**_counts(table, predicted, rows), "unique_images": int(len(np.unique(rows))),
                          "target_share": {n: float(v) for n, v in zip(names, targets.mean(axis=0))}
                          if len(rows) else {n: 0.0 for n in names}}
    # Balancing cannot create a class the teacher never predicted confidently: say so.
    report["empty_classes"] = [c for c, n in report["selected"]["per_class"].items() if n == 0]
    note = ineffective_threshold(settings["threshold"], settings["threshold_rule"], len(names))
    report["notes"] = [note] if note else []
    return report


def _counts(table: PseudoLabelTable, predicted: np.ndarray, rows: np.ndarray) -> dict:
    predicted = predicted[rows] if len(rows) else np.zeros(0, np.int64)
    return {
        "n": int(len(rows)),
        "per_class": {name: int(n) for name, n in zip(table.class_names, class_counts(predicted, len(table.class_names)))},
        "per_pool": dict(Counter(table.pools[i] for i in rows)),
    }


def write_selection_report(path: str | Path, report: dict) -> Path:
    return atomic_write_json(path, report)


def describe_selection(report: dict) -> str:
    """A few lines for the console: what the selection kept, per class and pool, and its notes."""
    sel, settings = report["selected"], report["settings"]
    classes = ", ".join(f"{c}: {n}" for c, n in sel["per_class"].items())
    pools = ", ".join(f"{p}: {n}" for p, n in sel["per_pool"].items()) or "none"
    rule = settings.get("threshold_rule", "fixed")
    if rule == "fixed":
        passed = f"with confidence >= {settings['threshold']}"
    else:
        per_class = ", ".join(f"{c} {t:.3f}" for c, t in report["thresholds"].items())
        passed = f"above the {rule} thresholds ({per_class})"
    kept = f", {report['after_keep']['n']} in the surest {settings['keep_fraction']:g} per class" \
        if "after_keep" in report else ""
    text = (f"pseudo-labels: {report['before']['n']} rows, {report['after_threshold']['n']} {passed}{kept}, "
            f"{sel['n']} selected ({sel['unique_images']} unique; {classes}; pools {pools})")
    if report.get("empty_classes"):
        text += f"\nwarning: no pseudo-labels for class(es) {', '.join(report['empty_classes'])}"
    for note in report.get("notes", []):
        text += f"\nnote: {note}"
    return text
