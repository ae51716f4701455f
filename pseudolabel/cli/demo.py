"""`pseudolabel demo`: the whole method on synthetic images, in minutes on a CPU."""

from __future__ import annotations

import click

from pseudolabel.cli.common import fail_cleanly


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="pseudolabel-demo", show_default=True,
              help="Directory for the demo's data, recipes, experiment and runs (new or empty, or an "
                   "earlier demo with the same settings, whose runs then resume).")
@click.option("--labeled", default=200, show_default=True, type=click.IntRange(min=8),
              help="Labeled images the teacher learns from (three quarters train, a quarter validation).")
@click.option("--unlabeled", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Unlabeled images in the pool.")
@click.option("--test", "n_test", default=300, show_default=True, type=click.IntRange(min=4),
              help="Labeled test images (the fixed test split every model is scored on).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1),
              help="Student epochs (the teacher gets eight times as many, over far fewer images).")
@click.option("--seed", default=0, show_default=True, help="Seed for the data, split and training.")
@click.option("--control/--no-control", default=True, show_default=True,
              help="Train the labels-only control (the student's recipe without the pool), which then labels "
                   "the pool; without it the two-phase teacher labels the pool.")
@fail_cleanly
def demo(out, labeled, unlabeled, n_test, epochs, seed, control):
    """Run the whole method on synthetic images in a few minutes on a CPU.

    The images are two classes that differ only by how fine a faint texture is, under heavy
    nuisance variation (colours, position, size, blobs, noise): hard to learn from a few labels,
    learnable from many. Writes the images, their split, a teacher and a student recipe (a tiny
    CNN at 32 px) and an experiment file into OUT, runs it like `pseudolabel run
    OUT/experiment.toml`, and ends with a table of the test ROC AUC of the teacher, the
    labels-only control (the student's recipe without the pool, which labels the pool) and the
    student, with the student's paired gain over each.
    """
    from pseudolabel.demo import DemoError, run_demo

    try:
        run_demo(out, n_labeled=labeled, n_unlabeled=unlabeled, n_test=n_test, epochs=epochs, seed=seed,
                 control=control)
    except DemoError as err:
        raise click.ClickException(str(err)) from None


commands = [demo]
