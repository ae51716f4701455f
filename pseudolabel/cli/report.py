"""`pseudolabel compare`: compare evaluated runs on their shared test set."""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.model_selection import DEFAULT_MARGIN, selection_sentence


@click.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write compare.md, compare.html, compare.json, roc.png and visual.html "
                   "[default: a 'compare' folder beside the first run].")
@click.option("--baseline", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The run the others are compared with [default: the first RUN_DIR, usually the teacher].")
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples for the confidence intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resamples.")
@click.option("--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Data root the test image names are relative to, for visual.html's thumbnails "
                   "[default: the data root the runs recorded].")
@click.option("--margin", type=click.FloatRange(0.0, 1.0), default=DEFAULT_MARGIN, show_default=True,
              help="Model selection: the baseline is kept unless another run's val ROC AUC beats it by this.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary (what compare.json holds) as JSON on stdout instead of the table.")
def compare(run_dirs, out_dir, baseline, resamples, seed, image_root, margin, as_json):
    """Compare evaluated runs (RUN_DIR...) on the same test images.

    Each RUN_DIR needs provenance.json and test_predictions.csv (as written by `teach` and
    `student`). Runs on different splits or test images are refused. Prints a Markdown table of
    test ROC AUC [95% CI], accuracy, and the paired AUC difference to the baseline with its
    bootstrap CI and p-value (DeLong, or permutation for K classes); writes the full report to --out, with visual.html: the pool
    images per round (surest, least sure, flipped), class shares, training curves and the
    misclassified test images.
    """
    import json

    from pseudolabel import evaluation, report

    out_dir = out_dir or Path(run_dirs[0]).resolve().parent / "compare"
    try:
        result = report.compare_runs(list(run_dirs), out_dir, baseline=baseline, n_resamples=resamples, seed=seed,
                                     image_root=image_root, margin=margin)
    except (report.ReportError, evaluation.EvaluationError) as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    click.echo(report.markdown_table(result))
    for sentence in report.summary_sentences(result)[1:]:
        click.echo(sentence)
    click.echo(selection_sentence(result["selection"]))
    click.echo(f"\nWrote {', '.join(report.OUTPUT_FILES)} to {out_dir}")


commands = [compare]
