"""Options shared by the commands that train or evaluate on a labeled task."""

from __future__ import annotations

import functools
import tomllib

import click


def data_options(func):
    """--experiment / --root / --labels / --split / --classes."""
    options = [
        click.option("--experiment", type=click.Path(exists=True, dir_okay=False),
                     help="Experiment TOML to take the data settings from; the flags below override it."),
        click.option("--root", "--data", "root", type=click.Path(exists=True, file_okay=False),
                     help="Data root: image paths in the labels CSV and split are relative to it."),
        click.option("--labels", type=click.Path(dir_okay=False),
                     help="Labels CSV (image,label). Without --experiment: ROOT/labels.csv if not given."),
        click.option("--split", type=click.Path(dir_okay=False),
                     help="Fixed train/val/test split CSV (from `pseudolabel data split`)."),
        click.option("--classes", default=None,
                     help="Class map: 'house_rooms' (Modern vs not-Modern, N merged into O) or "
                          "'identity' (one class per raw label). Default: the experiment's, else identity."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def data_config(experiment=None, root=None, labels=None, split=None, classes=None):
    """The experiment's `[data]` table (a `config.DataConfig`) with the command-line flags applied;
    relative flag paths are relative to the current directory."""
    from pathlib import Path

    from pseudolabel.config import DataConfig, load_experiment, validate

    values = load_experiment(experiment).data.model_dump(exclude_none=True) if experiment else {}
    if root:
        values["root"] = str(Path(root).resolve())
        if not labels and not experiment:
            values["labels"] = str(Path(root, "labels.csv").resolve())
    for key, value in (("labels", labels), ("split", split)):
        if value:
            values[key] = str(Path(value).resolve())
    if classes:
        values["classes"] = classes
    if not values.get("root"):
        raise click.UsageError("give --root (the data folder) or --experiment")
    return validate(DataConfig, values, source="the command line (--experiment/--root/--labels/--split/--classes)")


def restart_option(func):
    """--restart: start over a run whose recorded config or split differs (else such a run is refused)."""
    return click.option(
        "--restart", is_flag=True,
        help="Start over any run whose output holds a run of another config or split (without it, "
             "such a run is refused with a line naming the change). Unchanged runs are not redone.",
    )(func)


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

        expected = [ConfigError, FileNotFoundError]
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
