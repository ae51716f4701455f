"""Online students: a classifier trained on the labeled train split and the unlabeled pools at once,
labeling the pools inside every step (`algorithms.online`: pseudo_label, fixmatch, flexmatch,
freematch). No teacher and no pseudo-label table.

    metrics = train_online_student(recipe, task, experiment.pools, "runs/fixmatch")

- The classifier starts from its recipe's weights (ImageNet), as every student does; `[train]`
  says what trains (`unfreeze_blocks`, `freeze_bn`), the learning rate, epochs and patience.
- Batches: b labeled images (`train.batch_size`, the weak view) and mu x b unlabeled ones
  (`[algorithm] mu`) as a weak and a strong view made inside the tf.data pipeline
  (`[algorithm] weak_augment` / `strong_augment`, the strong one at `[noise]`'s RandAugment ops
  and magnitude). One epoch covers the larger set once (`students.batch_plan`).
- Every epoch history.csv gets, besides the losses: `above_threshold` (the share of the epoch's
  unlabeled images whose pseudo-label passed), `above_threshold_<class>` (the share that passed
  as that class; they sum to the former), `threshold_<class>` (at the epoch's end), `lambda_u`
  (the epoch's mean unlabeled weight), `pseudo_labeled_images` (distinct pool images that passed),
  and with pool truth (`[[pools]] truth`) `pseudo_accuracy` (and per class) of those pseudo-labels
  against it, over `pseudo_with_truth` images. The truth stays in a callback: training never sees it.
- With `[algorithm] ema_decay` > 0, validation, the saved model and the evaluation use the EMA.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import tensorflow as tf

from pseudolabel import distribute
from pseudolabel.callbacks import BACKUP_DIR, finish_backup, load_best, resume_epoch
from pseudolabel.lifecycle import TrainingRun, task_subset
from pseudolabel.students import batch_plan, pseudo_cache, set_trainable
from pseudolabel.training import build_model, class_weights, keras_verbose

# Keyword options of each algorithm class beyond the shared ones, read from `[algorithm]`.
ALGORITHM_OPTIONS = {"flexmatch": ("threshold_warmup",), "freematch": ("threshold_momentum", "fairness_weight")}


def train_online_student(recipe, task, pools, run_dir, *, truth=None, restart: bool = False, verbose="auto",
                         strategy=None, callbacks=()) -> dict:
    """Train (or resume, or just report) the online student of `recipe` (its `algorithm` an online
    one) on `task`'s train split and the images of `pools` (`config.PoolConfig`s); `truth`
    ({image: class index}, `data.read_truth`) only measures the pseudo-labels. Returns the metrics."""
    return OnlineStudentRun(recipe, task, run_dir, pools=pools, truth=truth, restart=restart, verbose=verbose,
                            strategy=strategy, callbacks=callbacks).run()


class OnlineStudentRun(TrainingRun):
    kind = "online_student"

    def __init__(self, recipe, task, run_dir, *, pools=(), truth=None, **options):
        super().__init__(recipe, task, run_dir, **options)
        if not recipe.algorithm.online:
            raise ValueError(f"{recipe.path or 'the recipe'}: algorithm '{recipe.algorithm.name}' is not online")
        self.pools = list(pools)
        self.pool_paths: list[str] | None = None   # set by `rounds` (the pools it prepared), else prepare()
        self.truth = dict(truth or {})

    def resolved_config(self) -> dict:
        return {**self.config.model_dump(mode="json"), "pools": [p.model_dump(mode="json") for p in self.pools]}

    def config_defaults(self) -> dict:
        return {**super().config_defaults(), "pools": []}

    def describe(self, model) -> dict:
        return {**super().describe(model), "algorithm": self.config.algorithm.name}

    def prepare(self) -> None:
        if self.pool_paths is None:   # alone (not in an experiment's rounds): scan and filter the pools
            import tempfile

            from pseudolabel.data import prepare_pools

            with tempfile.TemporaryDirectory() as scratch:   # the report goes into the run directory once made
                self.prepared = prepare_pools([p.model_dump() for p in self.pools], self.task.labeled.paths, scratch)
            self.pool_paths = [image for pool in self.prepared for image in pool.images]

    def build(self):
        model = build_model(self.config, len(self.task.class_map.names), self.strategy)
        set_trainable(model, freeze_bn=self.config.train.freeze_bn, unfreeze_blocks=self.config.train.unfreeze_blocks)
        return model

    def fit(self, student) -> dict:
        t = self.config.train
        if getattr(self, "prepared", None):
            from pseudolabel.data import write_pool_report

            write_pool_report(self.prepared, self.path)   # pools.json / pools.csv: what was kept, and why not
        setup = self.training_setup(student)
        resumed_at = resume_epoch(self.path)
        if resumed_at is not None:
            print(f"{self.kind}: resuming from the backup at epoch {resumed_at + 1} ({self.file(BACKUP_DIR)})")
        statistics = OnlineStatistics(self.truth_labels(), len(self.task.class_map.names),
                                      [str(c) for c in self.task.class_map.names])
        started, cpu_started = time.perf_counter(), time.process_time()
        # The statistics come first: they add their columns to the logs before history.csv is written.
        history = setup.model.fit(setup.train_ds, validation_data=setup.val_ds, epochs=t.epochs,
                                  steps_per_epoch=setup.plan["steps_per_epoch"],
                                  callbacks=[statistics, *self.callbacks(monitor="val_loss", patience=t.patience,
                                                                         backup=True)],
                                  verbose=keras_verbose(self.verbose), shuffle=False)
        fit_s, fit_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        load_best(setup.model, self.path)   # into the wrapper: the student's weights, its EMA and thresholds
        ema = setup.model.use_ema_weights()
        last = {k: finite_or_none(v[-1]) for k, v in history.history.items() if v and not k.startswith("val_")}
        return {
            "algorithm": self.config.algorithm.model_dump(mode="json"),
            "n_images": {**self.task.split.sizes(), "unlabeled": len(self.pool_paths)},
            "batches": setup.plan,
            "ema_weights": ema,
            "thresholds": [float(v) for v in setup.model.thresholds().numpy()],
            "last_epoch": last,
            "distribute": distribute.describe_training(self.strategy, setup.scaled.model_dump(), student),
            "epochs": int(history.epoch[-1]) + 1 if history.epoch else resumed_at,
            "resumed_at_epoch": resumed_at,
            "timings": {"fit_s": round(fit_s, 2), "fit_cpu_s": round(fit_cpu_s, 2)},
        }

    def training_setup(self, student) -> SimpleNamespace:
        """The batch plan, the zipped labeled + unlabeled-views datasets and the compiled algorithm."""
        from pseudolabel.algorithms import get_algorithm

        a, t = self.config.algorithm, self.config.train
        names = [str(c) for c in self.task.class_map.names]
        plan = batch_plan(len(task_subset(self.task, "train")[0]), len(self.pool_paths), t.batch_size, a.mu,
                          replicas=distribute.num_replicas(self.strategy), steps=t.steps_per_epoch)
        scaled = t.model_copy(update=distribute.scaled_train_config(t.model_dump(), self.strategy, ("lr",)))
        self.cache = pseudo_cache(len(self.pool_paths), self.image_size, t.pseudo_cache_mb, self.path)
        algorithm = get_algorithm(a.name)
        train_ds, val_ds, train_y = self.datasets(plan, algorithm.num_views)
        weights = class_weights(train_y, len(names), t.class_weight)
        with distribute.building(self.strategy, t.mixed_precision):
            model = algorithm(student, num_classes=len(names), n_unlabeled=len(self.pool_paths), threshold=a.threshold,
                              temperature=a.temperature, lambda_u=a.lambda_u, warmup_steps=a.warmup_steps,
                              ema_decay=a.ema_decay, class_names=names,
                              class_weight=None if weights is None else [weights[k] for k in range(len(names))],
                              **{k: getattr(a, k) for k in ALGORITHM_OPTIONS.get(a.name, ())})
            # No XLA: the masks and FlexMatch's memory have data-dependent shapes.
            model.compile(optimizer=keras.optimizers.Adam(scaled.lr), jit_compile=False)
        return SimpleNamespace(model=model, train_ds=train_ds, val_ds=val_ds, plan=plan, scaled=scaled)

    def datasets(self, plan: dict, num_views: int):
        """(zipped train dataset, validation dataset, labeled train class indices)."""
        from pseudolabel.pipeline import make_dataset

        seed, num_classes, size = self.seed, len(self.task.class_map.names), self.image_size
        weak, strong = view_augments(self.config, size, seed)
        train_paths, train_y = task_subset(self.task, "train")
        val_paths, val_y = task_subset(self.task, "val")
        labeled = make_dataset(train_paths, train_y, image_size=size, batch_size=plan["labeled_batch"], shuffle=True,
                               seed=seed, augment=weak, cache="memory", repeat=True, drop_remainder=True,
                               num_classes=num_classes)
        cache = self.cache if self.cache == "memory" else str(self.cache)
        unlabeled = make_dataset(self.pool_paths, None, image_size=size, batch_size=plan["unlabeled_batch"],
                                 shuffle=True, seed=seed + 1, views=[weak, strong][:num_views], cache=cache,
                                 repeat=True, drop_remainder=True, on_error="skip", with_index=True)
        val = make_dataset(val_paths, val_y, image_size=size, batch_size=plan["labeled_batch"], shuffle=False,
                           cache="memory", num_classes=num_classes)
        return tf.data.Dataset.zip((labeled, unlabeled)), val, np.asarray(train_y)

    def truth_labels(self) -> np.ndarray | None:
        """The known class of each pool image (-1: unknown), for the statistics only; None without truth."""
        if not self.truth:
            return None
        from pseudolabel.data.truth import truth_key

        return np.array([self.truth.get(truth_key(p), -1) for p in self.pool_paths], np.int64)

    def cleanup(self) -> None:
        finish_backup(self.path)
        if getattr(self, "cache", "memory") != "memory":
            shutil.rmtree(Path(self.cache).parent, ignore_errors=True)


def view_augments(recipe, image_size: int, seed: int):
    """(weak, strong) augmenters of a recipe's `[algorithm]`; the strong one at `[noise]`'s RandAugment."""
    from pseudolabel.augment import get_augment

    a, noise = recipe.algorithm, recipe.noise
    options = {"num_ops": noise.randaugment_ops} if a.strong_augment in ("strong", "randaugment") else {}
    weak = get_augment(a.weak_augment, image_size, seed=seed)
    strong = get_augment(a.strong_augment, image_size, magnitude=float(noise.randaugment_magnitude), seed=seed + 1,
                         **options)
    return weak, strong


class OnlineStatistics(keras.callbacks.Callback):
    """Per epoch: how many distinct pool images passed the threshold and, with truth, how often their
    pseudo-label was right (overall and per pseudo-label class). Reads the wrapper's `epoch_labels`."""

    def __init__(self, truth: np.ndarray | None, num_classes: int, class_names):
        super().__init__()
        self.truth, self.num_classes = truth, num_classes
        from pseudolabel.algorithms.online import metric_name

        self.suffixes = [metric_name(c) for c in class_names]

    def on_epoch_begin(self, epoch, logs=None):
        variable = self.model.epoch_labels
        variable.assign(np.full(variable.shape, -1, np.int32))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        labels = np.asarray(self.model.epoch_labels.numpy())
        logs["pseudo_labeled_images"] = int((labels >= 0).sum())
        if self.truth is None:
            return
        known = (labels >= 0) & (self.truth >= 0)
        logs["pseudo_with_truth"] = int(known.sum())
        logs["pseudo_accuracy"] = accuracy(labels[known], self.truth[known])
        for k, suffix in enumerate(self.suffixes):
            of_class = known & (labels == k)
            logs[f"pseudo_accuracy_{suffix}"] = accuracy(labels[of_class], self.truth[of_class])


def finite_or_none(value) -> float | None:
    """A number for metrics.json: NaN (no image to measure) as null, which JSON can hold."""
    value = float(value)
    return value if np.isfinite(value) else None


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(predicted == truth)) if len(truth) else float("nan")
