"""Class maps: raw label -> class name -> class index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from pseudolabel.data.errors import DataError


@dataclass(frozen=True)
class ClassMap:
    """Raw label -> class name -> class index.

    `names` fixes the class order (index i = names[i]); `mapping` sends each raw label to a name.
    For binary tasks `positive` is the class whose probability is scored by ROC AUC (default:
    the last class); K-class tasks have no positive class.
    """

    names: tuple[str, ...]
    mapping: Mapping[str, str]
    positive: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "mapping", {str(k): str(v) for k, v in self.mapping.items()})
        self._validate()

    def _validate(self) -> None:
        names = self.names
        if len(names) < 2:
            raise DataError(f"class map: need at least 2 classes, got {list(names)}")
        if len(set(names)) != len(names):
            raise DataError(f"class map: class names repeat: {list(names)}")
        strays = sorted({v for v in self.mapping.values() if v not in names})
        if strays:
            raise DataError(f"class map: labels map to unknown classes {strays} (classes: {list(names)})")
        unmapped = [n for n in names if n not in self.mapping.values()]
        if unmapped:
            raise DataError(f"class map: no raw label maps to class(es) {unmapped}")
        if self.positive is not None:
            if self.positive not in names:
                raise DataError(f"class map: positive class '{self.positive}' is not one of {list(names)}")
            if len(names) != 2:
                raise DataError(f"class map: 'positive' is only for binary tasks, this one has {len(names)} classes")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ClassMap":
        """From an experiment table: `{names = [...], map = {raw = name, ...}, positive = name}`.

        Without `map`, each class name is its own raw label.
        """
        unknown = sorted(set(config) - {"names", "map", "positive"})
        if unknown:
            raise DataError(f"class map: unknown key(s) {unknown} (known: names, map, positive)")
        if "names" not in config:
            raise DataError("class map: 'names' (the list of class names, in index order) is required")
        names = list(config["names"])
        mapping = dict(config.get("map") or {n: n for n in names})
        return cls(names, mapping, config.get("positive"))

    @classmethod
    def identity(cls, raw_labels: Iterable[str]) -> "ClassMap":
        """One class per distinct raw label, sorted (so the order does not depend on row order)."""
        names = sorted({str(r) for r in raw_labels})
        return cls(names, {n: n for n in names})

    def to_config(self) -> dict:
        """The inverse of `from_config` (what a run records)."""
        out = {"names": list(self.names), "map": dict(self.mapping)}
        if self.positive is not None:
            out["positive"] = self.positive
        return out

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def positive_index(self) -> int | None:
        """Binary tasks: index of the positive class (default the last); K-class: None."""
        if self.num_classes != 2:
            return None
        return self.names.index(self.positive) if self.positive is not None else 1

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise DataError(f"unknown class '{name}' (classes: {', '.join(self.names)})") from None

    def encode(self, raw: str) -> int:
        """Class index of a raw label; DataError for a label the map does not know."""
        try:
            return self.names.index(self.mapping[raw])
        except KeyError:
            known = ", ".join(sorted(self.mapping))
            raise DataError(f"unknown label '{raw}' (known labels: {known})") from None

    def encode_many(self, raws: Iterable[str]) -> np.ndarray:
        return np.array([self.encode(r) for r in raws], dtype=np.int64)


# The House Rooms default task, as in the original tutorial: Modern vs not-Modern (N merged into O).
HOUSE_ROOMS_CLASSES = ClassMap(["old", "modern"], {"M": "modern", "O": "old", "N": "old"}, positive="modern")

CLASS_MAPS: dict[str, ClassMap] = {"house_rooms": HOUSE_ROOMS_CLASSES}


def resolve_class_map(spec: "ClassMap | str | Mapping | None", raw_labels: Iterable[str] = ()) -> ClassMap:
    """A ClassMap from what a config or a command line says.

    None or "identity": one class per raw label in `raw_labels`; a name from CLASS_MAPS
    ("house_rooms"); a table (`from_config`); or a ClassMap as is.
    """
    if isinstance(spec, ClassMap):
        return spec
    if spec is None or spec == "identity":
        return ClassMap.identity(raw_labels)
    if isinstance(spec, str):
        if spec not in CLASS_MAPS:
            raise DataError(f"unknown class map '{spec}' (known: identity, {', '.join(sorted(CLASS_MAPS))})")
        return CLASS_MAPS[spec]
    if isinstance(spec, Mapping):
        return ClassMap.from_config(spec)
    raise DataError(f"class map: expected a name or a table, got {type(spec).__name__}")
