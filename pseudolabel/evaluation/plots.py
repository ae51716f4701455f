"""Plots (object-oriented matplotlib, Agg canvas, written atomically): ROC curves with AUC and
bootstrap CI in the legend, learning curves from a Keras CSVLogger history, label-budget curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

from pseudolabel.evaluation.metrics import EvaluationError, bootstrap_ci, require_auc_defined, roc_auc, validated_inputs
from pseudolabel.rundir import atomic_path

__all__ = ["has_epochs", "plot_history", "plot_label_curve", "plot_roc", "read_history", "roc_curve_points"]


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
    y, p, pos = validated_inputs(y_true, probs, positive_index)
    require_auc_defined(y, p.shape[1], pos)
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


def has_epochs(history_csv) -> bool:
    """Whether a CSVLogger file exists and holds at least one epoch (a run that trained no epoch,
    e.g. a teacher that is the probe's head alone, leaves it empty): only then are there curves."""
    path = Path(history_csv)
    if not path.is_file():
        return False
    with open(path, newline="") as f:
        return sum(1 for row in csv.reader(f) if row) > 1


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


def plot_label_curve(series: dict, path, *, ticks: dict, title: str, ylabel: str = "test ROC AUC") -> Path:
    """A metric against the number of labels (log x axis): one line per model, its mean with the
    spread (sd) as error bars; supervised models solid with circles, semi-supervised ones dashed
    with squares. `series`: name -> {"x", "mean", "sd", "supervised"}; `ticks`: x -> label. Atomic."""
    from matplotlib.ticker import FixedLocator, NullLocator

    fig = _new_figure(9.0, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{i}" for i in range(10)]
    for i, (name, s) in enumerate(series.items()):
        # Nudge each model sideways (multiplicatively: the axis is logarithmic) so bars do not overlap.
        nudge = 1.0 + 0.02 * (i - (len(series) - 1) / 2)
        x = np.asarray(s["x"], float) * nudge
        style = dict(linestyle="-", marker="o") if s["supervised"] else dict(linestyle="--", marker="s")
        kind = "supervised" if s["supervised"] else "semi-supervised"
        ax.errorbar(x, s["mean"], yerr=s["sd"], capsize=3, linewidth=1.6, markersize=5,
                    color=colors[i % len(colors)], label=f"{name} ({kind})", **style)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([ticks[x] for x in sorted(ticks)])
    ax.set_xlabel("labeled training images (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # beside the axes: never over a point
    fig.tight_layout()
    return _save_figure(fig, path)
