"""Model factories: `create_backbone`, `create_head`, `create_model`.

A classifier is `inputs -> backbone -> head`, two nested Keras models named "backbone" and
"head" (ARCHITECTURE.md). Images enter as float32 RGB pixels 0..255; each backbone does its own
preprocessing, so callers cannot feed it wrongly.
"""

from __future__ import annotations

from pathlib import Path

from pseudolabel.backbones.registry import BackboneSpec, get_spec


def resolve_image_size(spec: BackboneSpec, image_size: int | None) -> int:
    size = spec.image_size if image_size is None else int(image_size)
    if size < spec.min_image_size:
        raise ValueError(f"{spec.name}: image_size must be >= {spec.min_image_size}, got {size}")
    return size


def _check_rate(value: float, what: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {value}")
    return value


def _resolve_weights(spec: BackboneSpec, weights):
    # TOML has no null: recipes say "none" for random init.
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "random")):
        return None
    if weights == "imagenet":
        return "imagenet" if spec.pretrained else None
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{spec.name}: weights file not found: {path}")
    return path


def create_backbone(name: str, *, image_size: int | None = None, weights="imagenet",
                    drop_connect_rate: float | None = None):
    """A `keras.Model` named "backbone": float32 pixels [B, S, S, 3] in 0..255 -> [B, feature_dim].

    weights: "imagenet" (the backbone's pretrained weights; random for tiny_cnn), None or "none"
    (random init) or a file path (B-series: a keras-applications `*_notop.h5`; Lite: a legacy `.pth`;
    any backbone: a `.weights.h5` saved from a backbone of the same name).
    drop_connect_rate: top stochastic-depth rate (rising linearly across blocks); None keeps the
    family default (0.2).
    """
    spec = get_spec(name)
    rate = spec.default_drop_connect_rate if drop_connect_rate is None else drop_connect_rate
    return spec.builder(
        image_size=resolve_image_size(spec, image_size),
        weights=_resolve_weights(spec, weights),
        drop_connect_rate=_check_rate(rate, "drop_connect_rate"),
    )


def create_head(feature_dim: int, num_classes: int, *, dropout: float = 0.5):
    """A `keras.Model` named "head": BatchNormalization -> Dropout -> Dense(softmax, float32)."""
    import keras

    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    inputs = keras.Input((int(feature_dim),), name="features")
    x = keras.layers.BatchNormalization(name="head_bn")(inputs)
    x = keras.layers.Dropout(_check_rate(dropout, "dropout"), name="head_dropout")(x)
    # float32 probabilities even under a mixed-precision policy (stable losses and AUCs).
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="head")


def create_model(backbone: str, num_classes: int, *, image_size: int | None = None, weights="imagenet",
                 dropout: float = 0.5, drop_connect_rate: float | None = None):
    """`inputs -> backbone -> head`, named "<backbone>_classifier".

    `model.get_layer("backbone")` and `model.get_layer("head")` return the nested models; the
    head can be trained alone on cached backbone features and stays the same object here.
    """
    spec = get_spec(backbone)
    size = resolve_image_size(spec, image_size)
    body = create_backbone(backbone, image_size=size, weights=weights, drop_connect_rate=drop_connect_rate)
    return assemble_classifier(body, backbone, num_classes, dropout=dropout)


def assemble_classifier(body, backbone: str, num_classes: int, *, dropout: float = 0.5):
    """`inputs -> body -> a new head` around an existing backbone model `body` (made by
    `create_backbone(backbone, ...)`), named as `create_model` names its models."""
    import keras

    size = int(body.input_shape[1])
    head = create_head(body.output_shape[-1], num_classes, dropout=dropout)
    inputs = keras.Input((size, size, 3), name="image")
    return keras.Model(inputs, head(body(inputs)), name=f"{backbone}_classifier")


def backbone_name(model) -> str:
    """The registered backbone name of a model made by `create_model` (also after loading)."""
    suffix = "_classifier"
    if not model.name.endswith(suffix):
        raise ValueError(f"{model.name!r} was not made by create_model")
    return model.name[: -len(suffix)]


def create_imagenet_classifier(name: str, *, weights="imagenet", image_size: int | None = None):
    """The 1000-class ImageNet classifier (logits) of an EfficientNet-Lite backbone.

    Used to check converted weights (sample images, PyTorch reference); pixels 0..255 in.
    """
    spec = get_spec(name)
    if spec.family != "efficientnet_lite":
        raise ValueError(f"create_imagenet_classifier supports the EfficientNet-Lite backbones, not {name}")
    from pseudolabel.backbones.lite import build_lite_imagenet_classifier

    return build_lite_imagenet_classifier(
        int(name[-1]), resolve_image_size(spec, image_size), _resolve_weights(spec, weights)
    )
