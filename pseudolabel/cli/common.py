"""Options shared by the commands that train or evaluate on a labeled task."""

from __future__ import annotations

import functools
import tomllib

import click


def data_options(func):
    """--experiment / --root / --labels / --split / --classes / --allow-split-change."""
    options = [
        click.option("--experiment", type=click.Path(exists=True, dir_okay=False),
                     help="Experiment TOML to take the data settings from; the flags below override it."),
        click.option("--root", "--data", "root", type=click.Path(exists=True, file_okay=False),
                     help="Data root: image paths in the labels CSV and split are relative to it."),
        click.option("--labels", type=click.Path(dir_okay=False),
                     help="Labels CSV (image,label). Default: ROOT/labels.csv."),
        click.option("--split", type=click.Path(dir_okay=False),
                     help="Fixed train/val/test split CSV (from `pseudolabel data split`)."),
        click.option("--classes", default=None,
                     help="Class map: 'house_rooms' (Modern vs not-Modern, N merged into O) or "
                          "'identity' (one class per raw label). Default: the experiment's, else identity."),
        click.option("--allow-split-change", is_flag=True,
                     help="Evaluate even if the split differs from the one the run recorded."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def data_config(experiment=None, root=None, labels=None, split=None, classes=None, allow_split_change=False) -> dict:
    """The experiment's `data` table with command-line flags applied (paths made absolute)."""
    from pathlib import Path

    from pseudolabel.config import EXPERIMENT_DEFAULTS, load_experiment

    cfg = dict(load_experiment(experiment)["data"]) if experiment else dict(EXPERIMENT_DEFAULTS["data"])
    if root:
        cfg["root"] = str(Path(root).resolve())
        if not labels and not experiment:
            cfg["labels"] = str(Path(root, "labels.csv").resolve())
    if labels:
        cfg["labels"] = str(Path(labels).resolve())
    if split:
        cfg["split"] = str(Path(split).resolve())
    if classes:
        cfg["classes"] = classes
    if allow_split_change:
        cfg["allow_split_change"] = True
    if not cfg.get("root") or cfg["root"] == ".":
        raise click.UsageError("give --root (the data folder) or --experiment")
    return cfg


def strategy_option(func):
    """--strategy: the tf.distribute strategy the models train under (pseudolabel.distribute)."""
    from pseudolabel.distribute import STRATEGIES

    choices = "; ".join(f"{name}: {help}" for name, (_, help) in STRATEGIES.items())
    return click.option(
        "--strategy", type=click.Choice(list(STRATEGIES)), default="auto", show_default=True,
        help=f"Where training runs ({choices}). The recipe's train.batch_size is per replica (global batch = "
             "batch_size x replicas) and learning rates are multiplied by the replicas unless "
             "train.scale_lr = false.",
    )(func)


def fail_cleanly(func):
    """Turn the project's own errors (bad data, bad config) into a one-line message, exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from pseudolabel.config import ConfigError

        from pseudolabel.rundir import RunDirError

        expected = [ConfigError, FileNotFoundError, RunDirError]
        try:
            from pseudolabel.data import DataError
            from pseudolabel.images import ImageError

            expected += [DataError, ImageError]
        except ImportError:
            pass
        try:
            return func(*args, **kwargs)
        except tuple(expected) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def parse_overrides(items) -> dict:
    """`("train.phase1_epochs=3", "model.backbone=tiny_cnn")` -> nested dict for `config.merge`.

    Values are read as TOML (`3`, `1e-4`, `true`, `"x"`, `[1, 2]`); anything that is not valid
    TOML is taken as a bare string, so `model.backbone=tiny_cnn` needs no quotes.
    """
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise click.BadParameter(f"{key}: '{part}' is set to a value and used as a table", param_hint="--set")
        node[leaf] = value
    return out
