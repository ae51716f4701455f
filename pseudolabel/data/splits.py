"""Fixed train/val/test splits, kept as files and identified by their sha256."""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudolabel.data.classes import ClassMap
from pseudolabel.data.duplicates import DEFAULT_HASH_DISTANCE, HashCache, find_near_duplicates
from pseudolabel.data.errors import DataError, DataWarning, problems_error
from pseudolabel.data.labels import LabeledSet, check_rows, format_problems, read_csv_rows
from pseudolabel.rundir import atomic_write_bytes


SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Split:
    """A fixed train/val/test assignment. `items` are (image, raw label, split), sorted by image."""

    root: Path
    items: list[tuple[str, str, str]]
    class_map: ClassMap
    source: Path | None = None

    def __post_init__(self):
        self.items = sorted(self.items)

    def canonical_csv(self) -> str:
        """The file content `write_split` writes: header + rows sorted by image, '\\n' line ends."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "label", "split"])
        writer.writerows(self.items)
        return buffer.getvalue()

    @property
    def hash(self) -> str:
        """sha256 (hex) of `canonical_csv()`: same assignment => same hash, whatever the row order."""
        return hashlib.sha256(self.canonical_csv().encode("utf-8")).hexdigest()

    def subset(self, name: str) -> tuple[list[Path], np.ndarray]:
        """(absolute image paths, class indices) of one part, in image order."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split '{name}' (one of {', '.join(SPLIT_NAMES)})")
        rows = [(image, label) for image, label, part in self.items if part == name]
        paths = [self.root / image for image, _ in rows]
        return paths, self.class_map.encode_many(label for _, label in rows)

    def sizes(self) -> dict[str, int]:
        counts = Counter(part for _, _, part in self.items)
        return {name: counts.get(name, 0) for name in SPLIT_NAMES}

    def class_counts(self) -> dict[str, dict[str, int]]:
        """{split: {class name: count}}."""
        out = {}
        for name in SPLIT_NAMES:
            counts = Counter(self.class_map.mapping[label] for _, label, part in self.items if part == name)
            out[name] = {c: counts.get(c, 0) for c in self.class_map.names}
        return out

    def labeled_set(self) -> LabeledSet:
        return LabeledSet(self.root, [(image, label) for image, label, _ in self.items], source=self.source)


def make_split(
    labeled_set: LabeledSet,
    class_map: ClassMap | None = None,
    test_size: float = 0.2,
    val_size: float = 0.15,
    seed: int = 0,
    *,
    test_per_class: int | None = None,
    val_per_class: int | None = None,
    hash_distance: int | None = DEFAULT_HASH_DISTANCE,
    cache: HashCache | None = None,
    progress: bool | None = None,
) -> Split:
    """A stratified, deterministic train/val/test split.

    Sizes are fractions of the whole labeled set (`test_size`, `val_size`), or, when
    `test_per_class` is given, counts: that many test images of every class, and
    `val_per_class` (default 0) validation images of every class; the rest trains. A class
    with too few images for its counts plus one training image is a DataError.
    Stratified on class indices of `class_map` (default: identity). Near-duplicate labeled images
    (pHash distance <= `hash_distance`; None turns this off) are split as one unit, so no image
    has a twin on the other side (with counts, a group may take a part one or two images over).
    The result depends only on the set of (image, label) rows, the class map, the sizes and the
    seed -- not on the CSV's row order.
    """
    class_map = class_map or ClassMap.identity(labeled_set.raw_labels)
    if val_per_class is not None and test_per_class is None:
        raise DataError("val_per_class needs test_per_class (per-class counts replace both fractions)")
    if test_per_class is None:
        _check_fractions(test_size, val_size)
    items = sorted(labeled_set.items)
    labels = class_map.encode_many(label for _, label in items)
    unit_of = _split_units(labeled_set.root, items, hash_distance, cache, progress)
    if test_per_class is None:
        rest, val, test = _split_by_fractions(labeled_set, class_map, items, labels, unit_of,
                                              test_size, val_size, seed)
    else:
        rest, val, test = _split_by_counts(labeled_set, class_map, labels, unit_of,
                                           test_per_class, val_per_class or 0, seed)
    part_of_unit = {u: "train" for u in rest} | {u: "val" for u in val} | {u: "test" for u in test}
    split_items = [(image, label, part_of_unit[unit_of[i]]) for i, (image, label) in enumerate(items)]
    return Split(labeled_set.root, split_items, class_map, source=None)


def _split_by_fractions(labeled_set, class_map, items, labels, unit_of, test_size, val_size, seed):
    """(train, val, test) units, by scikit-learn's stratified train_test_split."""
    from sklearn.model_selection import train_test_split

    units = sorted(set(unit_of))
    unit_labels = labels[units]  # a unit is stratified by its first (lowest-sorted) image's class
    try:
        rest, test = train_test_split(units, test_size=test_size, random_state=seed, stratify=unit_labels)
        val = []
        if val_size > 0:
            rest_labels = labels[rest]
            rest, val = train_test_split(rest, test_size=val_size / (1 - test_size),
                                         random_state=seed, stratify=rest_labels)
    except ValueError as e:
        counts = labeled_set.class_counts(class_map)
        raise DataError(f"{labeled_set.source or 'labeled set'}: cannot split {len(items)} images "
                        f"(class counts {counts}) into test {test_size} / val {val_size}: {e}") from None
    return rest, val, test


def _split_by_counts(labeled_set, class_map, labels, unit_of, test_per_class, val_per_class, seed):
    """(train, val, test) units: per class, shuffled (seeded) units fill test, then val, to the counts."""
    if test_per_class < 1 or val_per_class < 0:
        raise DataError(f"per-class counts must be test >= 1 and val >= 0, got test {test_per_class}, "
                        f"val {val_per_class}")
    sizes = Counter(unit_of)
    counts = labeled_set.class_counts(class_map)
    short = {name: n for name, n in counts.items() if n < test_per_class + val_per_class + 1}
    if short:
        raise DataError(
            f"{labeled_set.source or 'labeled set'}: too few images for {test_per_class} test + {val_per_class} val "
            f"per class and at least 1 to train: " + ", ".join(f"class '{c}' has {n}" for c, n in short.items()))
    rng = np.random.default_rng(seed)
    rest, val, test = [], [], []
    for index in range(class_map.num_classes):
        units = sorted(u for u in sizes if labels[u] == index)
        taken = {"test": 0, "val": 0}
        for unit in rng.permutation(units).tolist():
            if taken["test"] < test_per_class:
                part, taken["test"] = test, taken["test"] + sizes[unit]
            elif taken["val"] < val_per_class:
                part, taken["val"] = val, taken["val"] + sizes[unit]
            else:
                part = rest
            part.append(unit)
        if not any(labels[u] == index for u in rest):
            raise DataError(f"{labeled_set.source or 'labeled set'}: class '{class_map.names[index]}' has no image "
                            f"left to train after {test_per_class} test + {val_per_class} val (near-duplicate "
                            "groups count as one); lower the counts")
    return rest, val, test


def _check_fractions(test_size: float, val_size: float) -> None:
    if not 0 < test_size < 1:
        raise DataError(f"test_size must be between 0 and 1, got {test_size}")
    if not 0 <= val_size < 1 or test_size + val_size >= 1:
        raise DataError(f"val_size must be >= 0 with test_size + val_size < 1, got {test_size} + {val_size}")


def _split_units(root: Path, items, hash_distance, cache, progress) -> list[int]:
    """For each item, the index of the first item of its near-duplicate group (itself if none)."""
    unit_of = list(range(len(items)))
    if hash_distance is None:
        return unit_of
    for group in find_near_duplicates([root / image for image, _ in items], hash_distance,
                                      cache=cache, progress=progress):
        for i in group:
            unit_of[i] = group[0]
    return unit_of


def write_split(split: Split, path: str | Path) -> Path:
    """Write the canonical split CSV atomically (same split => byte-identical file)."""
    return atomic_write_bytes(path, split.canonical_csv().encode("utf-8"))


def read_split(
    path: str | Path,
    root: str | Path,
    class_map: ClassMap | None = None,
    check_images: bool = True,
) -> Split:
    """Read and check a split CSV (`image,label,split`); image paths are relative to `root`.

    Same checks as `read_labels_csv`, plus: every `split` is one of train/val/test.
    `class_map` None: identity over the split's labels.
    """
    path, root = Path(path), Path(root)
    rows = read_csv_rows(path, ("image", "label", "split"))
    bad_parts = [(line, f"unknown split '{row['split']}' (expected one of {', '.join(SPLIT_NAMES)})")
                 for line, row in rows if row["split"] not in SPLIT_NAMES]
    items, problems = check_rows(rows, root, class_map, check_images)
    problems += bad_parts
    if problems:
        raise problems_error(path, f"{len(problems)} problem(s)", format_problems(problems))
    part_at = {line: row["split"] for line, row in rows}
    split_items = [(image, label, part_at[line]) for line, image, label in items]
    class_map = class_map or ClassMap.identity(label for _, label, _ in split_items)
    return Split(root, split_items, class_map, source=path)


def check_split_hash(expected: str | None, actual: str, allow_change: bool = False) -> None:
    """Refuse (DataError) to evaluate a run on a split other than the one it recorded.

    `expected` None (nothing recorded) passes. With `allow_change`, a mismatch only warns.
    """
    if expected is None or expected == actual:
        return
    message = (f"refusing to evaluate on a different split: the run recorded split sha256 {expected[:12]}..., "
               f"the split given now is {actual[:12]}...; results on different test images are not "
               f"comparable. Pass --allow-split-change (allow_change=True) to evaluate anyway")
    if not allow_change:
        raise DataError(message)
    warnings.warn(DataWarning(f"split changed: recorded {expected[:12]}..., now {actual[:12]}... "
                              "(allowed by --allow-split-change)"), stacklevel=2)
