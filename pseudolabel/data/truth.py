"""The known true classes of pool images (`[[pools]] truth`, `run --pool-truth`), to measure the
pseudo-labels by (`pseudolabels.quality`), never to train on.

A truth file is a CSV `image,label`: the image path (absolute, or relative to the CSV's folder),
its true class NAME (one of the task's classes). Several files join into one mapping, image ->
class index; an image two files (or rows) give different classes is an error, the same class twice
is not. Images that no pool holds are simply never matched. Every problem is one DataError line
naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pseudolabel.data.errors import DataError
from pseudolabel.data.labels import read_csv_rows


def read_truth(paths: Sequence[str | Path], class_names: Sequence[str]) -> dict[str, int]:
    """{absolute image path: class index} from every truth CSV in `paths` (module doc)."""
    names = [str(c) for c in class_names]
    index = {name: i for i, name in enumerate(names)}
    truth: dict[str, int] = {}
    origin: dict[str, str] = {}
    for path in paths:
        path = Path(path)
        unknown = []
        for line, row in read_csv_rows(path, ("image", "label")):
            image, label = row["image"], row["label"]
            if not image:
                raise DataError(f"{path}: line {line}: empty image cell")
            if label not in index:
                unknown.append((line, label))
                continue
            key = truth_key(path.parent / image)
            if key in truth and truth[key] != index[label]:
                raise DataError(f"{path}: line {line}: {image} is '{label}' here but '{names[truth[key]]}' in "
                                f"{origin[key]}")
            truth[key], origin[key] = index[label], f"{path} line {line}"
        if unknown:
            (line, label), more = unknown[0], len(unknown) - 1
            raise DataError(f"{path}: line {line}: unknown class '{label}' (classes: {', '.join(names)})"
                            + (f"; {more} more row(s) with unknown classes" if more else ""))
    return truth


def truth_key(image: str | Path) -> str:
    """How an image path is matched against truth: absolute and normalised (no symlink lookups,
    so a pool of thousands is matched in milliseconds)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(image))))
