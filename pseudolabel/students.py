"""Noisy Student training: labeled and pseudo-labeled batches side by side, with noise.

    metrics = train_student(recipe, task, "pseudo_labels.csv", "runs/student", pseudo=experiment.pseudo)

As in the official code (google-research/noisystudent):
- The student is equal-or-larger and starts from ImageNet weights (recipe `model.weights`), never
  from the teacher, whose labels were computed beforehand (`pseudolabels.label_pools`). The train
  step (both batches in one pass, the loss, the class weights) is `noisy_student.NoisyStudent`.
- Noise: RandAugment-style augmentation (`[noise]`) on BOTH labeled and pseudo-labeled images,
  head dropout and stochastic depth (`[model] dropout`, `drop_connect_rate`).
- The whole backbone trains (or its top `train.unfreeze_blocks`). `train.freeze_bn = true`
  (default) keeps the backbone's BatchNormalization layers in inference mode with their ImageNet
  statistics -- usual for small-data transfer; the head's own BN always trains.

One epoch covers the larger of the two sets once (steps = max(ceil(n_l / b), ceil(n_u / b_u)));
the smaller one repeats. Decoded images are cached (labeled: in memory; pseudo-labeled: in memory
when the decoded pool fits `train.pseudo_cache_mb`, else in a cache file inside the run directory)
before augmentation, so augmentation differs every epoch while decoding happens once.

The run directory (besides what every run writes, `lifecycle`): pseudo_labels_report.json (counts
per class and pool before/after selection), pseudo_labels_selected.csv (the rows trained on),
best.weights.h5, backup/ (while training), cache/ (while training, for large pools).
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import tensorflow as tf

from pseudolabel import distribute
from pseudolabel.callbacks import BACKUP_DIR, finish_backup, load_best, resume_epoch
from pseudolabel.config import PseudoConfig
from pseudolabel.lifecycle import TrainingRun, task_subset
from pseudolabel.noisy_student import NoisyStudent
from pseudolabel.pseudolabels import (
    SELECTED_TABLE,
    SELECTION_REPORT,
    PseudoLabelError,
    labeled_prior,
    describe_selection,
    file_sha256,
    read_pseudo_labels,
    select_pseudo_labels,
)
from pseudolabel.rundir import atomic_path, atomic_write_json
from pseudolabel.training import build_model, class_weights, keras_verbose



def train_student(recipe, task, pseudo_table_path, run_dir, *, pseudo: PseudoConfig | None = None,
                  origin: dict | None = None, restart: bool = False, verbose="auto", strategy=None,
                  callbacks=()) -> dict:
    """Train (or resume, or just report) a Noisy Student from `recipe` (a `config.StudentRecipe`)
    on `task` + a pseudo-label table selected by `pseudo` (the experiment's `[pseudo]`; default
    settings when None). `origin` says where the table comes from, for the resume check (default:
    the table's sha256). Returns the metrics. `strategy`: `train.batch_size` is per replica (both
    batches scale with the replicas) and `train.lr` is scaled (`distribute.scaled_train_config`)."""
    return StudentRun(recipe, task, run_dir, table=pseudo_table_path, pseudo=pseudo, origin=origin,
                      restart=restart, verbose=verbose, strategy=strategy, callbacks=callbacks).run()


class StudentRun(TrainingRun):
    kind = "student"

    def __init__(self, recipe, task, run_dir, *, table=None, pseudo: PseudoConfig | None = None,
                 origin: dict | None = None, **options):
        super().__init__(recipe, task, run_dir, **options)
        self.table = Path(table) if table is not None else self.file("pseudo_labels.csv")
        self.pseudo = pseudo or PseudoConfig()
        self.origin = origin

    def resolved_config(self) -> dict:
        # What the pseudo-labels come from: for an experiment's round, the teacher's own config and
        # the pools (known before the pool is labeled); for a given table, its bytes.
        origin = self.origin if self.origin is not None else {"table_sha256": file_sha256(self.table)}
        return {**self.config.model_dump(mode="json"), "pseudo": self.pseudo.model_dump(mode="json"),
                "pseudo_labels": origin}

    def config_defaults(self) -> dict:
        return {**super().config_defaults(), "pseudo": PseudoConfig().model_dump(mode="json")}

    def build(self):
        return build_student(self.config, len(self.task.class_map.names), self.strategy)

    def prepare(self) -> None:
        class_names = [str(c) for c in self.task.class_map.names]
        prior = labeled_prior(task_subset(self.task, "train")[1], len(class_names))
        self.selection = select(self.table, class_names, self.pseudo, seed=self.seed, prior=prior)

    def fit(self, student) -> dict:
        t = self.config.train
        paths, targets, report = self.selection
        atomic_write_json(self.file(SELECTION_REPORT), report)
        write_selected(self.file(SELECTED_TABLE), paths, targets, [str(c) for c in self.task.class_map.names])
        print(describe_selection(report))
        setup = self.training_setup(student, paths, targets)
        epochs, resumed_at, timings = fit_resumable(self, setup)
        return {
            "n_images": {**self.task.split.sizes(), "pseudo_labeled": len(paths),
                         "pseudo_unique": report["selected"]["unique_images"]},
            "pseudo_labels": {"table": str(self.table.resolve()), "table_sha256": file_sha256(self.table),
                              "selected": report["selected"], "per_pool": report["selected"]["per_pool"]},
            "batches": setup.plan,
            "unlabeled_weight": t.resolved_unlabeled_weight,
            "pseudo_cache": str(self.cache),
            "distribute": distribute.describe_training(self.strategy, setup.scaled.model_dump(), student),
            "epochs": epochs,
            "resumed_at_epoch": resumed_at,
            "timings": timings,
        }

    def training_setup(self, student, pseudo_paths, pseudo_targets) -> SimpleNamespace:
        """Everything `fit` needs: the batch plan, the zipped datasets with the recipe's noise, and
        the compiled NoisyStudent around `student` (what benchmarks time, too)."""
        t = self.config.train
        num_classes = len(self.task.class_map.names)
        plan = batch_plan(len(task_subset(self.task, "train")[0]), len(pseudo_paths), t.batch_size, t.unlabeled_ratio,
                          replicas=distribute.num_replicas(self.strategy), steps=t.steps_per_epoch)
        scaled = t.model_copy(update=distribute.scaled_train_config(t.model_dump(), self.strategy, ("lr",)))
        self.cache = pseudo_cache(len(pseudo_paths), self.image_size, t.pseudo_cache_mb, self.path)
        train_ds, val_ds, train_y = self.datasets(pseudo_paths, pseudo_targets, plan)
        model = compiled_student(student, self.config, train_y, num_classes, scaled.lr, self.strategy,
                                 unlabeled_weight=t.resolved_unlabeled_weight)
        return SimpleNamespace(model=model, train_ds=train_ds, val_ds=val_ds, plan=plan, scaled=scaled)

    def cleanup(self) -> None:
        finish_backup(self.path)
        if getattr(self, "cache", "memory") != "memory":
            shutil.rmtree(Path(self.cache).parent, ignore_errors=True)

    def datasets(self, pseudo_paths, pseudo_targets, plan: dict):
        """(zipped train dataset, validation dataset, labeled train class indices)."""
        from pseudolabel.pipeline import make_dataset

        seed, num_classes, size = self.seed, len(self.task.class_map.names), self.image_size
        train_paths, train_y = task_subset(self.task, "train")
        val_paths, val_y = task_subset(self.task, "val")
        # Different seeds: the two streams must not draw the same shuffles and augmentations in lockstep.
        labeled = make_dataset(train_paths, train_y, image_size=size, batch_size=plan["labeled_batch"],
                               shuffle=True, seed=seed, augment=noise_augment(self.config, size, seed),
                               cache="memory", repeat=True, drop_remainder=True, num_classes=num_classes)
        cache = self.cache if self.cache == "memory" else str(self.cache)
        pseudo = make_dataset(pseudo_paths, pseudo_targets, image_size=size, batch_size=plan["unlabeled_batch"],
                              shuffle=True, seed=seed + 1, augment=noise_augment(self.config, size, seed + 1),
                              cache=cache, repeat=True, drop_remainder=True, num_classes=num_classes, on_error="skip")
        val = make_dataset(val_paths, val_y, image_size=size, batch_size=plan["labeled_batch"], shuffle=False,
                           augment=None, cache="memory", repeat=False, num_classes=num_classes)
        return tf.data.Dataset.zip((labeled, pseudo)), val, np.asarray(train_y)


class LabelsOnlyStudentRun(TrainingRun):
    """The control that answers "did the pool help, or the student's recipe?": a Noisy Student
    recipe trained on the labeled train split alone, with its model, noise, batch size, learning
    rate, epochs and early stopping, and as many steps per epoch as a student over the pools takes
    (`batch_plan` with the pools' image count in place of the pseudo-labels), so it differs from
    that student only by the pseudo-labels. It never reads a pool image nor a pseudo-label table:
    `pool_size` (set by `rounds` once the pools are prepared; 0: one pass over the labels) is a
    count. `pools`: the pool configs, recorded in its config so a changed pool list is a change."""

    kind = "labels_only_student"

    def __init__(self, recipe, task, run_dir, *, pools=(), **options):
        super().__init__(recipe, task, run_dir, **options)
        self.pools = [p if isinstance(p, dict) else p.model_dump(mode="json") for p in pools]
        self.pool_size = 0

    def resolved_config(self) -> dict:
        return {**self.config.model_dump(mode="json"), "labels_only": {"steps_as_over_pools": self.pools}}

    def build(self):
        return build_student(self.config, len(self.task.class_map.names), self.strategy)

    def fit(self, student) -> dict:
        from pseudolabel.pipeline import make_dataset

        t, num_classes, size = self.config.train, len(self.task.class_map.names), self.image_size
        train_paths, train_y = task_subset(self.task, "train")
        val_paths, val_y = task_subset(self.task, "val")
        plan = batch_plan(len(train_paths), max(self.pool_size, 1), t.batch_size, t.unlabeled_ratio,
                          replicas=distribute.num_replicas(self.strategy), steps=t.steps_per_epoch)
        plan.update(unlabeled_batch=0, n_pseudo=0, pool_images=int(self.pool_size))
        scaled = t.model_copy(update=distribute.scaled_train_config(t.model_dump(), self.strategy, ("lr",)))
        train_ds = make_dataset(train_paths, train_y, image_size=size, batch_size=plan["labeled_batch"], shuffle=True,
                                seed=self.seed, augment=noise_augment(self.config, size, self.seed), cache="memory",
                                repeat=True, drop_remainder=True, num_classes=num_classes)
        val_ds = make_dataset(val_paths, val_y, image_size=size, batch_size=plan["labeled_batch"], shuffle=False,
                              augment=None, cache="memory", repeat=False, num_classes=num_classes)
        model = compiled_student(student, self.config, train_y, num_classes, scaled.lr, self.strategy,
                                 unlabeled_weight=0.0)
        setup = SimpleNamespace(model=model, train_ds=train_ds, val_ds=val_ds, plan=plan, scaled=scaled)
        epochs, resumed_at, timings = fit_resumable(self, setup)
        return {"n_images": {**self.task.split.sizes(), "pseudo_labeled": 0}, "batches": plan,
                "unlabeled_weight": 0.0, "epochs": epochs, "resumed_at_epoch": resumed_at,
                "distribute": distribute.describe_training(self.strategy, scaled.model_dump(), student),
                "timings": timings}

    def cleanup(self) -> None:
        finish_backup(self.path)


# --------------------------------------------------------------------------- pieces


def build_student(recipe, num_classes: int, strategy):
    """The student classifier of `recipe`, its trainable parts set (`set_trainable`)."""
    model = build_model(recipe, num_classes, strategy)
    set_trainable(model, freeze_bn=recipe.train.freeze_bn, unfreeze_blocks=recipe.train.unfreeze_blocks)
    return model


def compiled_student(student, recipe, train_y, num_classes: int, lr: float, strategy, *, unlabeled_weight: float):
    """The compiled NoisyStudent around `student`, its labeled images class-weighted by the recipe."""
    weights = class_weights(train_y, num_classes, recipe.train.class_weight)
    with distribute.building(strategy, recipe.train.mixed_precision):  # its trackers and optimizer: in the scope
        model = NoisyStudent(student, unlabeled_weight=unlabeled_weight,
                             class_weight=None if weights is None else [weights[k] for k in range(num_classes)])
        model.compile(optimizer=keras.optimizers.Adam(lr))
    return model


def fit_resumable(run: TrainingRun, setup) -> tuple:
    """Fit `setup.model` for the recipe's epochs (resuming from the run's backup), the best epoch's
    weights loaded after; (epochs trained, epoch resumed at or None, {"fit_s": wall seconds,
    "fit_cpu_s": CPU seconds of all the process's threads, which a paused or crowded machine does
    not inflate})."""
    t = run.config.train
    resumed_at = resume_epoch(run.path)
    if resumed_at is not None:
        print(f"{run.kind}: resuming from the backup at epoch {resumed_at + 1} ({run.file(BACKUP_DIR)})")
    started, cpu_started = time.perf_counter(), time.process_time()
    history = setup.model.fit(setup.train_ds, validation_data=setup.val_ds, epochs=t.epochs,
                              steps_per_epoch=setup.plan["steps_per_epoch"],
                              callbacks=run.callbacks(monitor="val_loss", patience=t.patience, backup=True),
                              verbose=keras_verbose(run.verbose), shuffle=False)  # the datasets shuffle themselves
    timings = {"fit_s": round(time.perf_counter() - started, 2),
               "fit_cpu_s": round(time.process_time() - cpu_started, 2)}
    load_best(setup.model, run.path)   # into the wrapper, whose weights are the student's
    return (int(history.epoch[-1]) + 1 if history.epoch else resumed_at), resumed_at, timings


def select(table_path: Path, class_names: list[str], pseudo: PseudoConfig, *, seed: int, prior=None):
    """(paths, targets, report) of the pseudo-labels `pseudo` selects from the table; `prior`: the
    labeled train split's class shares (for `align` / `balance` "prior", and recorded)."""
    table = read_pseudo_labels(table_path)
    if table.class_names != class_names:
        raise PseudoLabelError(f"{table_path}: table classes {table.class_names} differ from the task's {class_names}")
    paths, targets, report = select_pseudo_labels(
        table, mode=pseudo.mode, temperature=pseudo.temperature, label_smoothing=pseudo.label_smoothing,
        threshold=pseudo.threshold, threshold_rule=pseudo.threshold_rule, keep_fraction=pseudo.keep_fraction,
        align=pseudo.align, balance=pseudo.balance, per_class=pseudo.per_class, seed=seed, prior=prior)
    if not paths:
        raise PseudoLabelError(f"{table_path}: no pseudo-label passes the threshold ({pseudo.threshold_rule} rule, "
                               f"thresholds {report['thresholds']}; {len(table)} rows); lower the threshold")
    return paths, targets, report


def set_trainable(student, *, freeze_bn: bool, unfreeze_blocks: int | str = "all") -> None:
    """Whole student trainable (or its top `unfreeze_blocks` blocks + head); with `freeze_bn`, or
    when only some blocks train, the backbone's BN layers stay in inference mode."""
    from pseudolabel.backbones import block_names, nested_layers, unfreeze_top_blocks

    n_blocks = len(block_names(student.get_layer("backbone")))
    n = n_blocks if unfreeze_blocks == "all" else min(int(unfreeze_blocks), n_blocks)
    if freeze_bn or n < n_blocks:
        # Unfreezing every block = whole backbone (stem included), BN frozen, head trainable.
        unfreeze_top_blocks(student, n)
    else:
        # Layer by layer: in Keras 3 a parent's `trainable = True` leaves children frozen earlier.
        for layer in nested_layers(student):
            layer.trainable = True


def batch_plan(n_labeled: int, n_pseudo: int, batch_size: int, ratio: float, replicas: int = 1,
               steps: int | None = None) -> dict:
    """Labeled batch b, pseudo-labeled batch round(ratio * b) (>= 1), and steps so that one epoch
    covers the larger of the two sets once (or `steps`, `train.steps_per_epoch`). `batch_size` is per
    replica: the batches returned are global (x `replicas`), so every replica gets b and
    round(ratio * b) images of each step."""
    if batch_size < 1 or ratio <= 0:
        raise ValueError(f"batch_size must be >= 1 and unlabeled_ratio > 0, got {batch_size}, {ratio}")
    if n_labeled < 1 or n_pseudo < 1:
        raise ValueError(f"need labeled and pseudo-labeled images, got {n_labeled} and {n_pseudo}")
    labeled, unlabeled = batch_size * replicas, max(1, round(ratio * batch_size)) * replicas
    steps = steps or max(math.ceil(n_labeled / labeled), math.ceil(n_pseudo / unlabeled))
    return {"labeled_batch": int(labeled), "unlabeled_batch": int(unlabeled), "steps_per_epoch": int(steps),
            "n_labeled": int(n_labeled), "n_pseudo": int(n_pseudo), "replicas": int(replicas)}


def pseudo_cache(n_rows: int, image_size: int, budget_mb: float, run_dir: Path) -> str | Path:
    """"memory" when the decoded pseudo-labeled images (uint8) fit `budget_mb`, else a file cache
    in the run directory (decoded once, memory-mapped, removed when the run finishes)."""
    needed_mb = n_rows * image_size * image_size * 3 / 2**20
    return "memory" if needed_mb <= budget_mb else Path(run_dir) / "cache" / "pseudo"


def noise_augment(recipe, image_size: int, seed: int):
    """The student's input noise (`[noise]`): an augment.Augmenter, or None for "none"."""
    from pseudolabel.augment import get_augment

    noise = recipe.noise
    if noise.augment == "none":
        return None
    options = {"num_ops": noise.randaugment_ops} if noise.augment == "randaugment" else {}
    return get_augment(noise.augment, image_size, magnitude=float(noise.randaugment_magnitude), seed=seed, **options)


def write_selected(path: Path, paths: list[str], targets: np.ndarray, class_names: list[str]) -> None:
    """The pseudo-labeled rows the student trains on (duplicates included): image,t_<class>..."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *(f"t_{c}" for c in class_names)])
        for image, row in zip(paths, targets):
            writer.writerow([image, *(f"{float(v):.9g}" for v in row)])
