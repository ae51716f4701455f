"""`pseudolabel run`, `pseudolabel demo`, `pseudolabel predict`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pseudolabel.cli.common import engine_options, fail_cleanly, parse_seeds, restart_option, strategy_option


@click.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@click.option("--pool", "pools", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Add an unlabeled pool folder (recursive) to the experiment's pools. Repeatable.")
@click.option("--glob", default=None, help="Only take files matching this glob from the --pool folders.")
@click.option("--root", "--data", "root", type=click.Path(exists=True, file_okay=False),
              help="Override the experiment's data root (where the labels CSV and pools are).")
@click.option("--output", type=click.Path(file_okay=False),
              help="Override the experiment's output directory.")
@click.option("--rounds", type=click.IntRange(min=0), default=None,
              help="Run only the teacher and the first N student rounds (default: all).")
@click.option("--seeds", default=None, metavar="S,S,...",
              help="Repeat the whole chain for these seeds (e.g. 0,1,2,3,4), each in OUTPUT/seed-<s>/, and "
                   "summarise them (mean ± sd, paired differences) in OUTPUT/report/seeds.md. "
                   "Default: the experiment's `seeds`, else one chain.")
@click.option("--pool-truth", "pool_truth", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A CSV image,label of the true class names of pool images (image paths absolute or "
                   "relative to the CSV), to measure every round's pseudo-labels (accuracy, per-class "
                   "precision / recall, calibration) in the report. One file may cover every pool; "
                   "repeatable. Read only for the report: no run's config or training changes.")
@click.option("--json", "as_json", is_flag=True,
              help="End with the report's summary as JSON on stdout (for scripts) instead of the table.")
@restart_option
@strategy_option
@engine_options
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --engine ray: train every model on this many Ray Train workers in sync (TensorFlow's "
                   "multi-worker strategy, TF_CONFIG set by Ray; the chief writes the run directories).")
@fail_cleanly
def run(experiment, pools, glob, root, output, rounds, seeds, pool_truth, as_json, restart, strategy, engine, address,
        workers):
    """Run an EXPERIMENT file: teacher -> pseudo-labels -> student -> ... -> report.

    Every round is evaluated on the fixed test split. Rerunning the same command resumes: a
    finished model or pseudo-label table is not redone, an interrupted training continues from
    its backup. A run whose recipe, pseudo-label settings, pools or teacher changed is refused
    before any work, naming the change; --restart starts it (and the rounds after it) over. The
    report (compare.md / compare.html / roc.png) lands in OUTPUT/report. Every relative path in
    the experiment file is relative to that file. --engine ray labels the rounds' pools on Ray.
    """
    from pseudolabel.config import PoolConfig, load_experiment
    from pseudolabel.distribute import get_strategy
    from pseudolabel.rounds import run_experiment

    overrides = {}
    if root:
        overrides["data"] = {"root": str(Path(root).resolve())}
    if output:
        overrides["output"] = str(Path(output).resolve())
    if address and engine != "ray":
        raise click.UsageError("--address needs --engine ray")
    if workers is not None and engine != "ray":
        raise click.UsageError("--workers needs --engine ray (training on Ray Train)")
    if engine == "ray":  # before any work: a missing Ray is one line at once
        from pseudolabel.pseudolabels.ray_engine import require_ray

        require_ray()
    exp = load_experiment(experiment, overrides=overrides or None)   # every recipe checked: before any work
    extra = tuple(PoolConfig(name=Path(p).name, path=str(Path(p).resolve()), glob=glob) for p in pools)
    truth = tuple(str(Path(p).resolve()) for p in pool_truth)
    if workers is not None:
        from pseudolabel.ray_train import train_experiment_on_ray

        summary = train_experiment_on_ray(exp, workers=workers, address=address, extra_pools=extra, restart=restart,
                                          rounds=rounds, seeds=parse_seeds(seeds), pool_truth=truth,
                                          overrides=overrides or None)
    else:
        strategy = get_strategy(strategy)  # before other TF work: a multi-worker strategy must come first
        summary = run_experiment(exp, extra_pools=extra, strategy=strategy, restart=restart, rounds=rounds,
                                 seeds=parse_seeds(seeds), pool_truth=truth,
                                 labeling={"engine": engine, "address": address})
    if summary is None:   # a non-chief worker: no report
        return
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return
    from pseudolabel.report import format_results_table

    per_seed = [summary[s] for s in summary if s != "seeds"] if "seeds" in summary else summary
    click.echo("\n" + format_results_table(per_seed))


commands = [run]
