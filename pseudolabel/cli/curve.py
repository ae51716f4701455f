"""`pseudolabel curve`: the label-budget curve of an experiment (pseudolabel.curve)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pseudolabel.cli.common import fail_cleanly, parse_seeds, restart_option, strategy_option


@click.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", "budgets", default="25,50,100,all", show_default=True, metavar="N,N,...,all",
              help="Label budgets: how many labeled train images each point keeps ('all': every one). The rest "
                   "of the train split becomes an unlabeled pool with its labels hidden from training.")
@click.option("--seeds", default=None, metavar="S,S,...",
              help="Train every budget once per seed (e.g. 0,1,2). Default: the experiment's `seeds`, else 0.")
@click.option("--out", type=click.Path(file_okay=False),
              help="The curve's folder (default: OUTPUT/curve): labels-<n>/seed-<s>/ per run, curve.md/.json/.png.")
@click.option("--json", "as_json", is_flag=True, help="End with the curve's summary as JSON instead of the table.")
@restart_option
@strategy_option
@fail_cleanly
def curve(experiment, budgets, seeds, out, as_json, restart, strategy):
    """Label-budget curve of an EXPERIMENT: test ROC AUC against the number of labels, supervised
    (teacher, linear probe) vs semi-supervised (students, self-training).

    Each budget keeps a stratified subset of the labeled train split, nested (25 is part of 50, of
    100, of all) and the same for every seed (chosen with the experiment's `seed`); the rest of the
    train split joins the pools with its labels hidden (their truth is written beside them, in
    labels-<n>/hidden_truth.csv, and read by nothing that trains). Validation and test never change.
    Teacher, baselines and students train per budget and seed in labels-<n>/seed-<s>/; rerunning
    resumes, and a run whose config changed is refused before any work (--restart redoes it). A
    budget must keep 2 labels per class and stay below the train split's size.
    """
    from pseudolabel.curve import CurveError, curve_markdown, parse_budgets

    try:
        parsed = parse_budgets(budgets)
    except CurveError as error:
        bad = click.ClickException(str(error))
        bad.exit_code = 2   # a bad option value, in one line
        raise bad from None
    seed_list = parse_seeds(seeds)

    from pseudolabel.config import load_experiment
    from pseudolabel.curve import run_curve
    from pseudolabel.distribute import get_strategy

    exp = load_experiment(experiment)   # every recipe checked: before any work
    strategy = get_strategy(strategy)   # before other TF work: a multi-worker strategy must come first
    result = run_curve(exp, parsed, seed_list, out=Path(out).resolve() if out else None, strategy=strategy,
                       restart=restart)
    if result is None:   # a non-chief worker: no report
        return
    click.echo(json.dumps(result, indent=2, sort_keys=True, default=str) if as_json else "\n" + curve_markdown(result))


commands = [curve]
