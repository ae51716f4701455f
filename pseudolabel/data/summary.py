"""A JSON-ready description of the data (what `pseudolabel data summary` prints)."""

from __future__ import annotations

from typing import Any, Sequence

from pseudolabel.data.classes import ClassMap
from pseudolabel.data.labels import LabeledSet
from pseudolabel.data.pools import Pool, pool_summary
from pseudolabel.data.splits import Split


def summarize(
    labeled_set: LabeledSet,
    class_map: ClassMap,
    split: Split | None = None,
    pools: Sequence[Pool] = (),
    labeled_duplicates: Sequence[Sequence[int]] | None = None,
) -> dict:
    """A JSON-ready description of the data (what `pseudolabel data summary` prints).

    `labeled_duplicates`: groups of indices into `labeled_set.items` (from find_near_duplicates).
    """
    out: dict[str, Any] = {
        "labeled": {
            "root": str(labeled_set.root),
            "source": str(labeled_set.source) if labeled_set.source else None,
            "images": len(labeled_set),
            "raw_counts": labeled_set.raw_counts(),
            "class_counts": labeled_set.class_counts(class_map),
        },
        "classes": {**class_map.to_config(), "positive_index": class_map.positive_index},
    }
    if labeled_duplicates is not None:
        out["labeled"]["near_duplicates"] = [
            [list(labeled_set.items[i]) for i in group] for group in labeled_duplicates]
    if split is not None:
        out["split"] = _split_summary(split, labeled_set)
        if labeled_duplicates is not None:
            out["split"]["duplicates_across_parts"] = _duplicates_across_parts(split, labeled_set, labeled_duplicates)
    out["pools"] = [pool_summary(p) for p in pools]
    return out


def _split_summary(split: Split, labeled_set: LabeledSet) -> dict:
    """Sizes per part and class, and how the split and the labels CSV disagree (if they do)."""
    in_split = {image: label for image, label, _ in split.items}
    in_labels = dict(labeled_set.items)
    return {
        "source": str(split.source) if split.source else None,
        "hash": split.hash,
        "sizes": split.sizes(),
        "class_counts": split.class_counts(),
        "labeled_not_in_split": sorted(set(in_labels) - set(in_split)),
        "split_not_in_labels": sorted(set(in_split) - set(in_labels)),
        "label_differs": sorted(i for i in set(in_split) & set(in_labels) if in_split[i] != in_labels[i]),
    }


def _duplicates_across_parts(split: Split, labeled_set: LabeledSet, groups) -> list[list[str]]:
    """Near-duplicate groups whose images sit in different parts (a twin leaks across)."""
    part_of = {image: part for image, _, part in split.items}
    out = []
    for group in groups:
        images = [labeled_set.items[i][0] for i in group]
        if len({part_of.get(image) for image in images if image in part_of}) > 1:
            out.append([f"{image} ({part_of.get(image, 'not in split')})" for image in images])
    return out
