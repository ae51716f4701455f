"""Pieces every trainer shares: building and compiling the classifier, class weights, saving.

    model = build_model(recipe, num_classes, strategy)   # recipe: config.TeacherRecipe / StudentRecipe
    compile_classifier(model, learning_rate=1e-3)
    fit(..., class_weight=class_weights(train_y, num_classes, "balanced"))
    save_model(model, run_dir / "model.keras")           # atomically: never a half-written model

The run lifecycle around them (open, resume, evaluate, metrics) is `pseudolabel.lifecycle`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from pseudolabel.rundir import atomic_path


def class_weights(labels, num_classes: int, mode: str | None = "balanced") -> dict[int, float] | None:
    """Keras `class_weight` for `labels`: "balanced" = n / (k * count_c) (scikit-learn), "none" = None.

    `labels` are class indices `[N]` or target rows `[N, K]` (one-hot or soft pseudo-labels: each
    row counts for its top class). A class absent from `labels` gets weight 1 (it never occurs).
    """
    from sklearn.utils.class_weight import compute_class_weight

    if mode in (None, "none", False):
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be 'balanced' or 'none', got {mode!r}")
    y = np.asarray(labels)
    y = y.argmax(axis=1) if y.ndim == 2 else y.astype(np.int64)
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    out = {k: 1.0 for k in range(int(num_classes))}
    out.update({int(k): float(w) for k, w in zip(present, weights)})
    return out


def save_model(model, path) -> Path:
    """Save `model` (.keras) to a temporary file renamed into place: never a half-written model.

    A functional model is saved as an inference copy (same architecture and weights, no optimizer
    state): optimizer slots built for the fine-tuned subset of weights only make loading warn
    ("Skipping variable loading for optimizer"), and nobody resumes training from model.keras.
    """
    if type(model).__name__ in ("Functional", "Sequential"):   # not subclassed models (e.g. NoisyStudent)
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        model = copy
    with atomic_path(path) as tmp:
        model.save(tmp)
    return Path(path)


def save_weights(model, path) -> Path:
    """`model.save_weights` atomically. Keras wants the name to end in `.weights.h5`, so the
    temporary file does too (rundir.atomic_path keeps only the last suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.weights.h5", dir=path.parent)
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path



def keras_verbose(verbose="auto"):
    """Keras' verbose: "auto" = progress bars on a terminal, one line per epoch in a log file."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() else 2


def predict_verbose(verbose="auto"):
    """Keras' verbose for `predict`: as `keras_verbose`, but nothing in a log file, where a predict
    call's one "epoch" line ("4/4 - 1s - 152ms/step") says neither what was predicted nor how far."""
    verbose = keras_verbose(verbose)
    return 0 if verbose == 2 else verbose


def one_hot(labels, num_classes: int) -> np.ndarray:
    return np.eye(int(num_classes), dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def build_model(recipe, num_classes: int, strategy=None):
    """The classifier a recipe's `[model]` table describes (teacher or student), built in the
    scope of `strategy` (default: none) with the recipe's `train.mixed_precision`; BatchNorm
    layers use the global batch statistics when there are several replicas (distribute.py)."""
    from pseudolabel.backbones import create_model
    from pseudolabel.distribute import building, synchronize_batchnorm

    m = recipe.model
    with building(strategy, recipe.train.mixed_precision):
        model = create_model(m.backbone, num_classes, image_size=m.image_size, weights=m.weights,
                             dropout=m.dropout, drop_connect_rate=m.drop_connect_rate)
    synchronize_batchnorm(model, strategy)
    return model


def compile_classifier(model, learning_rate: float, *, auc: bool = False) -> None:
    """Adam, categorical cross-entropy, accuracy (and with `auc` the macro one-vs-rest ROC AUC,
    logged as `auc` / `val_auc`): the same in both teacher phases, so history.csv keeps one set of
    columns. The optimizer belongs in the scope of the model's strategy."""
    with model.distribute_strategy.scope():
        metrics = ["accuracy"]
        if auc:   # multi_label over one-hot columns = per-class AUC, averaged (binary: the AUC itself)
            classes = model.output_shape[-1]
            metrics.append(keras.metrics.AUC(name="auc", multi_label=True, num_labels=classes, num_thresholds=500))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                      metrics=metrics)


def freeze_batchnorm(model) -> None:
    """Every BatchNormalization layer of `model` in inference mode (Keras 3: trainable=False).

    Phase 2 freezes the head's BatchNorm too: its statistics were fitted on clean phase-1
    features, and updating them on augmented batches would shift what inference sees.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False

