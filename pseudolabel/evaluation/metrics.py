"""Metrics and statistics: ROC AUC, accuracy, bootstrap CIs, the full metrics report, paired
comparisons of two models on the same test images.

- Binary tasks report the ROC AUC of P(positive class) (default: the last class); K-class tasks
  the macro one-vs-rest ROC AUC. Never Keras' one-hot (micro) AUC.
- `probs` is `[N, K]` softmax output, or `[N]` = P(positive) for a binary task.
- Confidence intervals are percentile bootstraps stratified by class, so every resample holds
  every class and AUC is always defined. The binary/OvR AUC over thousands of resamples is
  computed at once from ranks (Mann-Whitney), which agrees with scikit-learn exactly.
- Two models on the same test images are compared with a paired bootstrap (same resample
  indices for both) and DeLong's test for correlated ROC curves (Sun & Xu 2014 fast algorithm).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

__all__ = ["EvaluationError", "accuracy", "as_labels", "as_prob_matrix", "bootstrap_ci", "bootstrap_distribution",
           "delong_auc_covariance", "delong_test", "evaluate_predictions", "paired_auc_difference",
           "percentile_interval", "rank_auc", "require_auc_defined", "resample_indices", "roc_auc", "validated_inputs"]

# Bootstrap work is done in blocks of at most this many (resample x image) cells to bound memory.
_BLOCK_CELLS = 2_000_000


class EvaluationError(ValueError):
    """Predictions or labels that cannot be evaluated as asked (e.g. one class only)."""


# --------------------------------------------------------------------------- input checks


def as_labels(y_true) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise EvaluationError(f"y_true must be 1-D class indices, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise EvaluationError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    return y.astype(np.int64)


def as_prob_matrix(probs, n: int) -> np.ndarray:
    """`[N]` P(positive) -> `[N, 2]`; `[N, K]` unchanged. Checks the row count."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise EvaluationError(f"probs must be [N] or [N, K>=2], got shape {np.shape(probs)}")
    if p.shape[0] != n:
        raise EvaluationError(f"{p.shape[0]} prediction rows for {n} labels")
    return p


def _check_labels_in_range(y: np.ndarray, n_classes: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise EvaluationError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")


def _resolve_positive(n_classes: int, positive_index: int | None) -> int | None:
    """The positive class of a binary task (default: the last); None for K > 2."""
    if n_classes == 2:
        pos = 1 if positive_index is None else int(positive_index)
        if pos not in (0, 1):
            raise EvaluationError(f"positive_index must be 0 or 1 for a binary task, got {positive_index}")
        return pos
    if positive_index is not None:
        raise EvaluationError("positive_index applies to binary tasks only; K-class AUC is macro one-vs-rest")
    return None


def validated_inputs(y_true, probs, positive_index=None):
    """Validated (labels, [N,K] probs, positive index or None)."""
    y = as_labels(y_true)
    p = as_prob_matrix(probs, len(y))
    _check_labels_in_range(y, p.shape[1])
    return y, p, _resolve_positive(p.shape[1], positive_index)


def require_auc_defined(y: np.ndarray, n_classes: int, positive: int | None) -> None:
    present = np.unique(y)
    if len(present) < 2:
        only = f"only class {present[0]}" if len(present) else "no labels"
        raise EvaluationError(f"ROC AUC is undefined: y_true holds {only}; it needs both positives and negatives")
    if positive is None and len(present) < n_classes:
        missing = sorted(set(range(n_classes)) - set(present.tolist()))
        raise EvaluationError(f"macro one-vs-rest ROC AUC is undefined: classes {missing} have no test examples")


# --------------------------------------------------------------------------- point metrics


def roc_auc(y_true, probs, positive_index: int | None = None) -> float:
    """ROC AUC: binary -> AUC of P(positive) (default positive = last class); K>2 -> macro OvR.

    `probs` is `[N, K]` or, for a binary task, `[N]` = P(positive) with labels 0/1.
    Raises EvaluationError when y_true does not hold both classes (every class for K > 2).
    """
    y, p, pos = validated_inputs(y_true, probs, positive_index)
    require_auc_defined(y, p.shape[1], pos)
    if pos is not None:
        return float(skm.roc_auc_score(y == pos, p[:, pos]))
    # Macro OvR = mean of the per-class binary AUCs (what sklearn's multi_class="ovr" computes),
    # done per class so rows that do not sum exactly to 1 are not refused.
    return float(np.mean([skm.roc_auc_score(y == k, p[:, k]) for k in range(p.shape[1])]))


def accuracy(y_true, probs) -> float:
    """Top-1 accuracy with the argmax threshold."""
    y, p, _ = validated_inputs(y_true, probs)
    return float(np.mean(p.argmax(axis=1) == y)) if len(y) else float("nan")


# --------------------------------------------------------------------------- bootstrap


def resample_indices(y_true, n_resamples: int = 2000, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """`[n_resamples, N]` bootstrap indices into the test set.

    Stratified: column j always draws from the class of image j, so every resample keeps the
    class counts of y_true (and `y_true[idx] == y_true` row by row).
    """
    y = as_labels(y_true)
    rng = np.random.default_rng(seed)
    if not stratified:
        return rng.integers(0, len(y), size=(n_resamples, len(y)))
    idx = np.empty((n_resamples, len(y)), dtype=np.int64)
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        idx[:, members] = members[rng.integers(0, len(members), size=(n_resamples, len(members)))]
    return idx


def _index_blocks(y: np.ndarray, n_resamples: int, seed: int, stratified: bool) -> Iterable[np.ndarray]:
    """Resample indices in blocks (bounded memory); the same (y, n, seed) always give the same blocks."""
    block = max(1, _BLOCK_CELLS // max(1, len(y)))
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        size = min(block, n_resamples - done)
        yield resample_indices(y, size, seed=int(rng.integers(2**63 - 1)), stratified=stratified)
        done += size


def rank_auc(positive_mask, scores) -> np.ndarray:
    """Binary ROC AUC of each row of `scores` via ranks (Mann-Whitney U), ties counted 1/2.

    `scores` is `[R, N]` (or `[N]`); `positive_mask` is `[N]` or `[R, N]` booleans.
    Rows with no positives or no negatives give nan. Equal to sklearn's roc_auc_score.
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos = np.broadcast_to(np.asarray(positive_mask, dtype=bool), s.shape)
    ranks = rankdata(s, axis=1)  # average ranks for ties
    n_pos = pos.sum(axis=1).astype(np.float64)
    n_neg = s.shape[1] - n_pos
    u = (ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return u / (n_pos * n_neg)


def _auc_of_resamples(y, p, pos, idx) -> np.ndarray:
    """AUC for each row of resample indices `idx` ([R, N]); nan where undefined."""
    labels = y[idx]
    if pos is not None:
        return rank_auc(labels == pos, p[idx, pos])
    per_class = [rank_auc(labels == k, p[idx, k]) for k in range(p.shape[1])]
    return np.mean(per_class, axis=0)  # nan if any class is absent from a resample


def _accuracy_of_resamples(y, p, idx) -> np.ndarray:
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    return correct[idx].mean(axis=1)


def bootstrap_distribution(
    y_true, probs, metric: Callable = roc_auc, *, n_resamples: int = 2000, seed: int = 0,
    stratified: bool = True, positive_index: int | None = None,
) -> np.ndarray:
    """The metric on each of `n_resamples` bootstrap resamples (nan where undefined).

    `roc_auc` and `accuracy` are computed vectorized; any other `metric(y, probs)` is called
    once per resample. `positive_index` is passed to the metric when given.
    """
    y, p, pos = validated_inputs(y_true, probs, positive_index)
    if len(y) == 0:
        raise EvaluationError("cannot bootstrap an empty test set")
    if metric is roc_auc:
        require_auc_defined(y, p.shape[1], pos)
    out = []
    for idx in _index_blocks(y, n_resamples, seed, stratified):
        if metric is roc_auc:
            out.append(_auc_of_resamples(y, p, pos, idx))
        elif metric is accuracy:
            out.append(_accuracy_of_resamples(y, p, idx))
        else:
            out.append(np.array([_metric_or_nan(metric, y[r], p[r], positive_index) for r in idx]))
    return np.concatenate(out)


def _metric_or_nan(metric, y, p, positive_index) -> float:
    kwargs = {} if positive_index is None else {"positive_index": positive_index}
    try:
        return float(metric(y, p, **kwargs))
    except EvaluationError:
        return float("nan")  # e.g. an unstratified resample that lost a class


def percentile_interval(samples, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap samples."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise EvaluationError("no resample gave a finite value; the interval is undefined")
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    y_true, probs, metric: Callable = roc_auc, n_resamples: int = 2000, ci: float = 0.95,
    seed: int = 0, stratified: bool = True, *, positive_index: int | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval (lo, hi) of `metric(y_true, probs)`.

    Stratified by class (default), so every resample has every class; seeded, so the same
    inputs always give the same interval.
    """
    samples = bootstrap_distribution(
        y_true, probs, metric, n_resamples=n_resamples, seed=seed,
        stratified=stratified, positive_index=positive_index,
    )
    return percentile_interval(samples, ci)


# --------------------------------------------------------------------------- full report


def evaluate_predictions(
    y_true, probs, class_names: Sequence[str], *, positive_index: int | None = None,
    n_resamples: int = 2000, seed: int = 0, ci: float = 0.95,
) -> dict:
    """Everything `metrics.json` reports about one model on one test set (JSON-ready).

    Keys: n, class_names, class_counts, positive_class, roc_auc_average, roc_auc, roc_auc_ci,
    accuracy, accuracy_ci, balanced_accuracy, log_loss, confusion_matrix, per_class,
    threshold, ci, n_resamples, seed.
    """
    y, p, pos = validated_inputs(y_true, probs, positive_index)
    names = [str(c) for c in class_names]
    if len(names) != p.shape[1]:
        raise EvaluationError(f"{len(names)} class names for {p.shape[1]} probability columns")
    labels = list(range(len(names)))
    predicted = p.argmax(axis=1)
    boot = dict(n_resamples=n_resamples, seed=seed, ci=ci, positive_index=positive_index)
    return {
        "n": int(len(y)),
        "class_names": names,
        "class_counts": {names[k]: int(np.sum(y == k)) for k in labels},
        "positive_class": names[pos] if pos is not None else None,
        "roc_auc_average": f"binary: P({names[pos]})" if pos is not None else "macro one-vs-rest",
        "roc_auc": roc_auc(y, p, positive_index),
        "roc_auc_ci": list(bootstrap_ci(y, p, roc_auc, **boot)),
        "accuracy": accuracy(y, p),
        "accuracy_ci": list(bootstrap_ci(y, p, accuracy, **{**boot, "positive_index": None})),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, predicted)),
        "log_loss": float(skm.log_loss(y, _renormalized(p), labels=labels)),
        "confusion_matrix": {
            "labels": names,
            "rows": "true class",
            "columns": "predicted class",
            "matrix": skm.confusion_matrix(y, predicted, labels=labels).tolist(),
        },
        "per_class": skm.classification_report(
            y, predicted, labels=labels, target_names=names, output_dict=True, zero_division=0,
        ),
        "threshold": "argmax",
        "ci": ci,
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------- paired comparison


def delong_auc_covariance(positive_scores: np.ndarray, negative_scores: np.ndarray):
    """AUCs and their covariance for k correlated ROC curves (DeLong 1988, Sun & Xu 2014 algorithm).

    `positive_scores` is `[k, m]` (scores of the m positives under each of k models),
    `negative_scores` `[k, n]`. Returns (aucs [k], covariance [k, k]).
    """
    x = np.atleast_2d(np.asarray(positive_scores, dtype=np.float64))
    y = np.atleast_2d(np.asarray(negative_scores, dtype=np.float64))
    m, n = x.shape[1], y.shape[1]
    if m < 2 or n < 2:
        raise EvaluationError("DeLong's test needs at least two positives and two negatives")
    tx = rankdata(x, axis=1)  # midranks: ties get their average rank
    ty = rankdata(y, axis=1)
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v01 = (tz[:, :m] - tx) / n          # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m    # ... and of the negatives
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def delong_test(y_true, scores_a, scores_b, positive_index: int | None = None) -> dict:
    """Two-sided DeLong test of AUC(b) == AUC(a) on the same images (binary task).

    `scores_*` are `[N, 2]` probabilities or `[N]` P(positive). Returns auc_a, auc_b, diff,
    se, z, p_value. Identical predictions give diff 0, se 0 and p = 1.
    """
    y, pa, pos = validated_inputs(y_true, scores_a, positive_index)
    _, pb, _ = validated_inputs(y, scores_b, positive_index)
    if pos is None:
        raise EvaluationError("DeLong's test is implemented for binary tasks only")
    require_auc_defined(y, 2, pos)
    both = np.stack([pa[:, pos], pb[:, pos]])
    is_pos = y == pos
    aucs, cov = delong_auc_covariance(both[:, is_pos], both[:, ~is_pos])
    diff = float(aucs[1] - aucs[0])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    if se <= 1e-12 * max(1.0, abs(diff)):
        # No variability in the difference: equal curves are no evidence; a constant gap is.
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = math.erfc(abs(z) / math.sqrt(2.0))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "se": se, "z": z, "p_value": p}


def paired_auc_difference(
    y_true, probs_a, probs_b, *, n_resamples: int = 2000, seed: int = 0,
    positive_index: int | None = None, ci: float = 0.95,
) -> dict:
    """AUC(b) - AUC(a) on the same test images: paired bootstrap CI and p-value (DeLong for two
    classes, `paired_permutation_test` for K).

    Both models are scored on the same stratified resample indices, so the interval reflects
    the correlation between them.
    """
    y, pa, pos = validated_inputs(y_true, probs_a, positive_index)
    _, pb, _ = validated_inputs(y, probs_b, positive_index)
    if pa.shape != pb.shape:
        raise EvaluationError(f"predictions of different shapes: {pa.shape} vs {pb.shape}")
    require_auc_defined(y, pa.shape[1], pos)
    diffs = np.concatenate([
        _auc_of_resamples(y, pb, pos, idx) - _auc_of_resamples(y, pa, pos, idx)
        for idx in _index_blocks(y, n_resamples, seed, stratified=True)
    ])
    auc_a, auc_b = roc_auc(y, pa, positive_index), roc_auc(y, pb, positive_index)
    lo, hi = percentile_interval(diffs, ci)
    delong = delong_test(y, pa, pb, positive_index) if pos is not None else None
    if delong is None:
        permuted = paired_permutation_test(y, pa, pb, n_permutations=n_resamples, seed=seed)
    return {
        "n": int(len(y)),
        "auc_a": auc_a,
        "auc_b": auc_b,
        "diff": auc_b - auc_a,
        "ci": ci,
        "ci_low": lo,
        "ci_high": hi,
        "bootstrap_se": float(np.nanstd(diffs, ddof=1)),
        "delong_se": delong["se"] if delong else None,
        "delong_z": delong["z"] if delong else None,
        "p_value": delong["p_value"] if delong else permuted["p_value"],
        "test": "DeLong (two-sided)" if delong else permuted["test"],
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }


def paired_permutation_test(y_true, probs_a, probs_b, *, n_permutations: int = 2000, seed: int = 0) -> dict:
    """Two-sided paired permutation test of AUC(b) - AUC(a) (macro one-vs-rest for K classes,
    where DeLong's test does not apply): under the null the two models are exchangeable, so each
    test image's pair of predictions is swapped with probability 1/2; p = (1 + #|d*| >= |d|) /
    (1 + permutations), never 0."""
    y, pa, pos = validated_inputs(y_true, probs_a)
    _, pb, _ = validated_inputs(y, probs_b)
    require_auc_defined(y, pa.shape[1], pos)
    observed = roc_auc(y, pb) - roc_auc(y, pa)
    rng = np.random.default_rng(seed)
    exceed, done = 0, 0
    block = max(1, _BLOCK_CELLS // max(1, len(y)))
    while done < n_permutations:
        swap = rng.random((min(block, n_permutations - done), len(y))) < 0.5
        per_class = []
        for k in range(pa.shape[1]):
            a, b = np.where(swap, pb[:, k], pa[:, k]), np.where(swap, pa[:, k], pb[:, k])
            per_class.append(rank_auc(y == k, b) - rank_auc(y == k, a))
        diffs = np.mean(per_class, axis=0) if pos is None else per_class[pos]
        exceed += int(np.sum(np.abs(diffs) >= abs(observed) - 1e-12))
        done += len(swap)
    return {"diff": float(observed), "p_value": (1 + exceed) / (1 + n_permutations),
            "test": f"paired permutation ({n_permutations} permutations, two-sided)"}


def _renormalized(probs: np.ndarray) -> np.ndarray:
    # float32 softmax rows sum to 1 only within ~1e-7; scikit-learn's log_loss warns about that.
    p = np.clip(np.asarray(probs, np.float64), 1e-15, 1.0)
    return p / p.sum(axis=1, keepdims=True)

