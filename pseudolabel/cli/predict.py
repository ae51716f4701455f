"""`pseudolabel predict`: class probabilities of new images from a trained run."""

from __future__ import annotations

from pathlib import Path

import click

from pseudolabel.cli.common import fail_cleanly


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


commands = [predict]
