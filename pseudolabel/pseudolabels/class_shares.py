"""What keeps the selected pseudo-labels from drifting to the majority class (`[pseudo]`).

Each rule works on a whole pseudo-label table at once (the teacher labels the pool once per
round, offline), so the online rules of the papers are taken at their fixed point over the pool:

- `align_to_prior`: distribution alignment, ReMixMatch (Berthelot et al. 2020, sec. 3.2):
  q~ = Normalize(q * p(y) / p~(y)), p(y) the labeled class prior, p~(y) the model's mean prediction
  on unlabeled data (a running mean in the paper; here the mean over the whole table).
- `class_thresholds`, rule "flexmatch": Curriculum Pseudo Labeling, FlexMatch (Zhang et al. 2021,
  eqs. 6-7 with the convex mapping): sigma(c) = #{n : max_k p_n(k) >= tau, argmax p_n = c},
  beta(c) = sigma(c) / max_c sigma(c), T(c) = M(beta(c)) * tau with M(x) = x / (2 - x). Without the
  paper's threshold warm-up (its denominator max(max sigma, N - sum sigma) is for a model at the
  start of training; the teacher here is trained), except that when no image reaches tau every
  beta is 0 (as the warm-up rule gives), so T = 0 and nothing is removed.
- rule "freematch": self-adaptive thresholds, FreeMatch (Wang et al. 2023, eqs. 5-7): global
  tau = mean over the pool of max_k p_n(k), local p~(c) = mean over the pool of p_n(c),
  T(c) = p~(c) / max_c p~(c) * tau (the EMAs of the paper, taken over every pool image once).
- `keep_most_confident`: per predicted class, the most confident fraction: a per-class quantile
  threshold, the same cut for every class whatever K is.
- `allocate`: rows per class for balancing: equal shares, or the labeled prior's shares.
"""

from __future__ import annotations

import math

import numpy as np

THRESHOLD_RULES = ("fixed", "flexmatch", "freematch")

__all__ = ["THRESHOLD_RULES", "align_to_prior", "allocate", "class_thresholds", "ineffective_threshold",
           "keep_most_confident", "labeled_prior"]


def labeled_prior(labels, num_classes: int) -> np.ndarray:
    """Class shares of labeled class indices (the train split's prior)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes].astype(np.float64)
    return counts / counts.sum() if counts.sum() else np.full(num_classes, 1.0 / num_classes)


def align_to_prior(probs: np.ndarray, prior) -> np.ndarray:
    """ReMixMatch's distribution alignment of every row of `probs` [N, K] to `prior` [K]."""
    probs = np.asarray(probs, np.float64)
    if not len(probs):
        return probs.astype(np.float32)
    mean = np.clip(probs.mean(axis=0), 1e-12, None)
    aligned = probs * (np.asarray(prior, np.float64) / mean)
    return (aligned / np.clip(aligned.sum(axis=1, keepdims=True), 1e-30, None)).astype(np.float32)


def class_thresholds(probs: np.ndarray, rule: str, threshold: float) -> np.ndarray:
    """The confidence threshold of every class [K] under `rule` (module doc), in float32 like the
    table's probabilities (so "fixed" compares exactly as `confidence >= threshold` does)."""
    return _thresholds(np.asarray(probs, np.float64), rule, threshold).astype(np.float32)


def _thresholds(probs: np.ndarray, rule: str, threshold: float) -> np.ndarray:
    k = probs.shape[1]
    if rule == "fixed" or not len(probs):
        return np.full(k, float(threshold))
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    if rule == "flexmatch":
        sigma = np.bincount(predicted[confidence >= threshold], minlength=k)[:k].astype(np.float64)
        beta = sigma / max(sigma.max(), 1.0)
        return beta / (2.0 - beta) * threshold
    if rule == "freematch":
        local = probs.mean(axis=0)
        return local / local.max() * confidence.mean()
    raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")


def ineffective_threshold(threshold: float, rule: str, num_classes: int) -> str | None:
    """Why the threshold setting cannot remove a row (None when it can): the top probability of K
    classes is never below 1/K, and FlexMatch's thresholds never exceed `threshold`."""
    if rule == "freematch" or threshold <= 0 or threshold > 1.0 / num_classes:
        return None
    return (f"threshold {threshold:g} removes nothing: with {num_classes} classes the top probability is always "
            f">= 1/{num_classes} = {1.0 / num_classes:.3g}; to drop the least sure images use threshold_rule = "
            f"\"freematch\", keep_fraction < 1 (per class), or a threshold above {1.0 / num_classes:.3g}")


def keep_most_confident(predicted: np.ndarray, confidence: np.ndarray, num_classes: int,
                        fraction: float) -> np.ndarray:
    """Indices (ascending) of the ceil(fraction * n_c) most confident rows of every predicted class c."""
    if fraction >= 1.0:
        return np.arange(len(predicted))
    keep = []
    for c in range(num_classes):
        members = np.flatnonzero(predicted == c)
        ranked = members[np.argsort(-confidence[members], kind="stable")]
        keep.append(ranked[:math.ceil(fraction * len(members))])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def allocate(counts: np.ndarray, per_class: int, prior=None) -> np.ndarray:
    """Rows per class for balancing. Without `prior`: `per_class` each (0: the largest count, so no
    class loses a row). With `prior`: a total shared out by the prior over the classes that have
    rows, by largest remainders (the rows add up to the total exactly): K x `per_class`, or for 0
    the smallest total at which no class loses a row (the same rule: equal balancing is prior
    balancing with a uniform prior). Classes without rows, or without prior share, get none."""
    counts = np.asarray(counts, np.int64)
    present = counts > 0
    if prior is None:
        target = int(per_class) if per_class > 0 else int(counts.max(initial=0))
        return np.where(present, target, 0)
    share = np.where(present, np.asarray(prior, np.float64), 0.0)
    if share.sum() <= 0:   # no labeled image of any class that has rows: share equally
        share = present.astype(np.float64)
    share = share / share.sum()
    if per_class > 0:
        total = int(per_class) * len(counts)
    else:
        total = int(np.ceil(max(counts[c] / share[c] for c in np.flatnonzero(share > 0)) - 1e-9))
    exact = share * total
    rows = np.floor(exact + 1e-9).astype(np.int64)
    candidates = np.flatnonzero(share > 0)
    order = candidates[np.argsort(-(exact - rows)[candidates], kind="stable")]
    rows[order[:total - rows.sum()]] += 1
    return rows
