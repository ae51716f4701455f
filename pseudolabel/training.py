"""Supervised teacher training (two-phase transfer learning) and the linear-probe baseline.

    recipe = config.load_recipe("teachers/lite0.toml", "teacher")
    metrics = train_teacher(recipe, task, "runs/teacher")      # reruns resume / just report
    metrics = run_probe(task, "runs/probe")                     # features + logistic regression

Teacher, as in the Keras transfer-learning tutorials but reproducible and cheap on a CPU:
- Phase 1: the backbone is frozen, so its output for an image never changes. Features are
  computed ONCE for train and val (plus `feature_views - 1` augmented views of train, stacked)
  and cached in the run directory (`features.npz`); the `head` submodel is fitted on them
  (Adam, categorical cross-entropy, early stopping on val_loss, balanced class weights). The head
  is the same object as inside the full model, so nothing is copied back.
- Phase 2 (`phase2_epochs > 0`): the top `unfreeze_blocks` blocks and the head train at a low
  learning rate on augmented images (`augment` policy), every BatchNorm in inference mode (the
  backbone's keep their ImageNet statistics, the head's those of the clean phase-1 features),
  with `BackupAndRestore` so a killed run continues after its last finished epoch.
- The best weights over both phases (lowest val_loss) are evaluated on the test split.
- Under a tf.distribute strategy (`strategy=`, see distribute.py) both phases run on every
  replica: the features are extracted with the strategy's `predict`, the head (built and compiled
  in its scope) fits them with the global batch, and phase 2 likewise; evaluation predicts locally.

Run directory (every file written atomically, `rundir.atomic_path`):
    config.json, provenance.json   RunDir: resolved recipe; split hash, seed, versions, command
    features.npz                   phase-1 feature cache, reused only for the same backbone weights
                                   (sha1), image size, views and split
    head.best.weights.h5           phase-1 best head (checkpoint)
    phase1.weights.h5, phase1.json full model after phase 1 and its summary: phase 1 is complete
    best.weights.h5                best full model so far (phase 1, then improved by phase 2)
    backup/                        phase-2 BackupAndRestore state (removed when phase 2 ends)
    phase2.json                    phase 2 is complete
    history.csv, curves.png        one CSVLogger file for both phases (epochs continue), its plot
    tensorboard/                   TensorBoard logs (when the `tensorboard` package is installed)
    model.keras                    the best model
    metrics.json                   test metrics at top level (evaluation.evaluate_predictions),
                                   plus "val", "timings", "n_images", "epochs"; written LAST, so
                                   its presence means the run finished
    test_predictions.csv, val_predictions.csv

Reusable by other trainers (students): `class_weights`, `standard_callbacks`, `load_best`,
`evaluate_and_save`, `save_model`, `save_weights`, `extract_features`.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from pseudolabel.rundir import RunDir, atomic_path, atomic_write_json, read_json

HISTORY_CSV = "history.csv"
CURVES_PNG = "curves.png"
BEST_WEIGHTS = "best.weights.h5"
HEAD_WEIGHTS = "head.best.weights.h5"
PHASE1_WEIGHTS = "phase1.weights.h5"
PHASE1_JSON = "phase1.json"
PHASE2_JSON = "phase2.json"
FEATURES_NPZ = "features.npz"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
MODEL_FILE = "model.keras"
METRICS_JSON = "metrics.json"


# =========================================================================== reusable pieces


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


def _improves(mode: str, current: float, best: float | None) -> bool:
    return best is None or (current < best if mode == "min" else current > best)


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "min" if monitor.endswith("loss") else "max"


class BestWeightsCheckpoint(keras.callbacks.Callback):
    """ModelCheckpoint(save_best_only=True, save_weights_only=True), but atomic and resumable.

    Keras' ModelCheckpoint writes in place (a kill mid-save corrupts the best model) and forgets
    its best value when training restarts; here the best so far is passed in (`initial_best`,
    from history.csv) and the file is replaced atomically.
    """

    def __init__(self, path, monitor: str = "val_loss", mode: str = "auto", initial_best: float | None = None,
                 verbose: int = 0):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.mode = _monitor_mode(monitor, mode)
        self.best = initial_best
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None or not np.isfinite(current) or not _improves(self.mode, float(current), self.best):
            return
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: {self.monitor} improved to {current:.5f}; saving {self.path.name}")
        self.best = float(current)
        save_weights(self.model, self.path)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that continues counting patience across a resume (`initial_best`, `initial_wait`).

    Its in-memory `restore_best_weights` copy only covers epochs since the last (re)start; the
    best over the whole run is the checkpoint file, which `load_best` reads.
    """

    def __init__(self, *args, initial_best: float | None = None, initial_wait: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_best = initial_best
        self.initial_wait = initial_wait

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.initial_best is not None:
            self.best = self.initial_best
            self.wait = self.initial_wait


def read_history_rows(path) -> list[dict]:
    """Rows of a CSVLogger file as dicts (strings); [] when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r.get("epoch") not in (None, "", "epoch")]


def _write_history_rows(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)


def _backup_epoch(backup_dir: Path) -> int | None:
    """The epoch a BackupAndRestore state will resume at, or None when there is none."""
    meta = backup_dir / "training_metadata.json"
    if not meta.exists():
        return None
    try:
        return int(json.loads(meta.read_text())["epoch"])
    except (ValueError, KeyError):
        return None


def _best_and_wait(rows: list[dict], monitor: str, mode: str, start_epoch: int) -> tuple[float | None, int]:
    """Best monitor value over all rows, and epochs without improvement since `start_epoch`."""
    best, wait, best_in_phase = None, 0, None
    for row in rows:
        try:
            value = float(row[monitor])
        except (KeyError, TypeError, ValueError):
            continue
        if int(row["epoch"]) >= start_epoch:
            if _improves(mode, value, best_in_phase):
                best_in_phase, wait = value, 0
            else:
                wait += 1
        if _improves(mode, value, best):
            best = value
    return best, wait


def standard_callbacks(run_dir, *, monitor: str = "val_loss", patience: int, backup: bool = True,
                       start_epoch: int = 0, mode: str = "auto", checkpoint: str = BEST_WEIGHTS,
                       history: str = HISTORY_CSV, tensorboard: bool = True, verbose: int = 0) -> list:
    """Early stopping, best-weights checkpoint, CSV history, TensorBoard and (optionally) backup.

    Call it right before `fit(..., initial_epoch=start_epoch)`; it also prepares the run
    directory for a resume:
    - `backup=True`: `keras.callbacks.BackupAndRestore(run_dir/backup)`; when a backup exists,
      `fit` continues at its epoch. The backup is kept when fit ends (remove it with
      `finish_backup` once you have recorded that the phase is done).
    - history.csv keeps only the rows before the epoch training (re)starts at: rows of epochs that
      will be redone are dropped, and a fresh start (`start_epoch=0`, no backup) starts a fresh file.
      The file is appended to (CSVLogger(append=True)), so phases can share it with continuing
      epoch numbers (`start_epoch` = the epochs already done).
    - the checkpoint (`run_dir/checkpoint`, weights only) is only overwritten by a better value
      than the best in history.csv; early stopping resumes its patience count from history.csv
      (epochs >= `start_epoch`).
    After fit, `load_best(model, run_dir, checkpoint)` gives the best weights of the whole run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mode = _monitor_mode(monitor, mode)
    backed_up = _backup_epoch(run_dir / BACKUP_DIR) if backup else None
    restart_epoch = start_epoch if backed_up is None else max(start_epoch, backed_up)
    history_path = run_dir / history
    rows = [r for r in read_history_rows(history_path) if int(float(r["epoch"])) < restart_epoch]
    _write_history_rows(history_path, rows)
    best, wait = _best_and_wait(rows, monitor, mode, start_epoch)
    resumed_in_phase = restart_epoch > start_epoch

    callbacks = [
        ResumableEarlyStopping(
            monitor=monitor, mode=mode, patience=patience, restore_best_weights=True, verbose=verbose,
            initial_best=best if resumed_in_phase else None, initial_wait=wait,
        ),
        BestWeightsCheckpoint(run_dir / checkpoint, monitor=monitor, mode=mode, initial_best=best, verbose=verbose),
        keras.callbacks.CSVLogger(str(history_path), append=True),
    ]
    if tensorboard and _tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / TENSORBOARD_DIR), write_graph=False))
    if backup:
        # Last, so a backup never claims an epoch whose checkpoint/history row was not written.
        # delete_checkpoint=False: the caller removes it after recording the phase as done, so a
        # kill between the end of fit and that record does not restart the phase.
        callbacks.append(keras.callbacks.BackupAndRestore(
            backup_dir=str(run_dir / BACKUP_DIR), double_checkpoint=True, delete_checkpoint=False,
        ))
    return callbacks


@functools.lru_cache(maxsize=None)
def _tensorboard_available() -> bool:
    # tensorflow-cpu does not depend on the `tensorboard` package, without which tf.summary fails
    # at the first epoch; then there are no TensorBoard logs (history.csv has the same numbers).
    if importlib.util.find_spec("tensorboard") is not None:
        return True
    print("note: the `tensorboard` package is not installed; no TensorBoard logs (pip install tensorboard)")
    return False


def resume_epoch(run_dir) -> int | None:
    """The epoch a backed-up training in `run_dir` resumes at (None: nothing to resume)."""
    return _backup_epoch(Path(run_dir) / BACKUP_DIR)


def finish_backup(run_dir) -> None:
    """Remove the BackupAndRestore state once the phase it belongs to is recorded as done."""
    shutil.rmtree(Path(run_dir) / BACKUP_DIR, ignore_errors=True)


def load_best(model, run_dir, checkpoint: str = BEST_WEIGHTS) -> bool:
    """Load the best checkpoint of `run_dir` into `model`; False when there is none."""
    path = Path(run_dir) / checkpoint
    if not path.exists():
        return False
    model.load_weights(path)
    return True


def keras_verbose(verbose="auto"):
    """Keras' verbose: "auto" = progress bars on a terminal, one line per epoch in a log file."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() else 2


def extract_features(backbone, dataset, *, verbose="auto") -> np.ndarray:
    """Pooled features `[N, D]` (float32) of every image `dataset` yields, in order, inference mode.

    `dataset` yields image batches or `(images, ...)` tuples (only the images are used).
    """
    import tensorflow as tf

    images_only = dataset.map(lambda *e: e[0]) if isinstance(dataset, tf.data.Dataset) and _is_tuple(dataset) else dataset
    return np.asarray(backbone.predict(images_only, verbose=keras_verbose(verbose)), dtype=np.float32)


def _is_tuple(dataset) -> bool:
    return isinstance(dataset.element_spec, tuple)


def _one_hot(labels, num_classes: int) -> np.ndarray:
    return np.eye(int(num_classes), dtype=np.float32)[np.asarray(labels, dtype=np.int64)]


def _image_names(paths: Sequence, root) -> list[str]:
    """Image names for prediction files: relative to the data root when inside it (stable across machines)."""
    root = Path(root).resolve() if root else None
    names = []
    for p in paths:
        p = Path(p)
        try:
            names.append(p.resolve().relative_to(root).as_posix() if root else str(p))
        except ValueError:
            names.append(str(p))
    return names


def _task_subset(task, name: str) -> tuple[list, np.ndarray]:
    paths, labels = task.split.subset(name)
    return list(paths), np.asarray(labels, dtype=np.int64)


def _class_names(task) -> list[str]:
    return [str(c) for c in task.class_map.names]


def _plain_dataset(paths, *, image_size: int, batch_size: int):
    """Images in file order, no augmentation: what evaluation and feature extraction read."""
    from pseudolabel.pipeline import make_dataset

    return make_dataset(paths, image_size=image_size, batch_size=batch_size, shuffle=False, augment=None,
                        cache=None, repeat=False)


def predict_subset(model, task, name: str, *, image_size: int, batch_size: int, tta: str = "none"):
    """(image names, labels, probabilities) of split subset `name`."""
    from pseudolabel.evaluation import predict

    paths, labels = _task_subset(task, name)
    probs = predict(model, _plain_dataset(paths, image_size=image_size, batch_size=batch_size), tta=tta)
    return _image_names(paths, task.root), labels, probs


def write_evaluation(run_dir, task, *, test: tuple, val: tuple | None = None, extra_metrics: dict | None = None) -> dict:
    """Score and save predictions: `test`/`val` = (image names, labels, probs). Writes
    test_predictions.csv (+ val_predictions.csv), curves.png (from history.csv when present) and,
    last, metrics.json (test metrics at top level, `val`, then `extra_metrics`). Returns the metrics."""
    from pseudolabel.evaluation import evaluate_predictions, plot_history, write_predictions

    run_dir = Path(run_dir)
    names, positive = _class_names(task), task.class_map.positive_index
    images, y, probs = test
    write_predictions(run_dir / "test_predictions.csv", images, y, probs, names)
    metrics = evaluate_predictions(y, probs, names, positive_index=positive)
    if val is not None:
        v_images, v_y, v_probs = val
        write_predictions(run_dir / "val_predictions.csv", v_images, v_y, v_probs, names)
        metrics["val"] = evaluate_predictions(v_y, v_probs, names, positive_index=positive)
    if (run_dir / HISTORY_CSV).exists():
        plot_history(run_dir / HISTORY_CSV, run_dir / CURVES_PNG)
    metrics.update(extra_metrics or {})
    atomic_write_json(run_dir / METRICS_JSON, metrics)  # last: its presence means "finished"
    return metrics


def evaluate_and_save(model, task, run_dir, *, image_size: int, batch_size: int, tta: str = "none",
                      extra_metrics: dict | None = None) -> dict:
    """Predict test and val with `model` (`tta` views averaged) and save everything (`write_evaluation`)."""
    kwargs = dict(image_size=image_size, batch_size=batch_size, tta=tta)
    test = predict_subset(model, task, "test", **kwargs)
    val = predict_subset(model, task, "val", **kwargs)
    return write_evaluation(run_dir, task, test=test, val=val, extra_metrics={"tta": tta, **(extra_metrics or {})})


def format_summary(metrics: dict, run_dir, seconds: float | None = None) -> str:
    """One short block: test ROC AUC [CI], accuracy, run directory, time."""
    lo, hi = metrics["roc_auc_ci"]
    lines = [
        f"test ROC AUC {metrics['roc_auc']:.3f} [{lo:.3f}, {hi:.3f}] ({metrics['roc_auc_average']}), "
        f"accuracy {metrics['accuracy']:.3f}, n = {metrics['n']}",
    ]
    if "val" in metrics:
        lines.append(f"val ROC AUC {metrics['val']['roc_auc']:.3f}")
    tail = f" in {seconds:.0f} s" if seconds is not None else ""
    lines.append(f"run directory: {run_dir}{tail}")
    return "\n".join(lines)


# =========================================================================== the teacher


def _resolved_image_size(model_cfg: dict) -> int:
    from pseudolabel.backbones import get_spec

    return int(model_cfg["image_size"] or get_spec(model_cfg["backbone"]).image_size)


def _weights_arg(weights):
    # TOML has no null: "none" (any case) means random initialisation.
    return None if isinstance(weights, str) and weights.lower() == "none" else weights


def build_model(recipe: dict, num_classes: int, strategy=None):
    """The classifier a recipe's `[model]` table describes (teacher or student), built in the
    scope of `strategy` (default: none) with the recipe's `train.mixed_precision`; BatchNorm
    layers use the global batch statistics when there are several replicas (distribute.py)."""
    from pseudolabel.backbones import create_model
    from pseudolabel.distribute import building, synchronize_batchnorm

    m = recipe["model"]
    with building(strategy, recipe["train"].get("mixed_precision", "auto")):
        model = create_model(m["backbone"], num_classes, image_size=_resolved_image_size(m),
                             weights=_weights_arg(m["weights"]), dropout=m["dropout"],
                             drop_connect_rate=m["drop_connect_rate"])
    synchronize_batchnorm(model, strategy)
    return model


def _compile(model, learning_rate: float) -> None:
    # The same loss and metrics in both phases: history.csv keeps one set of columns. The
    # optimizer belongs in the scope of the strategy the model was built under.
    with model.distribute_strategy.scope():
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                      metrics=["accuracy"])


def weights_fingerprint(model) -> str:
    """sha1 of all weights of `model`: cached features are only reused for the very same backbone
    (a randomly initialised one, or other weights under the same file name, gets new features)."""
    import hashlib

    digest = hashlib.sha1()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def _feature_key(recipe: dict, task, image_size: int, backbone) -> dict:
    m, t = recipe["model"], recipe["train"]
    key = {"backbone": m["backbone"], "image_size": image_size, "weights": weights_fingerprint(backbone),
           "feature_views": int(t["feature_views"]), "split_hash": task.split.hash}
    if key["feature_views"] > 1:   # only augmented views depend on the policy and the seed
        key.update(augment=t["augment"], seed=int(t["seed"]))
    return key


def _augmented_dataset(paths, *, image_size: int, batch_size: int, augment: str, seed: int):
    from pseudolabel.augment import get_augment
    from pseudolabel.pipeline import make_dataset

    return make_dataset(paths, image_size=image_size, batch_size=batch_size, shuffle=False, seed=seed,
                        augment=get_augment(augment, image_size, seed=seed), cache=None, repeat=False)


def compute_features(backbone, task, *, image_size: int, batch_size: int, views: int = 1,
                     augment: str = "teacher", seed: int = 0, verbose="auto") -> dict[str, np.ndarray]:
    """Backbone features of train (1 clean + views-1 augmented copies, stacked) and val (clean)."""
    train_paths, train_y = _task_subset(task, "train")
    val_paths, val_y = _task_subset(task, "val")
    plain = dict(image_size=image_size, batch_size=batch_size)
    train_x = [extract_features(backbone, _plain_dataset(train_paths, **plain), verbose=verbose)]
    for view in range(1, int(views)):
        ds = _augmented_dataset(train_paths, **plain, augment=augment, seed=seed + view)
        train_x.append(extract_features(backbone, ds, verbose=verbose))
    return {
        "train_x": np.concatenate(train_x),
        "train_y": np.tile(train_y, len(train_x)),
        "val_x": extract_features(backbone, _plain_dataset(val_paths, **plain), verbose=verbose),
        "val_y": val_y,
    }


def cached_features(run: RunDir, key: dict, compute) -> tuple[dict[str, np.ndarray], bool]:
    """`features.npz` of the run when its key matches `key`, else `compute()` saved atomically.

    Returns (features, reused)."""
    path = run.file(FEATURES_NPZ)
    key_text = json.dumps(key, sort_keys=True)
    if path.exists():
        with np.load(path) as npz:
            if str(npz["key"]) == key_text:
                return {k: npz[k] for k in npz.files if k != "key"}, True
    features = compute()
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.array(key_text), **features)
    return features, False


def run_phase1(model, recipe: dict, task, run: RunDir, *, image_size: int, verbose="auto") -> dict:
    """Fit the head on cached backbone features; leaves the best head in `model`. Returns a summary."""
    t = recipe["train"]
    started = time.perf_counter()
    backbone, head = model.get_layer("backbone"), model.get_layer("head")
    features, reused = cached_features(run, _feature_key(recipe, task, image_size, backbone), lambda: compute_features(
        backbone, task, image_size=image_size, batch_size=t["batch_size"], views=t["feature_views"],
        augment=t["augment"], seed=t["seed"], verbose=verbose))
    features_s = time.perf_counter() - started
    num_classes = len(task.class_map.names)

    _compile(head, t["phase1_lr"])
    callbacks = standard_callbacks(run.path, patience=t["phase1_patience"], backup=False, start_epoch=0,
                                   checkpoint=HEAD_WEIGHTS)
    fit_started = time.perf_counter()
    history = head.fit(
        features["train_x"], _one_hot(features["train_y"], num_classes),
        validation_data=(features["val_x"], _one_hot(features["val_y"], num_classes)),
        epochs=int(t["phase1_epochs"]), batch_size=int(t["batch_size"]), shuffle=True,
        class_weight=class_weights(features["train_y"], num_classes, t["class_weight"]),
        callbacks=callbacks, verbose=keras_verbose(verbose),
    )
    load_best(head, run.path, HEAD_WEIGHTS)
    val_losses = history.history.get("val_loss", [])
    return {
        "epochs": len(history.epoch),
        "best_epoch": int(np.nanargmin(val_losses)) + 1 if val_losses else None,
        "best_val_loss": float(np.nanmin(val_losses)) if val_losses else None,
        "n_train_features": int(len(features["train_x"])),
        "features_reused": reused,
        "features_s": round(features_s, 2),
        "fit_s": round(time.perf_counter() - fit_started, 2),
    }


def _training_datasets(recipe: dict, task, image_size: int):
    from pseudolabel.augment import get_augment
    from pseudolabel.pipeline import make_dataset

    t = recipe["train"]
    num_classes = len(task.class_map.names)
    train_paths, train_y = _task_subset(task, "train")
    val_paths, val_y = _task_subset(task, "val")
    augment = None if t["augment"] in (None, "none") else get_augment(t["augment"], image_size, seed=t["seed"])
    train = make_dataset(train_paths, train_y, image_size=image_size, batch_size=t["batch_size"], shuffle=True,
                         seed=t["seed"], augment=augment, cache="memory", repeat=False, num_classes=num_classes)
    val = make_dataset(val_paths, val_y, image_size=image_size, batch_size=t["batch_size"], shuffle=False,
                       augment=None, cache="memory", repeat=False, num_classes=num_classes)
    return train, val, train_y


def freeze_batchnorm(model) -> None:
    """Every BatchNormalization layer of `model` in inference mode (Keras 3: trainable=False).

    Phase 2 freezes the head's BatchNorm too: its statistics were fitted on clean phase-1
    features, and updating them on augmented batches would shift what inference sees.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def run_phase2(model, recipe: dict, task, run: RunDir, *, image_size: int, start_epoch: int, verbose="auto") -> dict:
    """Fine-tune the top blocks (BatchNorm frozen) from the phase-1 model; resumes from run/backup."""
    from pseudolabel.backbones import unfreeze_top_blocks

    t = recipe["train"]
    unfrozen = unfreeze_top_blocks(model, int(t["unfreeze_blocks"]))
    freeze_batchnorm(model.get_layer("head"))
    _compile(model, t["phase2_lr"])
    train_ds, val_ds, train_y = _training_datasets(recipe, task, image_size)
    resumed_at = resume_epoch(run.path)
    if resumed_at is not None:
        print(f"phase 2: resuming from the backup at epoch {resumed_at + 1} ({run.file(BACKUP_DIR)})")
    callbacks = standard_callbacks(run.path, patience=t["phase2_patience"], backup=True, start_epoch=start_epoch)
    started = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=start_epoch + int(t["phase2_epochs"]), initial_epoch=start_epoch,
        class_weight=class_weights(train_y, len(task.class_map.names), t["class_weight"]),
        callbacks=callbacks, verbose=keras_verbose(verbose), shuffle=False,   # the dataset shuffles itself
    )
    return {
        "unfrozen_blocks": unfrozen,
        "epochs_this_session": len(history.epoch),
        "last_epoch": int(history.epoch[-1]) + 1 if history.epoch else resumed_at,
        "resumed_at_epoch": resumed_at,
        "fit_s": round(time.perf_counter() - started, 2),
    }


def _check_same_split(run_dir: Path, task) -> None:
    """A run directory continues only on the split it started with (no override: a model trained
    on one split and evaluated on another reports a test set it may have seen)."""
    from pseudolabel.data import DataError

    provenance = run_dir / "provenance.json"
    if not provenance.exists():
        return
    recorded = read_json(provenance).get("split_hash")
    if recorded is not None and recorded != task.split.hash:
        raise DataError(f"{run_dir} was started on split sha256 {recorded[:12]}..., the split given now is "
                        f"{task.split.hash[:12]}...; use a new run directory for a new split")


def _check_same_recipe(run_dir: Path, recipe: dict) -> None:
    """A run directory continues only with the recipe it started with, so config.json stays true."""
    from pseudolabel.config import ConfigError

    config = run_dir / "config.json"
    if not config.exists():
        return
    from pseudolabel.config import TEACHER_DEFAULTS

    old = read_json(config)
    # A key the run's config.json predates counts as its default (e.g. train.scale_lr).
    changed = sorted(
        f"{table}.{key}" for table in ("model", "train")
        for key in set(old.get(table, {})) | set(recipe[table])
        if old.get(table, {}).get(key, TEACHER_DEFAULTS[table].get(key))
        != json.loads(json.dumps(recipe[table].get(key)))
    )
    if changed:
        raise ConfigError(f"{run_dir} was started with another recipe (changed: {', '.join(changed)}); "
                          "use a new run directory")


def open_run(recipe: dict, task, run_dir, resume: bool) -> RunDir:
    """Create the run directory, or reopen it to resume: only with the same split and recipe
    (`recipe` may carry more tables, e.g. a student's pseudo-label settings)."""
    run_dir = Path(run_dir)
    if run_dir.joinpath("provenance.json").exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; use another directory or resume=True")
    _check_same_split(run_dir, task)
    _check_same_recipe(run_dir, recipe)
    return RunDir.create(run_dir, recipe, seed=int(recipe["train"]["seed"]), split_hash=task.split.hash)


def _n_images(task) -> dict[str, int]:
    return {name: len(_task_subset(task, name)[0]) for name in ("train", "val", "test")}


def train_teacher(recipe: dict, task, run_dir, *, resume: bool = True, verbose="auto", strategy=None) -> dict:
    """Train (or resume, or just report) the supervised teacher of `recipe` on `task`; return metrics.

    `recipe` comes from `config.load_recipe(path, "teacher")`; `task` has `root`, `class_map`,
    `split` (`subset(name)`, `hash`). Rerunning on the same `run_dir` skips a finished phase 1,
    resumes phase 2 from its backup, and only reports a finished run (metrics.json exists).
    `strategy`: a `tf.distribute.Strategy` or a name for `distribute.get_strategy` (None: "auto");
    both phases train under it, with the batch size per replica and learning rates scaled
    (`distribute.scaled_train_config`). A non-chief worker writes into `run_dir/worker-<i>`.
    """
    from pseudolabel import distribute

    started = time.perf_counter()
    strategy = distribute.resolve_strategy(strategy)
    run_dir = distribute.worker_dir(run_dir, strategy)
    if resume and (run_dir / METRICS_JSON).exists():
        _check_same_recipe(run_dir, recipe)   # a finished run must not pass for another recipe's
        metrics = read_json(run_dir / METRICS_JSON)
        print(f"teacher: finished earlier\n{format_summary(metrics, run_dir)}")
        return metrics
    run = open_run(recipe, task, run_dir, resume)
    t = recipe["train"]
    keras.utils.set_random_seed(int(t["seed"]))
    image_size = _resolved_image_size(recipe["model"])
    model = build_model(recipe, len(task.class_map.names), strategy)
    # The phases train with the global batch and scaled rates; config.json keeps the recipe as written.
    scaled = {**recipe, "train": distribute.scaled_train_config(t, strategy, ("phase1_lr", "phase2_lr"))}

    phase1 = _phase1_once(model, scaled, task, run, image_size=image_size, verbose=verbose)
    phase2 = None
    if int(t["phase2_epochs"]) > 0:
        phase2 = _phase2_once(model, scaled, task, run, image_size=image_size, start_epoch=phase1["epochs"],
                              verbose=verbose)
    load_best(model, run.path, BEST_WEIGHTS)
    save_model(model, run.file(MODEL_FILE))

    eval_started = time.perf_counter()
    extra = {
        "kind": "teacher",
        "backbone": recipe["model"]["backbone"],
        "image_size": image_size,
        "n_images": _n_images(task),
        "epochs": {"phase1": phase1["epochs"], "phase2": (phase2 or {}).get("last_epoch", 0)},
        "phase1": phase1,
        "phase2": phase2,
        "distribute": distribute.describe_training(strategy, scaled["train"], model),
        "split_hash": task.split.hash,
    }
    metrics = evaluate_and_save(model, task, run.path, image_size=image_size, batch_size=t["batch_size"],
                                tta=t["tta"], extra_metrics=extra)
    # Timings: add evaluation, then rewrite (metrics.json is small; written last again).
    metrics["timings"] = {
        "features_s": phase1["features_s"], "phase1_fit_s": phase1["fit_s"],
        "phase2_fit_s": (phase2 or {}).get("fit_s", 0.0),
        "evaluate_s": round(time.perf_counter() - eval_started, 2),
        "total_this_session_s": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(run.file(METRICS_JSON), metrics)
    print(format_summary(metrics, run.path, time.perf_counter() - started))
    return metrics


def _phase1_once(model, recipe, task, run: RunDir, *, image_size: int, verbose) -> dict:
    """Phase 1, or its record when a previous session completed it (then the model gets its weights)."""
    if run.exists(PHASE1_JSON) and run.exists(PHASE1_WEIGHTS):
        model.load_weights(run.file(PHASE1_WEIGHTS))
        summary = read_json(run.file(PHASE1_JSON))
        print(f"phase 1: done earlier ({summary['epochs']} epochs, best val_loss {summary['best_val_loss']:.4f})")
        return summary
    from pseudolabel.backbones import freeze_backbone

    freeze_backbone(model)
    summary = run_phase1(model, recipe, task, run, image_size=image_size, verbose=verbose)
    save_weights(model, run.file(PHASE1_WEIGHTS))
    shutil.copyfile(run.file(PHASE1_WEIGHTS), run.file(f".{BEST_WEIGHTS}.tmp"))
    os.replace(run.file(f".{BEST_WEIGHTS}.tmp"), run.file(BEST_WEIGHTS))   # phase 2 must beat this
    atomic_write_json(run.file(PHASE1_JSON), summary)                       # the "phase 1 done" record
    return summary


def _phase2_once(model, recipe, task, run: RunDir, *, image_size: int, start_epoch: int, verbose) -> dict:
    if run.exists(PHASE2_JSON):
        summary = read_json(run.file(PHASE2_JSON))
        print(f"phase 2: done earlier (until epoch {summary['last_epoch']})")
        return summary
    summary = run_phase2(model, recipe, task, run, image_size=image_size, start_epoch=start_epoch, verbose=verbose)
    atomic_write_json(run.file(PHASE2_JSON), summary)
    finish_backup(run.path)
    return summary


# =========================================================================== the linear probe


def _probe_features(task, run: RunDir, *, backbone: str, image_size: int, weights, batch_size: int,
                    verbose="auto") -> tuple[dict[str, np.ndarray], bool]:
    from pseudolabel.backbones import create_backbone

    model = create_backbone(backbone, image_size=image_size, weights=_weights_arg(weights))
    key = {"backbone": backbone, "image_size": image_size, "weights": weights_fingerprint(model),
           "split_hash": task.split.hash}

    def compute():
        out = {}
        for name in ("train", "val", "test"):
            paths, y = _task_subset(task, name)
            out[f"{name}_x"] = extract_features(model, _plain_dataset(paths, image_size=image_size,
                                                                      batch_size=batch_size), verbose=verbose)
            out[f"{name}_y"] = y
        return out

    return cached_features(run, key, compute)


def fit_probe(train_x, train_y, *, cv: int = 5, seed: int = 0, Cs: int | Sequence[float] = 20):
    """StandardScaler + L2 LogisticRegressionCV, C chosen by stratified k-fold CV (ROC AUC) on these rows."""
    import inspect

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_classes = len(np.unique(train_y))
    options = {}
    accepted = inspect.signature(LogisticRegressionCV).parameters
    if "use_legacy_attributes" in accepted:   # scikit-learn >= 1.8: say what older versions did
        options.update(l1_ratios=(0.0,), use_legacy_attributes=False)
    classifier = LogisticRegressionCV(
        Cs=Cs, cv=StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed),
        scoring="roc_auc" if n_classes == 2 else "roc_auc_ovr", max_iter=5000, **options,
    )
    return make_pipeline(StandardScaler(), classifier).fit(train_x, train_y)


def _probe_summary(classifier, cv: int) -> dict:
    """Chosen C and its mean cross-validated ROC AUC (legacy and new scikit-learn attributes)."""
    scores = classifier.scores_
    scores = np.asarray(next(iter(scores.values())) if isinstance(scores, dict) else scores)
    per_c = scores.reshape(scores.shape[0], -1).mean(axis=0)   # folds x (l1 ratios x) Cs
    return {"C": float(np.ravel(classifier.C_)[0]), "cv": cv, "cv_roc_auc": float(per_c.max()), "fit_on": "train"}


def run_probe(task, run_dir, *, backbone: str = "efficientnet_lite0", image_size: int | None = None,
              weights="imagenet", cv: int = 5, seed: int = 0, batch_size: int = 32, verbose="auto") -> dict:
    """Linear-probe baseline: frozen backbone features -> standardized logistic regression.

    Decision: the probe is fitted on the TRAIN split only, with C chosen by stratified `cv`-fold
    cross-validation (ROC AUC) inside train; val is not used for fitting or selection, only
    scored (metrics["val"]). So the probe learns from exactly the images the teacher's weights
    learn from, and its val/test numbers compare with the teacher's. Same files as the teacher.
    """
    from pseudolabel.backbones import get_spec

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if (run_dir / METRICS_JSON).exists():
        metrics = read_json(run_dir / METRICS_JSON)
        print(f"probe: finished earlier\n{format_summary(metrics, run_dir)}")
        return metrics
    size = int(image_size or get_spec(backbone).image_size)
    config = {"kind": "probe", "model": {"backbone": backbone, "image_size": size, "weights": weights},
              "probe": {"cv": cv, "seed": seed, "batch_size": batch_size, "fit_on": "train",
                        "classifier": "StandardScaler + LogisticRegressionCV(scoring=roc_auc)"}}
    _check_same_split(run_dir, task)
    run = RunDir.create(run_dir, config, seed=seed, split_hash=task.split.hash)
    features, reused = _probe_features(task, run, backbone=backbone, image_size=size, weights=weights,
                                       batch_size=batch_size, verbose=verbose)
    features_s = time.perf_counter() - started
    fit_started = time.perf_counter()
    probe = fit_probe(features["train_x"], features["train_y"], cv=cv, seed=seed)
    fit_s = time.perf_counter() - fit_started

    paths = {name: _image_names(_task_subset(task, name)[0], task.root) for name in ("test", "val")}
    scored = {name: (paths[name], features[f"{name}_y"], probe.predict_proba(features[f"{name}_x"]))
              for name in ("test", "val")}
    classifier = probe[-1]
    if len(classifier.classes_) != len(task.class_map.names):
        raise ValueError(f"the train split holds classes {classifier.classes_.tolist()} only, "
                         f"the task has {len(task.class_map.names)}")
    extra = {
        "kind": "probe", "backbone": backbone, "image_size": size, "n_images": _n_images(task),
        "probe": _probe_summary(classifier, cv),
        "timings": {"features_s": round(features_s, 2), "features_reused": reused, "fit_s": round(fit_s, 2)},
        "split_hash": task.split.hash,
    }
    metrics = write_evaluation(run.path, task, test=scored["test"], val=scored["val"], extra_metrics=extra)
    print(format_summary(metrics, run.path, time.perf_counter() - started))
    return metrics
