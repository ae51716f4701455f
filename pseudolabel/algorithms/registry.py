"""The registry of training algorithms a student recipe selects with `algorithm = "<name>"`.

Names map to `module:Class` strings and the classes are imported only when asked for, so reading
a recipe (which checks its algorithm's name here) never imports TensorFlow. Every class is a
`keras.Model` wrapping the classifier, with its own `train_step`:

  noisy_student  offline: trains on a pseudo-label table a frozen teacher made (`students.StudentRun`)
  pseudo_label   online: the model's own hard labels above a threshold (Lee 2013)
  fixmatch       online: the weak view's hard label above a threshold trains the strong view (Sohn et al. 2020)
  flexmatch      online: FixMatch with per-class thresholds from each class's learning effect (Zhang et al. 2021)
  freematch      online: FixMatch with a self-adaptive global x local threshold (Wang et al. 2023)

An online algorithm labels the pools inside every step and needs no table (`online_student.OnlineStudentRun`).
"""

from __future__ import annotations

import importlib

_REGISTRY: dict[str, tuple[str, bool]] = {}


def register_algorithm(name: str, target: str | type, *, online: bool = True) -> None:
    """Register `target` (a keras.Model class, or "module:Class" imported when first asked for)
    under `name`; `online`: it labels the pools itself (False: it trains on a pseudo-label table)."""
    if name in _REGISTRY:
        raise ValueError(f"algorithm {name!r} is already registered")
    _REGISTRY[name] = (target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}", online)


def list_algorithms() -> list[str]:
    return sorted(_REGISTRY)


def is_online(name: str) -> bool:
    return _entry(name)[1]


def get_algorithm(name: str) -> type:
    """The keras.Model class registered under `name`."""
    module, _, attribute = _entry(name)[0].partition(":")
    return getattr(importlib.import_module(module), attribute)


def _entry(name: str) -> tuple[str, bool]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(list_algorithms())}")
    return _REGISTRY[name]


register_algorithm("noisy_student", "pseudolabel.noisy_student:NoisyStudent", online=False)
register_algorithm("pseudo_label", "pseudolabel.algorithms.online:PseudoLabel")
register_algorithm("fixmatch", "pseudolabel.algorithms.online:FixMatch")
register_algorithm("flexmatch", "pseudolabel.algorithms.online:FlexMatch")
register_algorithm("freematch", "pseudolabel.algorithms.online:FreeMatch")
