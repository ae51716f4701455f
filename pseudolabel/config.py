"""Recipes and experiments: small TOML files, read with `tomllib`, merged over defaults.

A recipe (`teachers/*.toml`, `students/*.toml`) says how to build and train one model:
`[model]` (the keyword arguments of `backbones.create_model`), `[train]`, and for students
`[noise]`. An experiment (`experiments/*.toml`) names the data, the class map, the pools, the
teacher recipe, the student recipes and the pseudo-labeling settings.

Unknown keys are errors (a typo must not silently fall back to a default), and every relative
path is resolved against the file that names it, so a config means the same from any directory.
The resolved dict is what a run saves as `config.json`.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


MODEL_DEFAULTS: dict[str, Any] = {
    "backbone": "efficientnet_lite0",
    "image_size": None,  # None: the backbone's own resolution
    "weights": "imagenet",
    "dropout": 0.5,
    "drop_connect_rate": 0.2,
}

# Under a tf.distribute strategy (pseudolabel.distribute): `batch_size` is per replica, and the
# learning rate(s) are multiplied by the number of replicas unless `scale_lr` is false.
# `mixed_precision`: "auto" (mixed_float16 on a GPU, float32 on a CPU), "mixed_float16", "float32".
DISTRIBUTE_DEFAULTS: dict[str, Any] = {"scale_lr": True, "mixed_precision": "auto"}

TEACHER_DEFAULTS: dict[str, Any] = {
    "model": MODEL_DEFAULTS,
    "train": {
        "seed": 0,
        "batch_size": 32,
        "augment": "teacher",  # augmentation policy (pseudolabel.augment) for phase 2
        "feature_views": 1,  # phase 1: cached feature sets, 1 clean + (n-1) augmented views
        "phase1_epochs": 60,
        "phase1_lr": 1e-3,
        "phase1_patience": 8,
        "phase2_epochs": 0,  # 0: skip fine-tuning the top blocks
        "phase2_lr": 1e-5,
        "phase2_patience": 5,
        "unfreeze_blocks": 2,
        "class_weight": "balanced",  # "balanced" or "none"
        "tta": "none",  # evaluation: none | flip | ten_crop
        **DISTRIBUTE_DEFAULTS,
    },
}

STUDENT_DEFAULTS: dict[str, Any] = {
    "model": {**MODEL_DEFAULTS, "dropout": 0.2},
    "train": {
        "seed": 0,
        "batch_size": 16,  # labeled batch; the unlabeled batch is ratio x this
        "epochs": 10,
        "lr": 1e-4,
        "patience": 4,
        "unlabeled_ratio": 1.0,
        "unlabeled_weight": "ratio",  # "ratio": = unlabeled_ratio (official loss: every image weighs the same)
        "class_weight": "balanced",
        "freeze_bn": True,
        # "all": the whole backbone trains (the paper); N: only the top N blocks (much cheaper on a CPU)
        "unfreeze_blocks": "all",
        "tta": "none",
        "pseudo_cache_mb": 2048,  # decoded pseudo-labeled images cached in memory up to this, else on disk
        **DISTRIBUTE_DEFAULTS,
    },
    "noise": {
        "augment": "randaugment",
        "randaugment_ops": 2,
        "randaugment_magnitude": 6,
    },
}

PSEUDO_DEFAULTS: dict[str, Any] = {
    "mode": "soft",  # soft: teacher probabilities at `temperature`; hard: argmax + label smoothing
    "temperature": 1.0,
    "label_smoothing": 0.1,
    "threshold": 0.3,  # drop images whose top probability is below this
    "balance": True,  # per class keep the most confident up to `per_class`, duplicating when short
    "per_class": 0,  # 0: the largest class count after thresholding
    "tta": "none",
    "batch_size": 64,
}

EXPERIMENT_DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "seed": 0,
    "output": "runs/experiment",
    "data": {
        "root": ".",
        "labels": "labels.csv",
        "split": None,
        "classes": None,  # None: one class per raw label
        "allow_split_change": False,
    },
    "pools": [],
    # `overrides`: a table merged over the recipe(s), e.g. {train = {unfreeze_blocks = 3}}
    "teacher": {"recipe": None, "overrides": {}},
    "students": {"recipes": [], "student_teaches": True, "overrides": {}},
    "pseudo": PSEUDO_DEFAULTS,
}


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def merge(defaults: dict, values: dict, *, source: str, where: str = "") -> dict:
    """Deep-merge `values` over `defaults`; keys not in defaults are an error naming the file."""
    out = copy.deepcopy(defaults)
    for key, value in values.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"{source}: unknown key '{where}{key}' (known here: {known})")
        if defaults[key] == {} and isinstance(value, dict):
            out[key] = copy.deepcopy(value)  # a free-form table (checked where it is used)
        elif isinstance(defaults[key], dict) and isinstance(value, dict):
            out[key] = merge(defaults[key], value, source=source, where=f"{where}{key}.")
        else:
            out[key] = value
    return out


def _resolve(base: Path, value: str | None) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def load_recipe(path: str | Path, kind: str = "teacher", overrides: dict | None = None) -> dict:
    """Read a teacher or student recipe, merged over its defaults."""
    defaults = {"teacher": TEACHER_DEFAULTS, "student": STUDENT_DEFAULTS}[kind]
    path = Path(path)
    raw = read_toml(path)
    recipe = merge(defaults, raw, source=str(path))
    if overrides:
        recipe = merge(recipe, overrides, source="overrides")
    weights = recipe["model"]["weights"]
    if isinstance(weights, str) and weights.lower() in ("none", "random", ""):
        recipe["model"]["weights"] = None  # TOML has no null: "none" means random initialisation
    elif weights not in (None, "imagenet") and not Path(weights).is_absolute():
        recipe["model"]["weights"] = _resolve(path.parent, weights)
    recipe["recipe_path"] = str(path.resolve())
    recipe["kind"] = kind
    return recipe


def load_experiment(path: str | Path, overrides: dict | None = None) -> dict:
    """Read an experiment file; paths become absolute (data paths relative to `data.root`)."""
    path = Path(path)
    raw = read_toml(path)
    exp = merge(EXPERIMENT_DEFAULTS, {k: v for k, v in raw.items() if k != "pools"}, source=str(path))
    if overrides:
        exp = merge(exp, overrides, source="overrides")
    base = path.resolve().parent
    data = exp["data"]
    data["root"] = _resolve(base, data["root"])
    data["labels"] = _resolve(Path(data["root"]), data["labels"])
    data["split"] = _resolve(base, data["split"])
    exp["output"] = _resolve(base, exp["output"])
    exp["pools"] = [_pool(p, Path(data["root"]), str(path)) for p in raw.get("pools", [])]
    exp["teacher"]["recipe"] = _resolve(base, exp["teacher"]["recipe"])
    exp["students"]["recipes"] = [_resolve(base, r) for r in exp["students"]["recipes"]]
    exp["experiment_path"] = str(path.resolve())
    return exp


def _pool(entry: dict, root: Path, source: str) -> dict:
    pool = merge({"name": None, "path": None, "glob": None}, entry, source=source, where="pools.")
    if not pool["path"]:
        raise ConfigError(f"{source}: a [[pools]] entry needs a 'path'")
    pool["path"] = _resolve(root, pool["path"])
    pool["name"] = pool["name"] or Path(pool["path"]).name
    return pool
