"""A task: what training and evaluation need from an experiment's `data` table (either layout:
labels CSV / split CSV, or a folder per class)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pseudolabel.data.classes import ClassMap, resolve_class_map
from pseudolabel.data.errors import DataError, DataWarning
from pseudolabel.data.labels import LabeledSet, read_labels_csv
from pseudolabel.data.splits import Split, make_split, read_split


@dataclass
class Task:
    """The labeled side of an experiment: data root, class map, the fixed split, labeled images."""

    root: Path
    class_map: ClassMap
    split: Split
    labeled: LabeledSet
    labels_csv: Path | None = None   # the labels CSV it was read from, if any
    folders: dict | None = None      # layout "folders": {"train": dir, "test": dir or None}
    # layout "folders" with labels_per_class: (absolute image path, class name) of the train
    # folder's images held back as a pool, their labels kept aside (never trained on)
    held_back: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> dict:
        """What a run records of its data (provenance.json), so its images can be found again."""
        described = {"root": str(self.root), "labels": str(self.labels_csv) if self.labels_csv else None,
                     "split": str(self.split.source) if self.split.source else None,
                     "classes": self.class_map.to_config()}
        return {**described, "layout": "folders", **self.folders} if self.folders else described


def load_task(data_cfg: Mapping[str, Any]) -> Task:
    """Build the Task from an experiment's `data` table (see `config.EXPERIMENT_DEFAULTS`).

    With a `split` file (the normal case) the split is read and checked; without one, a split
    is made from the labels CSV with seed 0 and a warning, since results on it are not comparable
    with anyone else's. `labeled` is the union of the split and the labels CSV, so pools exclude
    every labeled image whichever file lists it. `layout = "folders"`: `load_folder_task`.
    """
    if data_cfg.get("layout") == "folders":
        return load_folder_task(data_cfg)
    root = Path(data_cfg["root"])
    labels_csv = Path(data_cfg["labels"]) if data_cfg.get("labels") else None
    labeled = read_labels_csv(labels_csv, root, check_images=False) if labels_csv and labels_csv.exists() else None
    raw = labeled.raw_labels if labeled else ()
    if data_cfg.get("split"):
        split_file = Path(data_cfg["split"])
        peek = read_split(split_file, root, check_images=False)
        class_map = resolve_class_map(data_cfg.get("classes"), peek.labeled_set().raw_labels)
        split = read_split(split_file, root, class_map)
    else:
        if labeled is None:
            raise DataError(f"{labels_csv}: no labels CSV and no split file: give one of them")
        class_map = resolve_class_map(data_cfg.get("classes"), raw)
        warnings.warn(DataWarning(f"no fixed split given: splitting {labels_csv} with seed 0 "
                                  "(write one with `pseudolabel data split` and name it in the experiment)"))
        split = make_split(read_labels_csv(labels_csv, root, class_map), class_map, seed=0)
    if labeled is not None:
        split = with_new_labels(split, labeled, class_map, labels_csv)
    in_split = split.labeled_set()
    if labeled is not None:
        known = {image for image, _ in in_split.items}
        extra = [(image, label) for image, label in labeled.items if image not in known]
        in_split = LabeledSet(root, in_split.items + extra, source=split.source)
    return Task(root, class_map, split, in_split, labels_csv if labeled is not None else None)


def load_folder_task(data_cfg: Mapping[str, Any]) -> Task:
    """The Task of a folder-per-class `data` table (`config.DataConfig`, layout "folders"): the
    split `data.folders.split_folders` makes, the same as `pseudolabel data import-folders` writes
    with the same settings. Unreadable images are skipped with one warning naming them."""
    from pseudolabel.data.folders import split_folders

    classes = data_cfg.get("classes")
    class_map = resolve_class_map(classes) if classes else None
    folders = split_folders(
        data_cfg["train"], test_dir=data_cfg.get("test"), class_map=class_map,
        test_size=data_cfg.get("test_size", 0.2), test_per_class=data_cfg.get("test_per_class"),
        val_size=data_cfg.get("val_size", 0.15), val_per_class=data_cfg.get("val_per_class"),
        labels_per_class=data_cfg.get("labels_per_class"), seed=data_cfg.get("seed", 0))
    if folders.skipped:
        listed = "; ".join(f"{path}: {reason}" for path, reason in folders.skipped[:5])
        more = f" (and {len(folders.skipped) - 5} more)" if len(folders.skipped) > 5 else ""
        warnings.warn(DataWarning(f"{folders.train_dir}: skipped {len(folders.skipped)} unreadable "
                                  f"image(s): {listed}{more}"))
    split = folders.split
    held_back = [(str(folders.root / image), label) for image, label in folders.held_back]
    described = {"train": str(folders.train_dir), "test": data_cfg.get("test")}
    return Task(folders.root, split.class_map, split, split.labeled_set(), None, described, held_back)


def with_new_labels(split: Split, labeled: LabeledSet, class_map: ClassMap, labels_csv: Path) -> Split:
    """The split with the labels CSV's images that it does not hold (labels added since it was
    written, e.g. by `pseudolabel serve`'s "label next") in its TRAIN part: more labels train the
    next run, and the val and test parts stay exactly as they are. Its hash changes with them."""
    known = {image for image, _, _ in split.items}
    new = [(image, label, "train") for image, label in labeled.items
           if image not in known and label in class_map.mapping]
    if not new:
        return split
    warnings.warn(DataWarning(f"{labels_csv}: {len(new)} labeled image(s) not in the split {split.source} join "
                              "its train part (val and test are unchanged)"))
    return Split(split.root, split.items + new, class_map, source=split.source)
