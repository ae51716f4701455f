"""The supervised teacher: two-phase transfer learning on the labeled train split.

    recipe = config.load_recipe("teachers/efficientnet_lite0.toml", "teacher")
    metrics = train_teacher(recipe, task, "runs/teacher")      # reruns resume / just report

As in the Keras transfer-learning tutorials, but reproducible and cheap on a CPU:
- Phase 1: the backbone is frozen, so its output for an image never changes. Features are
  computed ONCE for train and val (plus `feature_views - 1` augmented views of train, stacked)
  and cached in the run directory (`features.npz`); the `head` submodel is fitted on them (Adam,
  categorical cross-entropy, early stopping on val_loss, balanced class weights). The head is the
  same object as inside the full model, so nothing is copied back.
- Phase 2 (`phase2_epochs > 0`): the top `unfreeze_blocks` blocks and the head train at a low
  learning rate on augmented images (`augment` policy), every BatchNorm in inference mode (the
  backbone's keep their ImageNet statistics, the head's those of the clean phase-1 features),
  with `BackupAndRestore` so a killed run continues after its last finished epoch.
- The best weights over both phases (lowest val_loss) are evaluated on the test split.
- Under a tf.distribute strategy both phases run on every replica with the global batch and
  scaled learning rates (`distribute.scaled_train_config`); evaluation predicts locally.

The run directory (besides what every run writes, `lifecycle`):
    features.npz                   phase-1 feature cache, reused only for the same backbone weights
                                   (sha1), image size, views and split
    head.best.weights.h5           phase-1 best head (checkpoint)
    phase1.weights.h5, phase1.json full model after phase 1 and its summary: phase 1 is complete
    best.weights.h5                best full model so far (phase 1, then improved by phase 2)
    backup/                        phase-2 BackupAndRestore state (removed when phase 2 ends)
    phase2.json                    phase 2 is complete
    history.csv, curves.png        one CSVLogger file for both phases (epochs continue), its plot
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

from pseudolabel import distribute
from pseudolabel.callbacks import BACKUP_DIR, BEST_WEIGHTS, finish_backup, load_best, resume_epoch
from pseudolabel.lifecycle import TrainingRun, task_subset
from pseudolabel.rundir import atomic_write_json, read_json
from pseudolabel.training import (
    build_model,
    class_weights,
    compile_classifier,
    freeze_batchnorm,
    keras_verbose,
    one_hot,
    save_weights,
)

HEAD_WEIGHTS = "head.best.weights.h5"
PHASE1_WEIGHTS = "phase1.weights.h5"
PHASE1_JSON = "phase1.json"
PHASE2_JSON = "phase2.json"


def train_teacher(recipe, task, run_dir, *, restart: bool = False, verbose="auto", strategy=None,
                  callbacks=()) -> dict:
    """Train (or resume, or just report) the supervised teacher of `recipe` (a
    `config.TeacherRecipe`) on `task`; returns the metrics. See `TeacherRun` and `lifecycle`."""
    return TeacherRun(recipe, task, run_dir, restart=restart, verbose=verbose, strategy=strategy,
                      callbacks=callbacks).run()


class TeacherRun(TrainingRun):
    kind = "teacher"

    def build(self):
        return build_model(self.config, len(self.task.class_map.names), self.strategy)

    def fit(self, model) -> dict:
        # The phases train with the global batch and scaled rates; config.json keeps the recipe as written.
        scaled = self.config.train.model_copy(update=distribute.scaled_train_config(
            self.config.train.model_dump(), self.strategy, ("phase1_lr", "phase2_lr")))
        phase1 = self.phase1_once(model, scaled)
        phase2 = (self.phase2_once(model, scaled, start_epoch=phase1["epochs"], phase1_best=phase1.get(f"best_{scaled.select}"))
                  if scaled.phase2_epochs else None)
        load_best(model, self.path, BEST_WEIGHTS)
        return {
            "epochs": {"phase1": phase1["epochs"], "phase2": (phase2 or {}).get("last_epoch", 0)},
            "phase1": phase1,
            "phase2": phase2,
            "distribute": distribute.describe_training(self.strategy, scaled.model_dump(), model),
            "timings": {"features_s": phase1["features_s"], "phase1_fit_s": phase1["fit_s"],
                        "phase2_fit_s": (phase2 or {}).get("fit_s", 0.0)},
        }

    def cleanup(self) -> None:
        finish_backup(self.path)

    # ------------------------------------------------------------------ phase 1: the head on features

    def phase1_once(self, model, train) -> dict:
        """Phase 1, or its record when a previous session completed it (then the model gets its weights)."""
        if self.file(PHASE1_JSON).exists() and self.file(PHASE1_WEIGHTS).exists():
            model.load_weights(self.file(PHASE1_WEIGHTS))
            summary = read_json(self.file(PHASE1_JSON))
            print(f"phase 1: done earlier ({summary['epochs']} epochs)")
            return summary
        from pseudolabel.backbones import freeze_backbone

        freeze_backbone(model)
        summary = self.run_phase1(model, train)
        save_weights(model, self.file(PHASE1_WEIGHTS))
        shutil.copyfile(self.file(PHASE1_WEIGHTS), self.file(f".{BEST_WEIGHTS}.tmp"))
        os.replace(self.file(f".{BEST_WEIGHTS}.tmp"), self.file(BEST_WEIGHTS))   # phase 2 must beat this
        atomic_write_json(self.file(PHASE1_JSON), summary)                       # the "phase 1 done" record
        return summary

    def feature_key(self, backbone) -> dict:
        from pseudolabel.features import weights_fingerprint

        t = self.config.train
        key = {"backbone": self.config.model.backbone, "image_size": self.image_size,
               "weights": weights_fingerprint(backbone), "feature_views": t.feature_views,
               "split_hash": self.task.split.hash}
        if t.feature_views > 1:   # only augmented views depend on the policy and the seed
            key.update(augment=t.augment, seed=t.seed)
        return key

    def run_phase1(self, model, train) -> dict:
        """Fit the head on cached backbone features; leaves the best head in `model`. Returns a summary."""
        from pseudolabel.features import FEATURES_NPZ, cached_features, compute_features
        from pseudolabel.pipeline import array_dataset

        started = time.perf_counter()
        backbone, head = model.get_layer("backbone"), model.get_layer("head")
        features, reused = cached_features(self.file(FEATURES_NPZ), self.feature_key(backbone), lambda: compute_features(
            backbone, self.task, image_size=self.image_size, batch_size=train.batch_size, views=train.feature_views,
            augment=train.augment, seed=train.seed, verbose=self.verbose))
        features_s = time.perf_counter() - started
        num_classes = len(self.task.class_map.names)
        train_xy = features["train_x"], one_hot(features["train_y"], num_classes)
        val_xy = features["val_x"], one_hot(features["val_y"], num_classes)

        compile_classifier(head, train.phase1_lr, auc=True)
        fit_started = time.perf_counter()
        start = self.initialise_head(head, features, val_xy) if train.head_init == "probe" else {}
        callbacks = self.callbacks(patience=train.phase1_patience, backup=False, start_epoch=0, checkpoint=HEAD_WEIGHTS,
                                   monitor=train.select, initial_best=start.get(train.select))
        history = head.fit(
            array_dataset(train_xy, batch_size=train.batch_size, shuffle=True, seed=train.seed),
            validation_data=array_dataset(val_xy, batch_size=train.batch_size), epochs=train.phase1_epochs,
            shuffle=False,  # the dataset shuffles, with the run's seed
            class_weight=class_weights(features["train_y"], num_classes, train.class_weight),
            callbacks=callbacks, verbose=keras_verbose(self.verbose),
        )
        load_best(head, self.path, HEAD_WEIGHTS)
        return {
            **best_epoch(history.history, start, train.select),
            "head_init": start.get("probe", "random"),
            "n_train_features": int(len(features["train_x"])),
            "features_reused": reused,
            "features_s": round(features_s, 2),
            "fit_s": round(time.perf_counter() - fit_started, 2),
        }

    def initialise_head(self, head, features, val_xy) -> dict:
        """The head as the linear probe fitted on the cached train features (C by CV on train):
        saved as the phase-1 checkpoint to beat, its val scores returned as `val_loss`/`val_auc`."""
        from pseudolabel.pipeline import array_dataset
        from pseudolabel.probe import cv_folds, fit_probe, probe_summary, set_head_from_probe

        counts = np.bincount(features["train_y"])
        if counts.min() < 2:
            raise ValueError(f"{self.path.name}: head_init = 'probe' needs >= 2 train images of every class")
        folds = cv_folds(counts)
        classifier = fit_probe(features["train_x"], features["train_y"], cv=folds, seed=self.config.train.seed)
        set_head_from_probe(head, classifier)
        freeze_batchnorm(head)   # its statistics are the probe's scaler
        compile_classifier(head, self.config.train.phase1_lr, auc=True)
        scores = head.evaluate(array_dataset(val_xy, batch_size=self.config.train.batch_size), verbose=0,
                               return_dict=True)
        save_weights(head, self.file(HEAD_WEIGHTS))
        return {"val_loss": float(scores["loss"]), "val_auc": float(scores["auc"]),
                "probe": probe_summary(classifier[-1], folds)}

    # ------------------------------------------------------------------ phase 2: fine-tune the top blocks

    def phase2_once(self, model, train, *, start_epoch: int, phase1_best: float | None) -> dict:
        if self.file(PHASE2_JSON).exists():
            summary = read_json(self.file(PHASE2_JSON))
            print(f"phase 2: done earlier (until epoch {summary['last_epoch']})")
            return summary
        summary = self.run_phase2(model, train, start_epoch=start_epoch, phase1_best=phase1_best)
        atomic_write_json(self.file(PHASE2_JSON), summary)
        finish_backup(self.path)
        return summary

    def training_datasets(self, train):
        from pseudolabel.augment import get_augment
        from pseudolabel.pipeline import make_dataset

        num_classes = len(self.task.class_map.names)
        train_paths, train_y = task_subset(self.task, "train")
        val_paths, val_y = task_subset(self.task, "val")
        augment = None if train.augment == "none" else get_augment(
            train.augment, self.image_size, magnitude=train.augment_magnitude, seed=train.seed)
        common = dict(image_size=self.image_size, batch_size=train.batch_size, cache="memory", repeat=False,
                      num_classes=num_classes)
        train_ds = make_dataset(train_paths, train_y, shuffle=True, seed=train.seed, augment=augment, **common)
        val_ds = make_dataset(val_paths, val_y, shuffle=False, augment=None, **common)
        return train_ds, val_ds, train_y

    def run_phase2(self, model, train, *, start_epoch: int, phase1_best: float | None) -> dict:
        """Fine-tune the top blocks (BatchNorm frozen) from the phase-1 model; resumes from backup/."""
        from pseudolabel.backbones import unfreeze_top_blocks

        unfrozen = unfreeze_top_blocks(model, train.unfreeze_blocks)
        freeze_batchnorm(model.get_layer("head"))
        compile_classifier(model, train.phase2_lr, auc=True)
        train_ds, val_ds, train_y = self.training_datasets(train)
        resumed_at = resume_epoch(self.path)
        if resumed_at is not None:
            print(f"phase 2: resuming from the backup at epoch {resumed_at + 1} ({self.file(BACKUP_DIR)})")
        # The phase-1 model counts as a candidate: phase 2 must beat it, by `phase2_margin` (its
        # epochs are in history.csv, the probe's starting head is not).
        callbacks = self.callbacks(patience=train.phase2_patience, backup=True, start_epoch=start_epoch,
                                   monitor=train.select, initial_best=phase2_bar(phase1_best, train))
        started = time.perf_counter()
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=start_epoch + train.phase2_epochs, initial_epoch=start_epoch,
            class_weight=class_weights(train_y, len(self.task.class_map.names), train.class_weight),
            callbacks=callbacks, verbose=keras_verbose(self.verbose), shuffle=False,   # the dataset shuffles itself
        )
        return {
            "unfrozen_blocks": unfrozen,
            "epochs_this_session": len(history.epoch),
            "last_epoch": int(history.epoch[-1]) + 1 if history.epoch else resumed_at,
            "resumed_at_epoch": resumed_at,
            "fit_s": round(time.perf_counter() - started, 2),
        }


def phase2_bar(phase1_best: float | None, train) -> float | None:
    """The value of `train.select` a phase-2 epoch must beat: phase 1's best moved by the margin
    (up for val_auc, down for val_loss)."""
    if phase1_best is None:
        return None
    return phase1_best - train.phase2_margin if train.select == "val_loss" else phase1_best + train.phase2_margin


def best_epoch(history: dict, start: dict, select: str) -> dict:
    """Phase 1's best epoch by `select` (0: the starting head, when it was evaluated and never
    beaten) and its val_loss / val_auc."""
    values = list(history.get(select, []))
    candidates = ([start[select]] if select in start else []) + values
    if not candidates:
        return {"epochs": len(values), "best_epoch": None, "best_val_loss": None}
    pick = int(np.nanargmin(candidates) if select == "val_loss" else np.nanargmax(candidates))
    offset = 1 if select in start else 0
    epoch = pick - offset + 1          # 0 = the starting head
    row = start if epoch == 0 else {k: history[k][epoch - 1] for k in ("val_loss", "val_auc") if k in history}
    return {"epochs": len(values), "best_epoch": epoch, "best_val_loss": _float(row.get("val_loss")),
            "best_val_auc": _float(row.get("val_auc"))}


def _float(value):
    return None if value is None else float(value)
