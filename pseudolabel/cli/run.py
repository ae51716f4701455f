"""`pseudolabel run`, `pseudolabel demo`, `pseudolabel predict`."""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.common import fail_cleanly, strategy_option


@click.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@click.option("--pool", "pools", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Add an unlabeled pool folder (recursive) to the experiment's pools. Repeatable.")
@click.option("--glob", default=None, help="Only take files matching this glob from the --pool folders.")
@click.option("--root", "--data", "root", type=click.Path(exists=True, file_okay=False),
              help="Override the experiment's data root (where the labels CSV and pools are).")
@click.option("--output", type=click.Path(file_okay=False),
              help="Override the experiment's output directory.")
@strategy_option
@fail_cleanly
def run(experiment, pools, glob, root, output, strategy):
    """Run an EXPERIMENT file: teacher -> pseudo-labels -> student -> ... -> report.

    Every round is evaluated on the fixed test split. Rerunning the same command resumes: a
    finished model or pseudo-label table is not redone, an interrupted training continues from
    its backup. The report (compare.md / compare.html / roc.png) lands in OUTPUT/report.
    """
    from pseudolabel.config import load_experiment
    from pseudolabel.distribute import get_strategy
    from pseudolabel.rounds import run_experiment

    strategy = get_strategy(strategy)  # first: a multi-worker strategy must precede any TF work
    overrides = {}
    if root:
        overrides["data"] = {"root": str(Path(root).resolve())}
    if output:
        overrides["output"] = str(Path(output).resolve())
    # Overrides apply before paths are resolved, so labels and pools follow a new data root.
    exp = load_experiment(experiment, overrides=overrides or None)
    extra = tuple({"name": Path(p).name, "path": str(Path(p).resolve()), "glob": glob} for p in pools)
    run_experiment(exp, extra_pools=extra, strategy=strategy)


commands = [run]
