"""Evaluation: ROC AUC with bootstrap CIs, paired comparisons, test-time augmentation, plots.

Conventions (docs/ARCHITECTURE.md):
- Binary tasks report the ROC AUC of P(positive class) (default: the last class); K-class tasks
  the macro one-vs-rest ROC AUC. Never Keras' one-hot (micro) AUC.
- `probs` is `[N, K]` softmax output, or `[N]` = P(positive) for a binary task.
- Confidence intervals are percentile bootstraps stratified by class, so every resample holds
  every class and AUC is always defined. The binary/OvR AUC over thousands of resamples is
  computed at once from ranks (Mann-Whitney), which agrees with scikit-learn exactly.
- Two models on the same test images are compared with a paired bootstrap (same resample
  indices for both) and DeLong's test for correlated ROC curves (Sun & Xu 2014 fast algorithm).

TensorFlow and matplotlib are imported inside the functions that need them, so importing this
module (e.g. from the CLI or `report`) stays cheap.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

from pseudolabel.rundir import atomic_path

TTA_MODES = ("none", "flip", "ten_crop")
DEFAULT_CROP_FRACTION = 0.875
# Bootstrap work is done in blocks of at most this many (resample x image) cells to bound memory.
_BLOCK_CELLS = 2_000_000


class EvaluationError(ValueError):
    """Predictions or labels that cannot be evaluated as asked (e.g. one class only)."""


# --------------------------------------------------------------------------- input checks


def _as_labels(y_true) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise EvaluationError(f"y_true must be 1-D class indices, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise EvaluationError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    return y.astype(np.int64)


def _as_prob_matrix(probs, n: int) -> np.ndarray:
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


def _prepare(y_true, probs, positive_index=None):
    """Validated (labels, [N,K] probs, positive index or None)."""
    y = _as_labels(y_true)
    p = _as_prob_matrix(probs, len(y))
    _check_labels_in_range(y, p.shape[1])
    return y, p, _resolve_positive(p.shape[1], positive_index)


def _require_auc_defined(y: np.ndarray, n_classes: int, positive: int | None) -> None:
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
    y, p, pos = _prepare(y_true, probs, positive_index)
    _require_auc_defined(y, p.shape[1], pos)
    if pos is not None:
        return float(skm.roc_auc_score(y == pos, p[:, pos]))
    # Macro OvR = mean of the per-class binary AUCs (what sklearn's multi_class="ovr" computes),
    # done per class so rows that do not sum exactly to 1 are not refused.
    return float(np.mean([skm.roc_auc_score(y == k, p[:, k]) for k in range(p.shape[1])]))


def accuracy(y_true, probs) -> float:
    """Top-1 accuracy with the argmax threshold."""
    y, p, _ = _prepare(y_true, probs)
    return float(np.mean(p.argmax(axis=1) == y)) if len(y) else float("nan")


# --------------------------------------------------------------------------- bootstrap


def resample_indices(y_true, n_resamples: int = 2000, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """`[n_resamples, N]` bootstrap indices into the test set.

    Stratified: column j always draws from the class of image j, so every resample keeps the
    class counts of y_true (and `y_true[idx] == y_true` row by row).
    """
    y = _as_labels(y_true)
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
    y, p, pos = _prepare(y_true, probs, positive_index)
    if len(y) == 0:
        raise EvaluationError("cannot bootstrap an empty test set")
    if metric is roc_auc:
        _require_auc_defined(y, p.shape[1], pos)
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
    y, p, pos = _prepare(y_true, probs, positive_index)
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


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties given their average rank (numpy only)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts_group = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


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
    tx = np.array([_midranks(row) for row in x])
    ty = np.array([_midranks(row) for row in y])
    tz = np.array([_midranks(row) for row in np.concatenate([x, y], axis=1)])
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
    y, pa, pos = _prepare(y_true, scores_a, positive_index)
    _, pb, _ = _prepare(y, scores_b, positive_index)
    if pos is None:
        raise EvaluationError("DeLong's test is implemented for binary tasks only")
    _require_auc_defined(y, 2, pos)
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
    """AUC(b) - AUC(a) on the same test images: paired bootstrap CI and DeLong p-value.

    Both models are scored on the same stratified resample indices, so the interval reflects
    the correlation between them. DeLong's test is binary only (p_value None for K > 2).
    """
    y, pa, pos = _prepare(y_true, probs_a, positive_index)
    _, pb, _ = _prepare(y, probs_b, positive_index)
    if pa.shape != pb.shape:
        raise EvaluationError(f"predictions of different shapes: {pa.shape} vs {pb.shape}")
    _require_auc_defined(y, pa.shape[1], pos)
    diffs = np.concatenate([
        _auc_of_resamples(y, pb, pos, idx) - _auc_of_resamples(y, pa, pos, idx)
        for idx in _index_blocks(y, n_resamples, seed, stratified=True)
    ])
    auc_a, auc_b = roc_auc(y, pa, positive_index), roc_auc(y, pb, positive_index)
    lo, hi = percentile_interval(diffs, ci)
    delong = delong_test(y, pa, pb, positive_index) if pos is not None else None
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
        "p_value": delong["p_value"] if delong else None,
        "test": "DeLong (two-sided)" if delong else "none (DeLong is binary only)",
        "n_resamples": int(n_resamples),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------- test-time augmentation


def tta_views(images, mode: str = "none", *, size: int | None = None,
              crop_fraction: float = DEFAULT_CROP_FRACTION) -> list:
    """The test-time views of a batch `[B, S, S, 3]`, each `[B, size, size, 3]` (size default S).

    none: the image; flip: image + horizontal flip; ten_crop: 4 corner crops and the centre crop
    at `crop_fraction` of the side (order: top-left, top-right, bottom-left, bottom-right, centre),
    then their horizontal flips, each resized (bilinear) to `size`. Views already at `size`
    are not resampled, so they are exact.
    """
    import tensorflow as tf

    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    height, width = int(images.shape[1]), int(images.shape[2])
    size = int(size or height)

    def fit(view):
        if view.shape[1] == size and view.shape[2] == size:
            return view
        return tf.image.resize(view, (size, size), method="bilinear")

    def hflip(view):
        return tf.reverse(view, axis=[2])

    if mode == "none":
        return [fit(images)]
    if mode == "flip":
        return [fit(images), fit(hflip(images))]
    crops = [images[:, top:top + ch, left:left + cw, :] for top, left, ch, cw in _ten_crop_boxes(height, width, crop_fraction)]
    crops = [fit(c) for c in crops]
    return crops + [hflip(c) for c in crops]


def _ten_crop_boxes(height: int, width: int, fraction: float) -> list[tuple[int, int, int, int]]:
    """(top, left, crop_h, crop_w) of the 4 corners and the centre."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {fraction}")
    ch, cw = max(1, round(height * fraction)), max(1, round(width * fraction))
    bottom, right = height - ch, width - cw
    return [(0, 0, ch, cw), (0, right, ch, cw), (bottom, 0, ch, cw), (bottom, right, ch, cw),
            (bottom // 2, right // 2, ch, cw)]


def _renormalized(probs: np.ndarray) -> np.ndarray:
    # float32 softmax rows sum to 1 only within ~1e-7; scikit-learn's log_loss warns about that.
    p = np.clip(np.asarray(probs, np.float64), 1e-15, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def _model_input_size(model) -> int | None:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else getattr(model, "input_shape", None)
    return int(shape[1]) if shape is not None and shape[1] is not None else None


def _image_batches(dataset, batch_size: int | None) -> Iterable:
    """Image batches from a tf.data.Dataset / iterable of batches (or (images, ...) tuples) or an array."""
    if isinstance(dataset, np.ndarray):
        step = batch_size or 32
        for start in range(0, len(dataset), step):
            yield dataset[start:start + step]
        return
    for element in dataset:
        yield element[0] if isinstance(element, (tuple, list)) else element


def tta_predictor(model, tta: str = "none", *, image_hw, crop_fraction: float = DEFAULT_CROP_FRACTION):
    """A compiled `images [B, H, W, 3] -> probabilities [B, K]`, averaged over the TTA views, in
    inference mode. One function for all batches of `image_hw` pixels: the batch dimension is
    None, so the last, smaller batch does not trigger a retrace."""
    import tensorflow as tf

    if tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    size = _model_input_size(model)

    @tf.function(input_signature=[tf.TensorSpec([None, *image_hw, 3], tf.float32)])
    def averaged_probs(images):
        views = tta_views(images, tta, size=size, crop_fraction=crop_fraction)
        return tf.reduce_mean(tf.stack([model(v, training=False) for v in views]), axis=0)

    return averaged_probs


def predict(model, dataset, *, tta: str = "none", batch_size: int | None = None,
            crop_fraction: float = DEFAULT_CROP_FRACTION) -> np.ndarray:
    """Probabilities `[N, K]` of a Keras classifier, averaged over the test-time views of `tta`.

    `dataset` yields float32 pixel batches `[B, S, S, 3]` (or `(images, ...)` tuples; the first
    element is used), or is an array `[N, S, S, 3]` cut into `batch_size` batches (default 32).
    Views are resized to the model's input size. The model runs in inference mode, compiled.
    """
    import tensorflow as tf

    if tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {tta!r}; choose one of {', '.join(TTA_MODES)}")
    out, averaged_probs = [], None
    for batch in _image_batches(dataset, batch_size):
        batch = tf.cast(batch, tf.float32)
        if averaged_probs is None:
            averaged_probs = tta_predictor(model, tta, image_hw=batch.shape[1:3], crop_fraction=crop_fraction)
        out.append(averaged_probs(batch).numpy())
    if not out:
        raise EvaluationError("the dataset yielded no images")
    return np.concatenate(out).astype(np.float32)


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float):
    # Object-oriented matplotlib (no pyplot): the Agg canvas, no global backend state touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", bbox_inches="tight")
    return Path(path)


def roc_curve_points(y_true, probs, positive_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the binary ROC curve, or of the macro-average OvR curve for K > 2."""
    y, p, pos = _prepare(y_true, probs, positive_index)
    _require_auc_defined(y, p.shape[1], pos)
    if pos is not None:
        fpr, tpr, _ = skm.roc_curve(y == pos, p[:, pos])
        return fpr, tpr
    grid = np.linspace(0.0, 1.0, 201)
    tprs = []
    for k in range(p.shape[1]):
        fpr, tpr, _ = skm.roc_curve(y == k, p[:, k])
        tprs.append(np.interp(grid, fpr, tpr))
    return grid, np.mean(tprs, axis=0)


def plot_roc(curves: dict, path, positive_index: int | None = None, title: str = "ROC curves (test set)",
             *, n_resamples: int = 2000, seed: int = 0) -> Path:
    """Overlaid ROC curves, one per name -> (y_true, probs), AUC [95% CI] in the legend. Atomic write."""
    fig = _new_figure(5.6, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    for name, (y, probs) in curves.items():
        fpr, tpr = roc_curve_points(y, probs, positive_index)
        auc = roc_auc(y, probs, positive_index)
        lo, hi = bootstrap_ci(y, probs, roc_auc, n_resamples=n_resamples, seed=seed, positive_index=positive_index)
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{name}: AUC {auc:.3f} [{lo:.3f}, {hi:.3f}]")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save_figure(fig, path)


def read_history(history_csv) -> dict[str, np.ndarray]:
    """Columns of a Keras CSVLogger file as float arrays (non-numbers -> nan, repeated headers skipped)."""
    with open(history_csv, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise EvaluationError(f"{history_csv}: empty history file")
    header = rows[0]
    body = [r for r in rows[1:] if r and r != header]
    columns = {}
    for j, name in enumerate(header):
        columns[name] = np.array([_to_float(r[j]) if j < len(r) else np.nan for r in body])
    return columns


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _history_panels(columns: dict) -> list[str]:
    """Metric names to plot, loss first; each panel shows `name` and `val_name` where present."""
    bases = []
    for name in columns:
        base = name[4:] if name.startswith("val_") else name
        if base != "epoch" and base not in bases and np.isfinite(columns[name]).any():
            bases.append(base)
    return sorted(bases, key=lambda b: (b != "loss", bases.index(b)))


def plot_history(history_csv, path) -> Path:
    """Learning curves (loss / val_loss and every other metric pair) from a CSVLogger file.

    The x axis counts rows, so a file that several training phases appended to reads left to right.
    """
    from matplotlib.ticker import MaxNLocator

    columns = read_history(history_csv)
    panels = _history_panels(columns)
    if not panels:
        raise EvaluationError(f"{history_csv}: no metric columns to plot")
    n_rows = len(next(iter(columns.values())))
    epochs = np.arange(1, n_rows + 1)
    n_cols = min(3, len(panels))
    grid_rows = math.ceil(len(panels) / n_cols)
    fig = _new_figure(4.2 * n_cols, 3.2 * grid_rows)
    for i, base in enumerate(panels):
        ax = fig.add_subplot(grid_rows, n_cols, i + 1)
        for name, style in ((base, "-"), (f"val_{base}", "--")):
            if name in columns:
                ax.plot(epochs, columns[name], style, marker=".", label=name)
        ax.set_title(base)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


# --------------------------------------------------------------------------- test_predictions.csv


class Predictions(NamedTuple):
    """The content of a `test_predictions.csv`."""

    images: list[str]
    y_true: np.ndarray      # [N] class indices
    probs: np.ndarray       # [N, K]
    class_names: list[str]


def write_predictions(path, images: Sequence, y_true, probs, class_names: Sequence[str]) -> Path:
    """Write `test_predictions.csv` (`image,label,p_<class>...`, label = class index), atomically."""
    y = _as_labels(y_true)
    p = _as_prob_matrix(probs, len(y))
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
