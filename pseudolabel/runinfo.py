"""What a run directory does not record itself: its experiment, its data root, its labels CSV.

A run directory holds the recipe (config.json), the split hash and the command (provenance.json),
but not the data folder that the image names of `test_predictions.csv` are relative to. This
module finds it, in this order:

1. what the caller was told (`--image-root`);
2. the experiment file the run belongs to: one named on the recorded command line, or a `*.toml`
   beside the experiment output or up to three folders above it (and in their `experiments/`),
   that `config.load_experiment` reads and whose `output` (or the command's `--output`) is the
   run's parent folder (`run` and `demo` lay runs out that way);
3. a folder above a pool image of the run's pseudo-label table (pool paths there are absolute).

A candidate root counts only if some of the run's test images exist under it; nothing here raises
for a missing piece, callers get None and show a placeholder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from pseudolabel.rundir import read_json

_ANCESTORS = 3   # how far above the experiment output an experiment file may lie
_SAMPLE = 8      # test images checked per candidate root


@dataclass
class RunContext:
    """Where a run's files point: its experiment (or None), data root, labels CSV, class map config."""

    run_dir: Path
    experiment: object | None   # a config.Experiment
    image_root: Path | None
    labels_csv: Path | None
    classes: object = None  # the experiment's data.classes (a name or a table), None when unknown


def find_experiment(run_dir: str | Path):
    """The loaded experiment (`config.load_experiment`) whose output holds `run_dir`, or None."""
    from pseudolabel.config import load_experiment

    run_dir = Path(run_dir).resolve()
    command = _recorded_command(run_dir)
    output_flag = _flag_value(command, ("--output", "--out"))
    for candidate, from_command in _experiment_candidates(run_dir, command):
        try:
            experiment = load_experiment(candidate)
        except Exception:  # noqa: BLE001 -- a TOML that is not this run's experiment is simply skipped
            continue
        output = Path(experiment.output)
        if from_command and output_flag and "run" in command:
            output = Path(output_flag)  # `run EXP.toml --output DIR` put the runs elsewhere
        if output.resolve() == run_dir.parent:
            return experiment
    return None


def _recorded_command(run_dir: Path) -> list[str]:
    try:
        command = read_json(run_dir / "provenance.json").get("command") or []
    except (OSError, ValueError):
        return []
    return [str(a) for a in command]


def _flag_value(args: list[str], names: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(args[:-1]):
        if arg in names:
            return args[i + 1]
    return None


def _experiment_candidates(run_dir: Path, command: list[str]) -> Iterable[tuple[Path, bool]]:
    """(TOML file, named on the command line?) in the order they are tried."""
    seen = set()
    named = [(p, True) for p in _command_tomls(command)]
    for path, from_command in [*named, *((p, False) for p in _nearby_tomls(run_dir.parent))]:
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            yield path, from_command


def _command_tomls(args: list[str]) -> list[Path]:
    """TOML files named on the recorded command line (a relative one read from the current folder
    or from the checkout whose `pseudolabel/__main__.py` ran), and `demo --out DIR`'s experiment."""
    bases = [Path.cwd()]
    if args and Path(args[0]).name == "__main__.py":
        bases.append(Path(args[0]).parent.parent)
    out = []
    for arg in args[1:]:
        if arg.endswith(".toml"):
            out += [Path(arg)] if Path(arg).is_absolute() else [base / arg for base in bases]
    if "demo" in args and _flag_value(args, ("--out",)):
        out.append(Path(_flag_value(args, ("--out",))) / "experiment.toml")
    return out


def _nearby_tomls(output: Path) -> list[Path]:
    folders = [output, *list(output.parents)[:_ANCESTORS]]
    found = []
    for folder in folders:
        for where in (folder, folder / "experiments"):
            try:
                found += sorted(where.glob("*.toml"))
            except OSError:
                continue
    return found


def sample_test_images(run_dir: str | Path, limit: int = _SAMPLE) -> list[str]:
    """The first `limit` image names of a run's test_predictions.csv ([] when absent)."""
    try:
        with open(Path(run_dir) / "test_predictions.csv", newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            return [row[0] for _, row in zip(range(limit), reader) if row]
    except OSError:
        return []


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


def find_image_root(run_dirs: Sequence[str | Path], *, explicit: str | Path | None = None,
                    experiment=None) -> Path | None:
    """The folder the runs' test image names are relative to (see the module doc), or None."""
    names = [n for run in run_dirs for n in sample_test_images(run)][:_SAMPLE]
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    experiments = [experiment] if experiment else [find_experiment(run) for run in run_dirs[:1]]
    candidates += [Path(e.data.root) for e in experiments if e]
    for run in run_dirs:
        for image in pool_image_paths(run, limit=1):
            candidates += list(Path(image).parents)[:_ANCESTORS + 1]
    for root in candidates:
        if names and any((root / n).exists() for n in names):
            return root.resolve()
    if explicit is not None:
        return Path(explicit)
    return candidates[0] if experiments and experiments[0] else None


def run_context(run_dir: str | Path, *, image_root=None, labels_csv=None) -> RunContext:
    """Everything `serve` needs to know about a run beyond its own files."""
    run_dir = Path(run_dir)
    experiment = find_experiment(run_dir)
    root = find_image_root([run_dir], explicit=image_root, experiment=experiment)
    labels = Path(labels_csv) if labels_csv else None
    if labels is None and experiment and experiment.data.labels:
        labels = Path(experiment.data.labels)
    classes = experiment.data.model_dump(exclude_none=True).get("classes") if experiment else None
    return RunContext(run_dir, experiment, root, labels, classes)
