"""Noisy Student training: labeled and pseudo-labeled batches side by side, with noise.

As in the official code (google-research/noisystudent) and docs/ARCHITECTURE.md:
- The student is equal-or-larger and starts from ImageNet weights (recipe `model.weights`), never
  from the teacher. The teacher is not in the graph at all: its labels were computed beforehand
  (`pseudolabels.label_pools`), so the student's loss cannot update it.
- Each step takes a labeled batch of b images and a pseudo-labeled batch of round(ratio * b)
  images; loss = CE(labeled, class-weighted) + unlabeled_weight * CE(pseudo-labeled, soft targets),
  each a mean over its batch. `train.unlabeled_weight = "ratio"` (default) sets the weight to the
  ratio, as the official code does: then every image, labeled or pseudo-labeled, weighs the same.
  Both batches go through the student in ONE forward pass (concatenated), as the official code
  does, so batch-norm layers that train see both; with `unlabeled_weight = 0` the pseudo-labeled
  images are left out of the pass entirely (the student then trains on labeled data alone).
- Noise: RandAugment-style augmentation (`[noise]`) on BOTH labeled and pseudo-labeled images,
  head dropout and stochastic depth (`[model] dropout`, `drop_connect_rate`).
- The whole backbone trains. `train.freeze_bn = true` (default) keeps the backbone's
  BatchNormalization layers in inference mode with their ImageNet statistics -- usual for
  small-data transfer, where batch statistics of a few images are noisy; the head's own BN
  (freshly initialised) always trains.

One epoch covers the larger of the two sets once (steps = max(ceil(n_l / b), ceil(n_u / b_u)));
the smaller one repeats. Decoded images are cached (labeled: in memory; pseudo-labeled: in memory
when the decoded pool fits `train.pseudo_cache_mb`, else in a cache file inside the run directory)
before augmentation, so augmentation differs every epoch while decoding happens once.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pseudolabel.config import PSEUDO_DEFAULTS
from pseudolabel.distribute import replica_share
from pseudolabel.pseudolabels import (
    PseudoLabelError,
    describe_selection,
    file_sha256,
    read_pseudo_labels,
    select_pseudo_labels,
)
from pseudolabel.rundir import atomic_path, atomic_write_json, read_json

SELECTION_REPORT = "pseudo_labels_report.json"
SELECTED_TABLE = "pseudo_labels_selected.csv"


@keras.saving.register_keras_serializable(package="pseudolabel")
class NoisyStudent(keras.Model):
    """Trains `student` on `((x_l, y_l), (x_u, y_u))` batches; evaluates on `(x, y)` batches.

    `y_l` are one-hot (or smoothed) labels, `y_u` soft pseudo-label targets, both `[B, K]`.
    `class_weight` (`[K]`, optional) weights each labeled image by its class: per-sample weight
    `sum_k y_k w_k`. The labeled element may also carry explicit sample weights `(x_l, y_l, w_l)`.
    Losses are means over the batch (Keras' sum_over_batch_size; over the global batch under a
    tf.distribute strategy). Save `.student`, not this wrapper.
    """

    def __init__(self, student: keras.Model, *, unlabeled_weight: float = 1.0, class_weight=None, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.unlabeled_weight = float(unlabeled_weight)
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self._class_weight = None if class_weight is None else tf.constant(self.class_weight, tf.float32)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.labeled_loss_tracker = keras.metrics.Mean(name="labeled_loss")
        self.unlabeled_loss_tracker = keras.metrics.Mean(name="unlabeled_loss")
        self.accuracy_tracker = keras.metrics.CategoricalAccuracy(name="accuracy")
        self.built = student.built  # its weights are the student's, which already exist

    @property
    def metrics(self):
        # Listed so Keras resets them at every epoch and before every evaluation.
        return [self.loss_tracker, self.labeled_loss_tracker, self.unlabeled_loss_tracker, self.accuracy_tracker]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _labeled_weights(self, y_l, w_l):
        if w_l is None and self._class_weight is None:
            return None
        w = tf.ones_like(y_l[:, 0]) if w_l is None else tf.cast(w_l, tf.float32)
        if self._class_weight is not None:
            w = w * tf.reduce_sum(tf.cast(y_l, tf.float32) * self._class_weight, axis=-1)
        return w

    def train_step(self, data):
        (x_l, y_l, w_l), (x_u, y_u) = _unpack_train_batch(data)
        y_l, y_u = tf.cast(y_l, tf.float32), tf.cast(y_u, tf.float32)
        use_unlabeled = self.unlabeled_weight != 0.0  # a Python constant: decided when tracing
        n_l = tf.shape(x_l)[0]
        with tf.GradientTape() as tape:
            x = tf.concat([x_l, x_u], axis=0) if use_unlabeled else x_l
            probs = self.student(x, training=True)
            labeled_loss = _cross_entropy(y_l, probs[:n_l], self._labeled_weights(y_l, w_l))
            if use_unlabeled:
                unlabeled_loss = _cross_entropy(y_u, probs[n_l:])
                loss = labeled_loss + self.unlabeled_weight * unlabeled_loss
            else:
                unlabeled_loss = tf.constant(0.0)
                loss = labeled_loss
            if self.student.losses:  # weight regularisers, if a backbone has any
                loss = loss + tf.add_n(self.student.losses)
            # Under a tf.distribute strategy this step runs per replica on its share of the global
            # batch and the optimizer SUMS the replicas' gradients: `replica_share` (loss / replicas)
            # makes the update that of the global-batch mean. `scale_loss`: the LossScaleOptimizer's
            # factor under mixed_float16 (its `apply` divides it out again).
            scaled_loss = self.optimizer.scale_loss(replica_share(loss))
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        self.loss_tracker.update_state(loss)
        self.labeled_loss_tracker.update_state(labeled_loss)
        self.unlabeled_loss_tracker.update_state(unlabeled_loss)
        self.accuracy_tracker.update_state(y_l, probs[:n_l])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        # Validation: labeled images only, unweighted CE (as Keras' fit(class_weight=...) does).
        x, y = data[0], tf.cast(data[1], tf.float32)
        probs = self.student(x, training=False)
        loss = _cross_entropy(y, probs)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(y, probs)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.student(x, training=False)

    def get_config(self):
        return {
            "student": keras.saving.serialize_keras_object(self.student),
            "unlabeled_weight": self.unlabeled_weight,
            "class_weight": self.class_weight,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        return cls(student, **config)


def _unpack_train_batch(data):
    """((x_l, y_l[, w_l]), (x_u, y_u)) -> ((x_l, y_l, w_l or None), (x_u, y_u))."""
    labeled, unlabeled = data
    x_l, y_l, *rest = labeled
    x_u, y_u = unlabeled[0], unlabeled[1]
    return (x_l, y_l, rest[0] if rest else None), (x_u, y_u)


def _cross_entropy(y_true, probs, sample_weight=None):
    """Mean categorical cross-entropy of probabilities (soft targets allowed)."""
    per_sample = keras.losses.categorical_crossentropy(tf.cast(y_true, probs.dtype), probs)
    if sample_weight is not None:
        per_sample = per_sample * tf.cast(sample_weight, per_sample.dtype)
    return tf.reduce_mean(per_sample)


# =========================================================================== training


def train_student(recipe: dict, task, pseudo_table_path, run_dir, *, pseudo_cfg: dict | None = None,
                  resume: bool = True, verbose="auto", strategy=None) -> dict:
    """Train (or resume, or just report) a Noisy Student from `recipe` on `task` + a pseudo-label table.

    `recipe` from `config.load_recipe(path, "student")`; `pseudo_cfg` the experiment's `[pseudo]`
    table (selection settings; `config.PSEUDO_DEFAULTS` fill what is missing). Returns the metrics
    (also in run_dir/metrics.json, written last). Run directory: config.json, provenance.json,
    pseudo_labels_report.json (counts per class and pool before/after filtering),
    pseudo_labels_selected.csv, history.csv, best.weights.h5, backup/ (while training),
    model.keras (the plain student), test/val predictions, metrics.json.
    `strategy`: a `tf.distribute.Strategy` or a name for `distribute.get_strategy` (None: "auto");
    `train.batch_size` is per replica (both batches scale with the replicas) and `train.lr` is
    scaled (`distribute.scaled_train_config`). A non-chief worker writes into `run_dir/worker-<i>`.
    """
    from pseudolabel import distribute, training

    started = time.perf_counter()
    strategy = distribute.resolve_strategy(strategy)
    run_dir = distribute.worker_dir(run_dir, strategy)
    if resume and (run_dir / training.METRICS_JSON).exists():
        metrics = read_json(run_dir / training.METRICS_JSON)
        print(f"student: finished earlier\n{training.format_summary(metrics, run_dir)}")
        return metrics
    pseudo_cfg = {**PSEUDO_DEFAULTS, **(pseudo_cfg or {})}
    t = recipe["train"]
    keras.utils.set_random_seed(int(t["seed"]))
    class_names = [str(c) for c in task.class_map.names]

    table_path = Path(pseudo_table_path)
    pseudo_paths, pseudo_targets, report = _select(table_path, class_names, pseudo_cfg, seed=int(t["seed"]))
    student = training.build_model(recipe, len(class_names), strategy)
    image_size = int(student.input_shape[1])
    _set_trainable(student, freeze_bn=bool(t["freeze_bn"]), unfreeze_blocks=t["unfreeze_blocks"])
    plan = batch_plan(len(task.split.subset("train")[0]), len(pseudo_paths), int(t["batch_size"]),
                      float(t["unlabeled_ratio"]), replicas=distribute.num_replicas(strategy))
    scaled = distribute.scaled_train_config(t, strategy, ("lr",))
    cache = pseudo_cache(len(pseudo_paths), image_size, float(t["pseudo_cache_mb"]), run_dir)

    weight_u = unlabeled_weight(t)
    config = {**recipe, "pseudo": pseudo_cfg, "unlabeled_weight_resolved": weight_u, "pseudo_labels": {
        "table": str(table_path.resolve()), "table_sha256": file_sha256(table_path),
        "selected": report["selected"], "per_pool": report["selected"]["per_pool"],
    }, "batches": plan, "pseudo_cache": str(cache)}
    run = training.open_run(config, task, run_dir, resume)
    atomic_write_json(run.file(SELECTION_REPORT), report)
    _write_selected(run.file(SELECTED_TABLE), pseudo_paths, pseudo_targets, class_names)
    print(describe_selection(report))

    train_ds, val_ds, train_y = _datasets(recipe, task, pseudo_paths, pseudo_targets, image_size, plan, cache)
    weights = training.class_weights(train_y, len(class_names), t["class_weight"])
    with distribute.building(strategy, t["mixed_precision"]):  # its trackers and optimizer: in the scope
        model = NoisyStudent(student, unlabeled_weight=weight_u,
                             class_weight=None if weights is None else [weights[k] for k in range(len(class_names))])
        model.compile(optimizer=keras.optimizers.Adam(float(scaled["lr"])))
    resumed_at = training.resume_epoch(run.path)
    if resumed_at is not None:
        print(f"student: resuming from the backup at epoch {resumed_at + 1} ({run.file(training.BACKUP_DIR)})")
    callbacks = training.standard_callbacks(run.path, monitor="val_loss", patience=int(t["patience"]), backup=True)
    fit_started = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=int(t["epochs"]),
                        steps_per_epoch=plan["steps_per_epoch"], callbacks=callbacks,
                        verbose=training.keras_verbose(verbose),
                        shuffle=False)  # the datasets shuffle themselves
    fit_s = time.perf_counter() - fit_started
    training.load_best(model, run.path)
    training.save_model(student, run.file(training.MODEL_FILE))  # the plain functional student

    extra = {
        "kind": "student",
        "backbone": recipe["model"]["backbone"],
        "image_size": image_size,
        "n_images": {**task.split.sizes(), "pseudo_labeled": len(pseudo_paths),
                     "pseudo_unique": report["selected"]["unique_images"]},
        "pseudo_labels": config["pseudo_labels"],
        "batches": plan,
        "unlabeled_weight": weight_u,
        "distribute": distribute.describe_training(strategy, scaled, student),
        "epochs": int(history.epoch[-1]) + 1 if history.epoch else resumed_at,
        "resumed_at_epoch": resumed_at,
        "split_hash": task.split.hash,
    }
    eval_started = time.perf_counter()
    metrics = training.evaluate_and_save(student, task, run.path, image_size=image_size,
                                         batch_size=int(t["batch_size"]), tta=t["tta"], extra_metrics=extra)
    metrics["timings"] = {"fit_s": round(fit_s, 2), "evaluate_s": round(time.perf_counter() - eval_started, 2),
                          "total_this_session_s": round(time.perf_counter() - started, 2)}
    atomic_write_json(run.file(training.METRICS_JSON), metrics)
    training.finish_backup(run.path)
    _remove_file_cache(cache)
    print(training.format_summary(metrics, run.path, time.perf_counter() - started))
    return metrics


def _select(table_path: Path, class_names: list[str], cfg: dict, *, seed: int):
    table = read_pseudo_labels(table_path)
    if table.class_names != class_names:
        raise PseudoLabelError(f"{table_path}: table classes {table.class_names} differ from the task's {class_names}")
    paths, targets, report = select_pseudo_labels(
        table, mode=cfg["mode"], temperature=float(cfg["temperature"]), label_smoothing=float(cfg["label_smoothing"]),
        threshold=float(cfg["threshold"]), balance=bool(cfg["balance"]), per_class=int(cfg["per_class"]), seed=seed)
    if not paths:
        raise PseudoLabelError(f"{table_path}: no pseudo-label has confidence >= {cfg['threshold']} "
                               f"({len(table)} rows); lower the threshold")
    return paths, targets, report


def _set_trainable(student, *, freeze_bn: bool, unfreeze_blocks: int | str = "all") -> None:
    """Whole student trainable (or its top `unfreeze_blocks` blocks + head); with `freeze_bn`, or
    when only some blocks train, the backbone's BN layers stay in inference mode."""
    from pseudolabel.backbones import block_names, nested_layers, unfreeze_top_blocks
    from pseudolabel.config import ConfigError

    n_blocks = len(block_names(student.get_layer("backbone")))
    if unfreeze_blocks == "all":
        n = n_blocks
    elif isinstance(unfreeze_blocks, int) and not isinstance(unfreeze_blocks, bool) and unfreeze_blocks >= 1:
        n = min(unfreeze_blocks, n_blocks)
    else:
        raise ConfigError(f"train.unfreeze_blocks must be \"all\" or a whole number >= 1, got {unfreeze_blocks!r}")
    if freeze_bn or n < n_blocks:
        # Unfreezing every block = whole backbone (stem included), BN frozen, head trainable.
        unfreeze_top_blocks(student, n)
    else:
        # Layer by layer: in Keras 3 a parent's `trainable = True` leaves children frozen earlier.
        for layer in nested_layers(student):
            layer.trainable = True


def unlabeled_weight(train_cfg: dict) -> float:
    """`train.unlabeled_weight`; "ratio" means `unlabeled_ratio`, as in the official loss
    (labeled mean + ratio * pseudo-labeled mean: every image, labeled or not, weighs the same)."""
    from pseudolabel.config import ConfigError

    weight = train_cfg["unlabeled_weight"]
    if weight == "ratio":
        return float(train_cfg["unlabeled_ratio"])
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"train.unlabeled_weight must be a number >= 0 or \"ratio\", got {weight!r}")
    return float(weight)


def batch_plan(n_labeled: int, n_pseudo: int, batch_size: int, ratio: float, replicas: int = 1) -> dict:
    """Labeled batch b, pseudo-labeled batch round(ratio * b) (>= 1), and steps so that one epoch
    covers the larger of the two sets once. `batch_size` is per replica: the batches returned are
    global (x `replicas`), so every replica gets b and round(ratio * b) images of each step."""
    if batch_size < 1 or ratio <= 0:
        raise ValueError(f"batch_size must be >= 1 and unlabeled_ratio > 0, got {batch_size}, {ratio}")
    if n_labeled < 1 or n_pseudo < 1:
        raise ValueError(f"need labeled and pseudo-labeled images, got {n_labeled} and {n_pseudo}")
    labeled, unlabeled = batch_size * replicas, max(1, round(ratio * batch_size)) * replicas
    steps = max(math.ceil(n_labeled / labeled), math.ceil(n_pseudo / unlabeled))
    return {"labeled_batch": int(labeled), "unlabeled_batch": int(unlabeled), "steps_per_epoch": int(steps),
            "n_labeled": int(n_labeled), "n_pseudo": int(n_pseudo), "replicas": int(replicas)}


def pseudo_cache(n_rows: int, image_size: int, budget_mb: float, run_dir: Path) -> str | Path:
    """"memory" when the decoded pseudo-labeled images (uint8) fit `budget_mb`, else a file cache
    in the run directory (decoded once, memory-mapped, removed when the run finishes)."""
    needed_mb = n_rows * image_size * image_size * 3 / 2**20
    return "memory" if needed_mb <= budget_mb else Path(run_dir) / "cache" / "pseudo"


def _remove_file_cache(cache) -> None:
    if cache != "memory":
        shutil.rmtree(Path(cache).parent, ignore_errors=True)


def noise_augment(recipe: dict, image_size: int, seed: int):
    """The student's input noise (`[noise]`): an augment.Augmenter, or None for "none"."""
    from pseudolabel.augment import get_augment

    noise = recipe["noise"]
    name = noise["augment"]
    if name in (None, "none"):
        return None
    options = {"num_ops": int(noise["randaugment_ops"])} if name == "randaugment" else {}
    return get_augment(name, image_size, magnitude=float(noise["randaugment_magnitude"]), seed=seed, **options)


def _datasets(recipe, task, pseudo_paths, pseudo_targets, image_size: int, plan: dict, cache):
    """(zipped train dataset, validation dataset, labeled train class indices)."""
    from pseudolabel.pipeline import make_dataset

    t = recipe["train"]
    seed, num_classes = int(t["seed"]), len(task.class_map.names)
    train_paths, train_y = task.split.subset("train")
    val_paths, val_y = task.split.subset("val")
    if len(val_paths) == 0:
        raise ValueError("the split has no validation images; the student stops early on val_loss")
    # Different seeds: the two streams must not draw the same shuffles and augmentations in lockstep.
    labeled = make_dataset(train_paths, train_y, image_size=image_size, batch_size=plan["labeled_batch"],
                           shuffle=True, seed=seed, augment=noise_augment(recipe, image_size, seed), cache="memory",
                           repeat=True, drop_remainder=True, num_classes=num_classes)
    pseudo = make_dataset(pseudo_paths, pseudo_targets, image_size=image_size, batch_size=plan["unlabeled_batch"],
                          shuffle=True, seed=seed + 1, augment=noise_augment(recipe, image_size, seed + 1),
                          cache=cache if cache == "memory" else str(cache), repeat=True, drop_remainder=True,
                          num_classes=num_classes, on_error="skip")
    val = make_dataset(val_paths, val_y, image_size=image_size, batch_size=plan["labeled_batch"], shuffle=False,
                       augment=None, cache="memory", repeat=False, num_classes=num_classes)
    return tf.data.Dataset.zip((labeled, pseudo)), val, np.asarray(train_y)


def _write_selected(path: Path, paths: list[str], targets: np.ndarray, class_names: list[str]) -> None:
    """The pseudo-labeled rows the student trains on (duplicates included): image,t_<class>..."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *(f"t_{c}" for c in class_names)])
        for image, row in zip(paths, targets):
            writer.writerow([image, *(f"{float(v):.9g}" for v in row)])
