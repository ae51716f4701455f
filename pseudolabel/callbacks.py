"""Keras callbacks that make a training resumable: best checkpoint, early stopping, history, backup.

`standard_callbacks(run_dir, ...)` gives the set every trainer uses; it also prepares the run
directory for a resume (history rows of epochs that will be redone are dropped, the best value
and the patience count continue from history.csv, a BackupAndRestore state resumes `fit`).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import keras
import numpy as np

from pseudolabel.rundir import atomic_path
from pseudolabel.training import save_weights

HISTORY_CSV = "history.csv"
BEST_WEIGHTS = "best.weights.h5"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"


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
                       history: str = HISTORY_CSV, tensorboard: bool = True, verbose: int = 0,
                       initial_best: float | None = None) -> list:
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
    - `initial_best`: a value the checkpoint must beat although no history row holds it (the
      starting weights were evaluated, not trained: a head initialised from the probe).
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
    if initial_best is not None and _improves(mode, initial_best, best):
        best = initial_best
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
    with warnings.catch_warnings():
        # The best weights may predate the optimizer's slots (a teacher whose phase 2 never beat
        # phase 1): Keras warns it skips them. Only the weights matter here: evaluation follows.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)
    return True


