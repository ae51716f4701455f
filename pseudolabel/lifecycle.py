"""One run directory's lifecycle, the same for every kind of model: teacher, probe, students, ...

    metrics = TeacherRun(recipe, task, "runs/teacher").run()   # trains, resumes, or only reports

`TrainingRun.run()`:
1. state: this run's resolved config and the task's split against what the directory recorded.
   Nothing there: start. The same and finished (metrics.json): report it, redo nothing. The same and
   unfinished: resume (each kind continues from its own checkpoints). Changed: refuse with one line
   naming what changed, unless `restart=True` (`--restart`), which starts that run over.
2. open: provenance.json (split hash, seed, versions, command) once, config.json, the seed.
3. the kind's own part, its hooks: `prepare()` its inputs (before the directory is made), `build()` the model, `fit(model)` it (returning what it wants
   recorded: epochs, timings...), `save(model)`, `predict(model, subset)`.
4. evaluation on val and test: test_predictions.csv, val_predictions.csv, curves.png, metrics.json,
   and LAST the manifest (sha256 and size of every artifact, `rundir.write_manifest`). A run counts
   as finished only while its manifest verifies: a damaged or missing artifact is named in one line
   and the run is done again.
While it works, a run holds its directory's lock (`rundir.RunLock`): a second process on the same
run is refused at once, naming the holder's pid; hidden temporary files a killed session left are
removed when the next one starts.

A kind adds its own config to `resolved_config()`; everything in it is checked on resume. Extra
Keras callbacks (`callbacks=`) reach every `fit` of the run through `callbacks()`: the hook for
cross-cutting concerns (logging, a test's kill switch) without touching a trainer.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.config import ConfigError
from pseudolabel.rundir import RunDir, atomic_write_json, read_json, verify_manifest

CONFIG_JSON = "config.json"
PROVENANCE_JSON = "provenance.json"
METRICS_JSON = "metrics.json"
MODEL_FILE = "model.keras"
HISTORY_CSV = "history.csv"
CURVES_PNG = "curves.png"
# Recorded for provenance, not compared on resume: a moved checkout is the same run.
NOT_COMPARED = ("path",)
# What the manifest of a finished run covers, when present (each kind may add its own: `artifacts`).
ARTIFACTS = (CONFIG_JSON, PROVENANCE_JSON, METRICS_JSON, MODEL_FILE, "test_predictions.csv",
             "val_predictions.csv", HISTORY_CSV, CURVES_PNG)
LOCK_FILE = ".lock"


class RunChangedError(ConfigError):
    """A run directory holds a run of another config or split; `restart=True` starts it over."""


class TrainingRun:
    """The lifecycle of one run directory; subclasses say what is their own (see the module doc)."""

    kind = "model"

    def __init__(self, config, task, run_dir, *, strategy=None, restart: bool = False, verbose="auto",
                 callbacks: Sequence = ()):
        from pseudolabel import distribute

        self.config = config
        self.task = task
        self.strategy = distribute.resolve_strategy(strategy)
        self.path = distribute.worker_dir(run_dir, self.strategy)   # a non-chief worker: its own copy
        self.restart = restart
        self.verbose = verbose
        self.extra_callbacks = list(callbacks)

    # ------------------------------------------------------------------ what each kind says

    @property
    def seed(self) -> int:
        return int(self.config.train.seed)

    @property
    def image_size(self) -> int:
        return int(self.config.model.image_size)

    @property
    def batch_size(self) -> int:
        return int(self.config.train.batch_size)

    @property
    def tta(self) -> str:
        return self.config.train.tta

    def resolved_config(self) -> dict:
        """Everything that makes this run what it is, as saved in config.json and checked on resume."""
        return self.config.model_dump(mode="json")

    def config_defaults(self) -> dict:
        """What a key that an older config.json lacks counts as (the schema's default)."""
        return type(self.config)().model_dump(mode="json")

    def prepare(self) -> None:
        """Read and check the kind's own inputs before the run directory is made, so bad input
        fails without leaving a half-made run."""

    def build(self):
        raise NotImplementedError

    def fit(self, model) -> dict:
        """Train `model` (resuming what an earlier session did); returns what metrics.json records
        of the training (e.g. "epochs", "timings"). Leaves the weights to evaluate in `model`."""
        raise NotImplementedError

    def save(self, model) -> None:
        from pseudolabel.training import save_model

        save_model(model, self.file(MODEL_FILE))

    def predict(self, model, subset: str) -> np.ndarray:
        """Class probabilities `[N, K]` of split subset `subset` (test-time augmentation `tta`)."""
        from pseudolabel.evaluation import predict
        from pseudolabel.features import plain_dataset

        paths, _ = task_subset(self.task, subset)
        dataset = plain_dataset(paths, image_size=self.image_size, batch_size=self.batch_size)
        return predict(model, dataset, tta=self.tta)

    def describe(self, model) -> dict:
        """What metrics.json says about the model besides its scores."""
        return {"kind": self.kind, "backbone": self.config.model.backbone, "image_size": self.image_size}

    def cleanup(self) -> None:
        """Remove what only an unfinished run needs (backups, caches), once the run is finished."""

    def artifacts(self) -> list[str]:
        """The files of a finished run its manifest covers (those of `ARTIFACTS` that exist)."""
        return [name for name in ARTIFACTS if self.file(name).exists()]

    def needs_validation(self) -> bool:
        return True

    # ------------------------------------------------------------------ the lifecycle

    def file(self, name: str) -> Path:
        return self.path / name

    def callbacks(self, **options) -> list:
        """`callbacks.standard_callbacks` in this run directory, plus the run's extra callbacks."""
        from pseudolabel.callbacks import standard_callbacks

        return standard_callbacks(self.path, **options) + self.extra_callbacks

    def status(self) -> str:
        """"new", "unfinished", "finished", "damaged" (finished once, an artifact no longer
        verifies) or "changed" (only with restart); raises RunChangedError when the directory holds
        a run of another config or split and restart is off."""
        if not (self.file(CONFIG_JSON).exists() or self.file(PROVENANCE_JSON).exists()):
            return "new"
        change = self.recorded_change()
        if change:
            if not self.restart:
                raise RunChangedError(f"{self.path}: {change}; rerun with --restart to start this run over "
                                      "(restart=True), or use another output directory")
            return "changed"
        if not self.file(METRICS_JSON).exists():
            return "unfinished"
        return "damaged" if self.damage() else "finished"

    def damage(self) -> str | None:
        """Why a run that wrote metrics.json does not count as finished (None: its manifest verifies)."""
        problems = verify_manifest(self.path)
        return problems[0] if problems else None

    def recorded_change(self) -> str | None:
        """What differs between this run and the one its directory recorded, in one phrase."""
        if self.file(PROVENANCE_JSON).exists():
            provenance = read_json(self.file(PROVENANCE_JSON))
            recorded = provenance.get("split_hash")
            if recorded is not None and recorded != self.task.split.hash:
                return (f"was started on split sha256 {recorded[:12]}..., the split given now is "
                        f"{self.task.split.hash[:12]}...")
            classes = (provenance.get("data") or {}).get("classes")
            if classes is not None and classes != self.task.class_map.to_config():
                return f"was started with classes {classes}, the task's are {self.task.class_map.to_config()}"
        if self.file(CONFIG_JSON).exists():
            changed = config_changes(read_json(self.file(CONFIG_JSON)), self.resolved_config(),
                                     self.config_defaults())
            if changed:
                return f"was started with another config (changed: {', '.join(changed)})"
        return None

    def start_over(self, state: str) -> None:
        """Remove what the directory holds of a changed (restart=True) or damaged run, saying why."""
        why = self.recorded_change() if state == "changed" else self.damage()
        print(f"{self.kind}: {self.path.name}: {why}; starting it over")
        clear_run_directory(self.path)

    def run(self) -> dict:
        """Train, resume or just report this run; returns its metrics (also in metrics.json)."""
        started = time.perf_counter()
        state = self.status()
        if state == "finished":
            metrics = read_json(self.file(METRICS_JSON))
            print(f"{self.kind}: finished earlier\n{format_summary(metrics, self.path)}")
            return metrics
        self.check_task()
        self.prepare()   # bad input fails here, before the directory is touched
        run_dir = RunDir(self.path)
        with run_dir.lock():
            if state in ("changed", "damaged"):
                self.start_over(state)
            run_dir.clean_stale_temporaries()
            return self.train_and_evaluate(started)

    def train_and_evaluate(self, started: float) -> dict:
        RunDir.create(self.path, self.resolved_config(), seed=self.seed, split_hash=self.task.split.hash,
                      data=self.task.describe())
        import keras

        keras.utils.set_random_seed(self.seed)
        model = self.build()
        fitted = self.fit(model)
        self.save(model)
        eval_started = time.perf_counter()
        metrics = self.evaluate(model, {**self.describe(model), **fitted})
        metrics["timings"] = {**fitted.get("timings", {}), "evaluate_s": round(time.perf_counter() - eval_started, 2),
                              "total_this_session_s": round(time.perf_counter() - started, 2)}
        atomic_write_json(self.file(METRICS_JSON), metrics)
        self.cleanup()
        RunDir(self.path).finish(self.artifacts())   # last: the run is finished while this verifies
        print(format_summary(metrics, self.path, time.perf_counter() - started))
        return metrics

    def check_task(self) -> None:
        from pseudolabel.data import DataError

        if self.needs_validation() and not len(self.task.split.subset("val")[0]):
            raise DataError(f"{self.task.split.source or 'the split'}: no validation images; the {self.kind} "
                            "selects its epochs on them (make a split with `pseudolabel data split --val-size` > 0)")

    def evaluate(self, model, extra: dict) -> dict:
        """Predict val and test, write the prediction files and curves; the metrics (not yet saved)."""
        from pseudolabel.evaluation import evaluate_predictions, has_epochs, plot_history, write_predictions

        names, positive = [str(c) for c in self.task.class_map.names], self.task.class_map.positive_index
        metrics: dict = {}
        for subset in ("test", "val"):
            paths, labels = task_subset(self.task, subset)
            if not paths:
                continue
            probs = self.predict(model, subset)
            write_predictions(self.file(f"{subset}_predictions.csv"), image_names(paths, self.task.root), labels,
                              probs, names)
            scores = evaluate_predictions(labels, probs, names, positive_index=positive)
            if subset == "test":
                metrics.update(scores)
            else:
                metrics["val"] = scores
        if has_epochs(self.file(HISTORY_CSV)):
            plot_history(self.file(HISTORY_CSV), self.file(CURVES_PNG))
        n_images = {name: len(task_subset(self.task, name)[0]) for name in ("train", "val", "test")}
        return {**metrics, "tta": self.tta, "n_images": n_images, "split_hash": self.task.split.hash, **extra}


# --------------------------------------------------------------------------- shared helpers


def task_subset(task, name: str) -> tuple[list, np.ndarray]:
    """(image paths, class indices) of split subset `name` ("train", "val" or "test")."""
    paths, labels = task.split.subset(name)
    return list(paths), np.asarray(labels, dtype=np.int64)


def image_names(paths: Sequence, root) -> list[str]:
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


def flatten(config: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(recorded: dict, current: dict, defaults: dict | None = None) -> list[str]:
    """Keys whose values differ, as "key: old -> new"; a key the recorded config lacks counts as its
    default (a run started before the key existed resumes while the key keeps its default)."""
    old, new, default = flatten(recorded), flatten(json.loads(json.dumps(current))), flatten(defaults or {})
    changes = []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[-1] in NOT_COMPARED:
            continue
        before = old.get(key, default.get(key))
        after = new.get(key, default.get(key))
        if before != after:
            changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


def clear_run_directory(path: Path) -> None:
    """Remove a run's files to start it over (other workers' `worker-*` copies are theirs to clear;
    the lock file stays: it is held while this runs)."""
    for item in Path(path).iterdir():
        if (item.is_dir() and item.name.startswith("worker-")) or item.name == LOCK_FILE:
            continue
        shutil.rmtree(item) if item.is_dir() else item.unlink()


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
