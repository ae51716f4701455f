"""`pseudolabel teach` (supervised teacher), `pseudolabel probe` (linear-probe baseline) and
`pseudolabel student` (one Noisy Student from a pseudo-label table, or an online student on the
experiment's pools)."""

from __future__ import annotations

import click

from pathlib import Path

from pseudolabel.cli.common import (
    data_config,
    data_options,
    fail_cleanly,
    overrides_option,
    parse_overrides,
    pseudo_config,
    restart_option,
    strategy_option,
)


def load_task_from_flags(data_kwargs: dict):
    """The task the --experiment / --root / --labels / --split / --classes flags describe."""
    from pseudolabel.data import load_task

    return load_task(data_config(**data_kwargs).as_task_config())


@click.command()
@click.option("--recipe", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Teacher recipe TOML (teachers/*.toml): [model] and [train] tables.")
@data_options
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run directory. Rerunning with the same one resumes, or only reports a finished run.")
@overrides_option("--set train.phase1_epochs=3 --set train.phase2_epochs=0")
@restart_option
@strategy_option
@fail_cleanly
def teach(recipe, out, overrides, restart, strategy, **data_kwargs):
    """Train the supervised teacher of a RECIPE on the labeled data; evaluate it on the test split.

    Phase 1 fits the classifier head on backbone features computed once (cached in the run
    directory); phase 2 (train.phase2_epochs > 0) fine-tunes the top blocks on augmented images.
    The run directory gets model.keras, metrics.json (test ROC AUC with a 95% CI),
    test_predictions.csv, history.csv, curves.png and TensorBoard logs. A killed run continues
    where it stopped when rerun with the same --out.
    """
    from pseudolabel.config import load_recipe
    from pseudolabel.distribute import get_strategy
    from pseudolabel.teacher import train_teacher

    loaded = load_recipe(recipe, "teacher", parse_overrides(overrides) or None)   # fails before any TF work
    strategy = get_strategy(strategy)  # before other TF work: a multi-worker strategy must come first
    train_teacher(loaded, load_task_from_flags(data_kwargs), out, strategy=strategy, restart=restart)


@click.command()
@click.option("--backbone", default="efficientnet_lite0", show_default=True,
              help="Registered backbone whose frozen features the probe reads (`pseudolabel models list`).")
@click.option("--image-size", type=click.IntRange(min=16), default=None,
              help="Input resolution. Default: the backbone's own.")
@click.option("--weights", default="imagenet", show_default=True,
              help="'imagenet', 'none' (random init) or a weights file.")
@click.option("--cv", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the stratified cross-validation that picks C.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the cross-validation folds.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch size of the feature extraction.")
@data_options
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run directory (metrics.json, test_predictions.csv, features.npz, provenance).")
@restart_option
@fail_cleanly
def probe(backbone, image_size, weights, cv, seed, batch_size, out, restart, **data_kwargs):
    """Linear-probe baseline: frozen backbone features -> standardized logistic regression.

    C is chosen by stratified cross-validation (ROC AUC) on the train split; the model is fitted
    on train only and evaluated on the same test split as the teacher, with the same files, so
    `pseudolabel compare` can put it beside the other runs.
    """
    from pseudolabel.config import ProbeConfig, validate
    from pseudolabel.probe import ProbeRun

    config = validate(ProbeConfig, {"model": {"backbone": backbone, "image_size": image_size, "weights": weights},
                                    "cv": cv, "seed": seed, "batch_size": batch_size},
                      source="the command line (--backbone/--image-size/--weights)")
    ProbeRun(config, load_task_from_flags(data_kwargs), out, restart=restart).run()


@click.command()
@click.option("--recipe", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Student recipe TOML (students/*.toml): [model], [train], [noise], and `algorithm` / [algorithm].")
@click.option("--pseudo", "table", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pseudo-label table from `pseudolabel label` (algorithm noisy_student). Without it the "
                   "recipe's online algorithm labels the --experiment's pools itself.")
@data_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory. Rerunning with the same one resumes an interrupted training "
                   "(or just reports a finished one).")
@click.option("--mode", type=click.Choice(["soft", "hard"]), default=None,
              help="soft: the teacher's probabilities (at --temperature); hard: argmax one-hot with "
                   "label smoothing. Default: the experiment's [pseudo] mode, else soft.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Drop pool images whose top probability is below this (default 0.3).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Soft-label temperature: p**(1/T) renormalised (default 1).")
@click.option("--per-class", type=click.IntRange(min=0), default=None,
              help="Balancing: pseudo-labels per predicted class (0: the largest class count).")
@click.option("--balance/--no-balance", default=None,
              help="Balance the predicted classes, duplicating images of short ones (default on).")
@click.option("--ratio", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pseudo-labeled batch size as a multiple of the labeled one (recipe train.unlabeled_ratio).")
@overrides_option("--set train.epochs=3 --set noise.randaugment_magnitude=9")
@restart_option
@strategy_option
@fail_cleanly
def student(recipe, table, experiment, root, labels, split, classes, out, mode, threshold,
            temperature, per_class, balance, ratio, overrides, restart, strategy):
    """Train a student on the labeled train split plus unlabeled images.

    With --pseudo (the recipe's algorithm noisy_student, the default): a Noisy Student on a
    pseudo-label table. Without it: the recipe's online algorithm (`algorithm = "fixmatch"`, ...)
    labels the pools of --experiment inside every step; no table, no teacher. Either way the
    student starts from its recipe's ImageNet weights and is evaluated on the fixed test split
    (metrics.json, test_predictions.csv in OUT).
    """
    from pseudolabel.config import load_recipe
    from pseudolabel.data import load_task
    from pseudolabel.distribute import get_strategy
    from pseudolabel.students import train_student

    recipe_overrides = parse_overrides(overrides)
    if ratio is not None:
        recipe_overrides.setdefault("train", {})["unlabeled_ratio"] = ratio
    loaded = load_recipe(recipe, "student", overrides=recipe_overrides or None)   # fails before any TF work
    flags = {"mode": mode, "threshold": threshold, "temperature": temperature, "per_class": per_class,
             "balance": balance}
    if loaded.algorithm.online or table is None:
        check_online_flags(loaded, recipe, table, experiment, {**flags, "ratio": ratio})
        strategy = get_strategy(strategy)
        train_online(loaded, experiment, (root, labels, split, classes), out, strategy, restart)
        return
    pseudo_cfg = pseudo_config(experiment, {k: v for k, v in flags.items() if v is not None})
    strategy = get_strategy(strategy)  # before other TF work: a multi-worker strategy must come first
    task = load_task(data_config(experiment, root, labels, split, classes).as_task_config())
    train_student(loaded, task, table, out, pseudo=pseudo_cfg, strategy=strategy, restart=restart)


def check_online_flags(recipe, recipe_file, table, experiment, flags: dict) -> None:
    """An online recipe: no table, the pools from --experiment, none of the table's flags (one line each)."""
    from pseudolabel.algorithms import list_algorithms
    from pseudolabel.config import ConfigError

    name = recipe.algorithm.name
    if not recipe.algorithm.online:
        online = ", ".join(n for n in list_algorithms() if n != name)
        raise ConfigError(f"{recipe_file}: algorithm '{name}' trains on a pseudo-label table: give --pseudo TABLE "
                          f"(from `pseudolabel label`), or set an online algorithm in the recipe ({online})")
    if table is not None:
        raise ConfigError(f"{recipe_file}: algorithm '{name}' labels the pools itself in every step; drop --pseudo")
    given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: for a pseudo-label table (noisy_student); algorithm '{name}' takes "
                          "its settings from the recipe's [algorithm] table (--set algorithm.threshold=0.9)")
    if experiment is None:
        raise ConfigError(f"{recipe_file}: algorithm '{name}' takes its unlabeled pools from --experiment ([[pools]])")


def train_online(recipe, experiment_file, data_flags, out, strategy, restart) -> None:
    from pseudolabel.config import load_experiment
    from pseudolabel.data import load_task, read_truth
    from pseudolabel.online_student import train_online_student

    experiment = load_experiment(experiment_file)
    task = load_task(data_config(experiment_file, *data_flags).as_task_config())
    truth_files = [p.truth for p in experiment.pools if p.truth]
    truth = read_truth(truth_files, task.class_map.names) if truth_files else {}
    train_online_student(recipe, task, experiment.pools, out, truth=truth, strategy=strategy, restart=restart)


commands = [teach, probe, student]
