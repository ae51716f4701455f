"""`pseudolabel label` (teacher -> pseudo-label table) and `pseudolabel merge-labels` (shards -> table).

Thin over `pseudolabel.pseudolabels`; TensorFlow is imported inside the commands so `--help`
stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.common import data_config, data_options, engine_options, fail_cleanly, pseudo_config

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
@engine_options
@fail_cleanly
def label(model_path, experiment, root, labels, split, classes, pools, glob, tta, batch_size, out, shard, engine,
          address):
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

    if address and engine != "ray":
        raise click.UsageError("--address needs --engine ray")
    if engine == "ray":  # before any work: a missing Ray is one line at once
        from pseudolabel.pseudolabels.ray_engine import require_ray

        require_ray()
    data_cfg = data_config(experiment, root, labels, split, classes)
    pseudo_cfg = pseudo_config(experiment)
    pool_cfgs = _pool_configs(experiment, pools, glob)
    # Locked from the start, so a second `label` on the same --out is refused before any work.
    with RunLock.for_file(part_path(out, *shard) if shard else out):
        task = load_task(data_cfg.as_task_config())
        class_names = [str(c) for c in task.class_map.names]
        model, model_file, _ = load_classifier(model_path, class_names)

        filtered = prepare_pools([p.model_dump() for p in pool_cfgs], task.labeled.paths, out.parent,
                                 report_name=f"{out.stem}.pools")
        # A model file alone: its input layer is what says its resolution.
        label_pools(model, filtered, image_size=int(model.input_shape[1]),
                    batch_size=batch_size or pseudo_cfg.batch_size, tta=tta or pseudo_cfg.tta,
                    class_names=class_names, out_path=out, shard=shard, engine=engine, address=address,
                    model_file=model_file)
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


# --------------------------------------------------------------------------- helpers


def _shard(value: str | None) -> tuple[int, int] | None:
    from pseudolabel.pseudolabels import PseudoLabelError, parse_shard

    try:
        return None if value is None else parse_shard(value)
    except PseudoLabelError as e:
        raise click.BadParameter(str(e), param_hint="--shard") from None


def _pool_configs(experiment, pools, glob) -> list:
    from pseudolabel.config import PoolConfig, load_experiment

    if pools:
        return [PoolConfig(name=Path(p).name, path=str(Path(p).resolve()), glob=glob) for p in pools]
    configured = load_experiment(experiment).pools if experiment else []
    if not configured:
        raise click.UsageError("give --pool DIR (or an --experiment with [[pools]])")
    return [p.model_copy(update={"glob": glob or p.glob}) for p in configured]


commands = [label, merge_labels]
