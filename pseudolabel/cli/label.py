"""`pseudolabel label` (teacher -> pseudo-label table), `pseudolabel merge-labels` (shards -> table)
and `pseudolabel student` (Noisy Student).

Thin over `pseudolabel.pseudolabels` and `pseudolabel.students`; TensorFlow is imported inside
the commands so `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.common import (
    data_config,
    data_options,
    fail_cleanly,
    parse_overrides,
    restart_option,
    strategy_option,
)

TTA_CHOICES = click.Choice(["none", "flip", "ten_crop"])


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="The teacher: a run directory (its model.keras is used) or a .keras model file.")
@data_options
@click.option("--pool", "pools", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Unlabeled pool folder (scanned recursively); repeat for several. Default: the "
                   "experiment's [[pools]].")
@click.option("--glob", default=None, help="Only take pool files whose path ends matching this, e.g. 'bed_*.jpg'.")
@click.option("--tta", type=TTA_CHOICES, default=None,
              help="Test-time augmentation for the teacher's predictions (averaged views). "
                   "Default: the experiment's [pseudo] tta, else none.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per prediction batch. Default: the experiment's [pseudo] batch_size (64).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The pseudo-label table to write (CSV). Beside it: OUT.skipped.csv (every file found and "
                   "not labeled, with the reason: unreadable at scan or decode, excluded as labeled, "
                   "near-duplicate or in an earlier pool), OUT.summary.json, OUT.manifest.json (written "
                   "last: the table is finished), OUT.pools.csv/.json (every file found, per pool).")
@click.option("--shard", default=None, metavar="INDEX/COUNT", callback=lambda ctx, param, value: _shard(value),
              help="Label only shard INDEX of COUNT (0-based, e.g. 0/3 on the first of three machines): the "
                   "images at positions INDEX, INDEX+COUNT, ... of the pools' image list, written to "
                   "OUT's part OUT.part-III-of-NNN.csv. Give every machine the same pools and options; "
                   "then `pseudolabel merge-labels OUT` joins the parts.")
@fail_cleanly
def label(model_path, experiment, root, labels, split, classes, pools, glob, tta, batch_size, out, shard):
    """Pseudo-label unlabeled pools with a teacher model (no noise: inference mode, no augmentation).

    Every pool is scanned, and every labeled image (train, val AND test) and its near-duplicates
    are dropped first, so no test image reaches training through a pool. Each readable image gets
    one row: image, pool, sha256 of the file, the teacher's probabilities, confidence and predicted
    class. Unreadable images are skipped and listed, never fatal. The table is written atomically.
    With --shard, every machine checks the whole pools against the labeled images (cheap: ~2 ms an
    image) and labels only its share.
    """
    from pseudolabel.data import load_task, prepare_pools
    from pseudolabel.pseudolabels import label_pools, load_classifier, part_path
    from pseudolabel.rundir import RunLock

    data_cfg = data_config(experiment, root, labels, split, classes)
    pseudo_cfg = _pseudo_config(experiment)
    pool_cfgs = _pool_configs(experiment, pools, glob)
    # Locked from the start, so a second `label` on the same --out is refused before any work.
    with RunLock.for_file(part_path(out, *shard) if shard else out):
        task = load_task(data_cfg.as_task_config())
        class_names = [str(c) for c in task.class_map.names]
        model, _, _ = load_classifier(model_path, class_names)

        filtered = prepare_pools([p.model_dump() for p in pool_cfgs], task.labeled.paths, out.parent,
                                 report_name=f"{out.stem}.pools")
        # A model file alone: its input layer is what says its resolution.
        label_pools(model, filtered, image_size=int(model.input_shape[1]),
                    batch_size=batch_size or pseudo_cfg.batch_size, tta=tta or pseudo_cfg.tta,
                    class_names=class_names, out_path=out, shard=shard)
    if shard:
        click.echo(f"shard {shard[0]} of {shard[1]} done; once every shard is: pseudolabel merge-labels {out}")


@click.command("merge-labels")
@click.argument("table", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("parts", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@fail_cleanly
def merge_labels(table, parts):
    """Join the parts of a sharded `pseudolabel label --shard` into the pseudo-label TABLE.

    PARTS default to every TABLE.part-III-of-NNN.csv beside TABLE. Refuses a missing or duplicate
    shard, parts cut from different pools or with other classes or settings, and an image labeled
    twice. The table (with its .skipped.csv and .summary.json) is the one an unsharded run writes.
    """
    from pseudolabel.pseudolabels import merge_pseudo_label_parts

    merge_pseudo_label_parts(table, list(parts) or None)


@click.command()
@click.option("--recipe", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Student recipe TOML (students/*.toml): [model], [train], [noise].")
@click.option("--pseudo", "table", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pseudo-label table from `pseudolabel label`.")
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
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set train.epochs=3 --set noise.randaugment_magnitude=9 "
                   "(values are TOML: numbers, true/false, \"strings\"). Repeatable.")
@restart_option
@strategy_option
@fail_cleanly
def student(recipe, table, experiment, root, labels, split, classes, out, mode, threshold,
            temperature, per_class, balance, ratio, overrides, restart, strategy):
    """Train a Noisy Student on the labeled train split plus a pseudo-label table.

    The student starts from its recipe's ImageNet weights (not from the teacher), sees RandAugment
    noise on labeled and pseudo-labeled images alike, dropout and stochastic depth, and is
    evaluated on the fixed test split (metrics.json, test_predictions.csv in OUT).
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
    pseudo_cfg = _pseudo_config(experiment, {k: v for k, v in flags.items() if v is not None})
    strategy = get_strategy(strategy)  # before other TF work: a multi-worker strategy must come first
    task = load_task(data_config(experiment, root, labels, split, classes).as_task_config())
    train_student(loaded, task, table, out, pseudo=pseudo_cfg, strategy=strategy, restart=restart)


# --------------------------------------------------------------------------- helpers


def _shard(value: str | None) -> tuple[int, int] | None:
    from pseudolabel.pseudolabels import PseudoLabelError, parse_shard

    try:
        return None if value is None else parse_shard(value)
    except PseudoLabelError as e:
        raise click.BadParameter(str(e), param_hint="--shard") from None


def _pseudo_config(experiment, flags: dict | None = None):
    """The experiment's `[pseudo]` (or the defaults) with the command-line flags applied, validated."""
    from pseudolabel.config import PseudoConfig, load_experiment, validate

    pseudo = load_experiment(experiment).pseudo if experiment else PseudoConfig()
    return validate(PseudoConfig, {**pseudo.model_dump(), **(flags or {})}, source="the command line")


def _pool_configs(experiment, pools, glob) -> list:
    from pseudolabel.config import PoolConfig, load_experiment

    if pools:
        return [PoolConfig(name=Path(p).name, path=str(Path(p).resolve()), glob=glob) for p in pools]
    configured = load_experiment(experiment).pools if experiment else []
    if not configured:
        raise click.UsageError("give --pool DIR (or an --experiment with [[pools]])")
    return [p.model_copy(update={"glob": glob or p.glob}) for p in configured]


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the predictions here: .csv or .json (by the suffix). Default: print CSV.")
@click.option("--tta", type=click.Choice(["none", "flip", "ten_crop"]), default="none", show_default=True,
              help="Test-time augmentation: average over flips or the 10 classic crops.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per prediction batch.")
@click.option("--classes", default=None,
              help="Class names, comma-separated, when the model's run did not record them.")
@fail_cleanly
def predict(model_path, images, out, tta, batch_size, classes):
    """Class probabilities for new IMAGES (files or folders, searched recursively) from MODEL
    (a run directory or a .keras file). Unreadable images are listed and skipped."""
    from pseudolabel.pseudolabels import load_classifier, predict_images

    model, model_file, class_names = load_classifier(model_path)
    if classes:
        class_names = [c.strip() for c in classes.split(",")]
    class_names = class_names or [f"class_{k}" for k in range(int(model.output_shape[-1]))]
    if len(class_names) != int(model.output_shape[-1]):
        raise click.ClickException(f"{model_file}: the model predicts {model.output_shape[-1]} classes, "
                                   f"not {len(class_names)} ({', '.join(class_names)})")
    paths = _image_paths(images)
    rows, skipped = predict_images(model, paths, class_names=class_names, tta=tta, batch_size=batch_size,
                                   progress=out is not None)
    _write_predictions(rows, out)
    for image, reason in skipped:
        click.echo(f"skipped {image}: {reason}", err=True)
    if out:
        click.echo(f"{len(rows)} predictions -> {out}" + (f"; {len(skipped)} unreadable skipped" if skipped else ""))


def _image_paths(items: tuple[Path, ...]) -> list[Path]:
    """The image files named, and those found (recursively) in the folders named; none is an error."""
    import warnings

    from pseudolabel.data import DataWarning, scan_pool
    from pseudolabel.images import IMAGE_EXTENSIONS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # said below, in one line
        paths = [p for item in items for p in (scan_pool(item).images if item.is_dir() else [item])]
    if not paths:
        raise click.ClickException(f"no images in {', '.join(map(str, items))} (looked for "
                                   f"{', '.join(sorted(IMAGE_EXTENSIONS))}, in subfolders too)")
    return paths


def _write_predictions(rows: list[dict], out: Path | None) -> None:
    import csv
    import io
    import json

    from pseudolabel.rundir import atomic_write_text

    if out is not None and out.suffix.lower() == ".json":
        atomic_write_text(out, json.dumps(rows, indent=2) + "\n")
        return
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if out is None:
        click.echo(buffer.getvalue(), nl=False)
    else:
        atomic_write_text(out, buffer.getvalue())


commands = [label, merge_labels, student, predict]
