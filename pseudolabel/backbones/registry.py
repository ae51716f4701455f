"""The backbone registry: one `BackboneSpec` per name, no TensorFlow needed to read it.

A spec says what a backbone is (family, default resolution, feature width, parameter count,
where its pretrained weights come from) and how to build it. Builders import Keras lazily, so
`pseudolabel models list` and recipe validation stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# Builder signature: (image_size, weights, drop_connect_rate) -> keras.Model named "backbone".
Builder = Callable[..., "object"]


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str                      # "tiny", "efficientnet" (Keras B-series) or "efficientnet_lite"
    image_size: int                  # default (native) resolution
    feature_dim: int                 # width of the pooled features
    weights_source: str              # human-readable origin of the "imagenet" weights
    builder: Builder = field(repr=False, compare=False)
    num_params: int | None = None    # backbone parameters (no top); resolution-independent
    default_drop_connect_rate: float = 0.2
    pretrained: bool = True          # False: weights="imagenet" means random init (tiny_cnn)
    min_image_size: int = 32


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add `spec` to the registry (a later registration under the same name replaces it)."""
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown backbone {name!r}; known backbones: {known}") from None


def list_backbones() -> list[str]:
    """Registered names, in registration order (tiny first, then B0..B7, then Lite0..Lite2)."""
    return list(_REGISTRY)


def describe(name: str) -> dict:
    """What `models list` shows: resolution, parameters, feature width, where weights come from."""
    spec = get_spec(name)
    return {
        "name": spec.name,
        "family": spec.family,
        "image_size": spec.image_size,
        "num_params": spec.num_params,
        "feature_dim": spec.feature_dim,
        "weights_source": spec.weights_source,
        "pretrained": spec.pretrained,
        "default_drop_connect_rate": spec.default_drop_connect_rate,
    }
