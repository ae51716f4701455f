"""Freezing for transfer learning: the head alone, or the top blocks of the backbone as a whole.

Blocks are recognised by layer names: every backbone names its layers `stem_*`,
`block{stage}{letter}_*` (one MBConv block each, e.g. `block6d_`) and `top_*`, as Keras'
EfficientNets do. Unfreezing goes by whole blocks, never by a count of layers, so a block is
never half trainable. BatchNormalization layers always stay frozen: with `trainable=False`
Keras 3 runs them in inference mode, keeping the pretrained statistics on small batches.
Compile (again) after changing what is trainable: Keras fixes the trained variables at compile.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"^(block\d+[a-z]+)_")
_TOP_PREFIX = "top_"


def block_of(layer_name: str) -> str | None:
    match = _BLOCK.match(layer_name)
    return match.group(1) if match else None


def block_names(backbone) -> list[str]:
    """The backbone's blocks in network order (e.g. block1a ... block7a)."""
    names: list[str] = []
    for layer in backbone.layers:
        block = block_of(layer.name)
        if block and block not in names:
            names.append(block)
    return names


def nested_layers(model):
    """Every layer of `model`, depth first, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from nested_layers(layer)


def freeze_backbone(model) -> None:
    """Only the head trains (phase 1 of transfer learning)."""
    model.trainable = True
    model.get_layer("backbone").trainable = False
    model.get_layer("head").trainable = True


def unfreeze_top_blocks(model, n: int) -> list[str]:
    """Make the top `n` backbone blocks and its top conv trainable; return the unfrozen blocks.

    n = 0 is `freeze_backbone`. n >= the number of blocks unfreezes the whole backbone, stem
    included. BatchNormalization layers stay frozen everywhere; the head stays trainable.
    """
    import keras

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    freeze_backbone(model)
    if n == 0:
        return []
    backbone = model.get_layer("backbone")
    blocks = block_names(backbone)
    chosen = set(blocks[-n:])
    whole = n >= len(blocks)
    backbone.trainable = True   # turns every sublayer on; switch off what stays frozen
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            layer.trainable = whole or block_of(layer.name) in chosen or layer.name.startswith(_TOP_PREFIX)
    return [b for b in blocks if b in chosen]


def trainable_summary(model) -> dict[str, int]:
    """Counts of trainable / non-trainable weight tensors and parameters, for logs and tests."""
    import numpy as np

    def count(weights):
        return int(sum(np.prod(w.shape) for w in weights))

    return {
        "trainable_tensors": len(model.trainable_weights),
        "trainable_params": count(model.trainable_weights),
        "frozen_params": count(model.non_trainable_weights),
    }
