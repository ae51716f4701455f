"""Registered backbones with ImageNet weights, the classifier factory, and freezing helpers.

    from pseudolabel.backbones import create_model, freeze_backbone, unfreeze_top_blocks
    model = create_model("efficientnet_lite0", num_classes=2, dropout=0.5)
    model.get_layer("backbone"), model.get_layer("head")

Importing this package does not import TensorFlow; building a model does.
"""

from pseudolabel.backbones.registry import (
    BackboneSpec,
    describe,
    get_spec,
    list_backbones,
    register_backbone,
)
from pseudolabel.backbones import catalog as _catalog  # noqa: F401  (registers the backbones)
from pseudolabel.backbones.factory import (
    assemble_classifier,
    backbone_name,
    create_backbone,
    create_head,
    create_imagenet_classifier,
    create_model,
)
from pseudolabel.backbones.freezing import (
    block_names,
    freeze_backbone,
    nested_layers,
    trainable_summary,
    unfreeze_top_blocks,
)
from pseudolabel.backbones.weights import WeightsUnavailableError

__all__ = [
    "BackboneSpec", "WeightsUnavailableError", "assemble_classifier", "backbone_name", "block_names", "create_backbone",
    "create_head", "create_imagenet_classifier", "create_model", "describe", "freeze_backbone",
    "get_spec", "list_backbones", "nested_layers", "register_backbone", "trainable_summary", "unfreeze_top_blocks",
]
