"""Where a run's files point: the data its test and pool images come from, its labels CSV.

Every run records its data in provenance.json (`data`: root, labels CSV, split, classes; written
by `lifecycle.TrainingRun`), so the image names of `test_predictions.csv` (relative to the data
root) can be found again, and `serve` knows which labels CSV to append to. A caller may name the
root itself (`--image-root`); nothing here raises for a missing piece: callers get None and show
a placeholder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pseudolabel.rundir import read_json


@dataclass
class RunContext:
    """What a run's files point to: data root, labels CSV, class map config (None when unknown)."""

    run_dir: Path
    image_root: Path | None
    labels_csv: Path | None
    classes: object = None  # the class map the run recorded ({names, map, positive})


def recorded_data(run_dir: str | Path) -> dict:
    """The `data` a run recorded in provenance.json ({} for a run that recorded none)."""
    try:
        return read_json(Path(run_dir) / "provenance.json").get("data") or {}
    except (OSError, ValueError):
        return {}


def pool_image_paths(run_dir: str | Path, limit: int | None = None) -> list[str]:
    """Image paths of a run's pseudo_labels.csv (the pools it trained on), [] when it has none."""
    try:
        with open(Path(run_dir) / "pseudo_labels.csv", newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            rows = (row[0] for row in reader if row)
            return [p for _, p in zip(range(limit), rows)] if limit else list(rows)
    except OSError:
        return []


def resolve_image(name: str, root: str | Path | None) -> Path | None:
    """An image name from a prediction file as a path: absolute names as they are, else under `root`."""
    path = Path(name)
    if path.is_absolute():
        return path
    return Path(root) / path if root is not None else None


def find_image_root(run_dirs: Sequence[str | Path], *, explicit: str | Path | None = None) -> Path | None:
    """The folder the runs' test image names are relative to: `explicit`, else the first data
    root a run recorded, else None."""
    if explicit is not None:
        return Path(explicit).resolve()
    for run in run_dirs:
        root = recorded_data(run).get("root")
        if root:
            return Path(root)
    return None


def run_context(run_dir: str | Path, *, image_root=None, labels_csv=None) -> RunContext:
    """Everything `serve` needs to know about a run beyond its own files."""
    run_dir = Path(run_dir)
    data = recorded_data(run_dir)
    labels = labels_csv or data.get("labels")
    return RunContext(run_dir, find_image_root([run_dir], explicit=image_root),
                      Path(labels) if labels else None, data.get("classes"))
