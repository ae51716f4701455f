"""Folder-per-class data (the Keras `image_dataset_from_directory` convention) -> a fixed split,
and a ready experiment.

TRAIN_DIR/<class>/...images (nested folders allowed); the class names are the folder names,
sorted. `split_folders` makes the split (the same files and arguments, the same split); an
experiment's `[data] layout = "folders"` loads it so (`data.task`), and `import_folders` writes into OUT: `labels.csv` (image,label, image paths relative to the
data root: the deepest folder holding the train and test folders), `split.csv` (a given test
folder is the test split as it is; otherwise a stratified, seeded part of the train folder),
copies of the shipped Lite0 teacher and student recipes under `recipes/`, and `experiment.toml`,
which `pseudolabel run` accepts as it is. Every path in the experiment is absolute, so it means
the same whatever folder relative paths are read against.

With `labels_per_class=N` only N images per class stay labeled (train + val); the rest of the
train folder is an unlabeled pool, and their labels go to `pool_truth.csv` (image,label, absolute
image paths), kept aside to measure pseudo-label accuracy: the experiment names it as the pool's
`truth`, so every round's report says how right its pseudo-labels were. Unreadable images are skipped and
listed (as pools do), never fatal; nothing is written when an error stops the import.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.config.schema import held_back_pool_name
from pseudolabel.data.classes import ClassMap
from pseudolabel.data.errors import DataError
from pseudolabel.data.labels import LabeledSet
from pseudolabel.data.splits import SPLIT_NAMES, Split, make_split
from pseudolabel.images import IMAGE_EXTENSIONS, ImageError, read_image
from pseudolabel.rundir import atomic_write_text

SHIPPED_RECIPES = {"teacher": "teachers/efficientnet_lite0.toml", "student": "students/efficientnet_lite0.toml"}
OUTPUT_FILES = ("labels.csv", "split.csv", "experiment.toml", "recipes/teacher.toml", "recipes/student.toml")
TRUTH_FILE = "pool_truth.csv"


@dataclass
class FolderImport:
    """What `import_folders` wrote: the files, the split and what went where."""

    out: Path
    experiment: Path
    split: Split
    pools: list[dict]
    truth: Path | None
    pool_counts: dict[str, int] = field(default_factory=dict)  # {class: images sent to the pool}
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def class_folders(folder: str | Path) -> dict[str, list[Path]]:
    """{class name: image files under folder/<class>/ (recursive, sorted)}, classes sorted.

    Hidden files and folders are ignored, as are files without an image extension.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{folder}: need one sub-folder per class (at least 2), found "
                        f"{len(classes)}{': ' + classes[0].name if classes else ''}")
    found = {d.name: sorted(p for p in d.rglob("*") if _is_image_file(p, d)) for d in classes}
    empty = [name for name, files in found.items() if not files]
    if empty:
        raise DataError(f"{folder}: class folder(s) with no images: {', '.join(empty)} "
                        f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


def _is_image_file(path: Path, top: Path) -> bool:
    parts = path.relative_to(top).parts
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in parts)


def _readable(found: dict[str, list[Path]], skipped: list) -> dict[str, list[Path]]:
    """The images Pillow can decode; the others appended to `skipped` as (file, reason)."""
    from tqdm.auto import tqdm

    out = {}
    with tqdm(total=sum(map(len, found.values())), desc="checking images", unit="img", leave=False,
              disable=None) as bar:
        for name, files in found.items():
            out[name] = []
            for path in files:
                stat = path.stat()
                reason = _decode_problem(str(path), stat.st_size, stat.st_mtime_ns)
                if reason is None:
                    out[name].append(path)
                else:
                    skipped.append((str(path), reason))
                bar.update()
    return out


@functools.lru_cache(maxsize=1 << 17)
def _decode_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """Why the image cannot be decoded (None if it can); remembered per file version, since a
    folder-layout experiment checks its folders at every load (once per seed of a run)."""
    try:
        read_image(path)
    except ImageError as e:
        return e.reason
    return None


@dataclass
class FolderSplit:
    """A folder-per-class data set split: what `import_folders` writes and what an experiment's
    `[data] layout = "folders"` loads (`split_folders`)."""

    train_dir: Path
    root: Path                                   # what the split's image paths are relative to
    split: Split
    held_back: list[tuple[str, str]] = field(default_factory=list)  # (image, class) sent to the pool
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (file, reason)

    @property
    def pool_name(self) -> str:
        return held_back_pool_name(self.train_dir)

    def truth_csv(self) -> str:
        """The held-back images' labels: `image,label` with absolute image paths and class names."""
        return truth_csv([(str(self.root / image), label) for image, label in self.held_back])


def truth_csv(rows) -> str:
    """`image,label` CSV text of (absolute image path, class name) rows (a pool's truth)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "label"])
    writer.writerows(rows)
    return buffer.getvalue()


def split_folders(train_dir, *, test_dir=None, class_map: ClassMap | None = None, test_size: float = 0.2,
                  test_per_class: int | None = None, val_size: float = 0.15, val_per_class: int | None = None,
                  labels_per_class: int | None = None, seed: int = 0) -> FolderSplit:
    """The fixed split of a folder-per-class data set (module doc), a function of the image files
    (their names, classes and readability) and the arguments alone.

    Test: `test_dir` as it is, else a stratified, seeded part of `train_dir` (`test_size`, or
    `test_per_class` images of every class; near-duplicates kept on one side). Then
    `labels_per_class` keeps N training images per class and holds the rest back. Validation:
    `val_per_class` images of every class, else a stratified `val_size` part of what is left.
    `class_map`: its names must be the class folders (default: the folder names, sorted).
    """
    train_dir = Path(train_dir).resolve()
    test_dir = Path(test_dir).resolve() if test_dir is not None else None
    skipped: list[tuple[str, str]] = []
    train = _readable(class_folders(train_dir), skipped)
    test = _readable(class_folders(test_dir), skipped) if test_dir else None
    if test is not None and sorted(test) != sorted(train):
        raise DataError(f"{test_dir}: its classes {sorted(test)} differ from those of {train_dir}: {sorted(train)}")
    class_map = class_map or ClassMap(sorted(train), {n: n for n in sorted(train)})
    if sorted(class_map.names) != sorted(train) or any(class_map.mapping[n] != n for n in class_map.names):
        raise DataError(f"{train_dir}: the classes are its folders {sorted(train)}; class names "
                        f"{list(class_map.names)} (names only, no map) must be exactly those")
    root = Path(_common_root([train_dir] + ([test_dir] if test_dir else [])))
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    train_items = [(rel(p), name) for name in class_map.names for p in train[name]]
    if test is None:
        split = make_split(LabeledSet(root, train_items), class_map, test_size=test_size, val_size=0, seed=seed,
                           test_per_class=test_per_class, val_per_class=0 if test_per_class else None)
        test_items = [(i, lab) for i, lab, part in split.items if part == "test"]
        train_items = [(i, lab) for i, lab, part in split.items if part != "test"]
    else:
        test_items = [(rel(p), name) for name in class_map.names for p in test[name]]
    held_back: list[tuple[str, str]] = []
    if labels_per_class is not None:
        train_items, held_back = _per_class(train_items, class_map.names, labels_per_class, seed, train_dir,
                                            "labels per class")
    if val_per_class:
        val = {i for i, _ in _per_class(train_items, class_map.names, val_per_class, seed, train_dir,
                                        "validation images per class", leave=1)[0]}
    else:
        val = set(_stratified_part(train_items, val_size, seed, train_dir))
    items = [(i, lab, "val" if i in val else "train") for i, lab in train_items]
    split = Split(root, items + [(i, lab, "test") for i, lab in test_items], class_map)
    return FolderSplit(train_dir, root, split, held_back, skipped)


def import_folders(train_dir, out, *, test_dir=None, val_size: float = 0.15, test_size: float = 0.2,
                   test_per_class: int | None = None, val_per_class: int | None = None,
                   labels_per_class: int | None = None, pools: Sequence = (), seed: int = 0,
                   force: bool = False, recipes_dir=None, recipes: dict | None = None) -> FolderImport:
    """Write labels, split, recipes and experiment for a folder-per-class data set (module doc;
    the split is `split_folders`').

    OUT holding other versions of these files (an earlier, different import) is a DataError
    unless `force`. `recipes_dir`: where `teachers/` and `students/` are (default: the source tree);
    `recipes`: {"teacher": path, "student": path} to copy instead of the shipped Lite0 ones.
    """
    out = Path(out).resolve()
    folders = split_folders(train_dir, test_dir=test_dir, test_size=test_size, test_per_class=test_per_class,
                            val_size=val_size, val_per_class=val_per_class, labels_per_class=labels_per_class,
                            seed=seed)
    pool_entries = [{"name": Path(p).resolve().name, "path": str(Path(p).resolve())} for p in pools]
    truth = None
    if folders.held_back:
        truth = out / TRUTH_FILE
        pool_entries.insert(0, {"name": folders.pool_name, "path": str(folders.train_dir), "truth": str(truth)})
    sources = {kind: Path((recipes or {}).get(kind) or shipped_recipe(kind, recipes_dir)) for kind in ("teacher", "student")}
    files = _contents(out, folders, pool_entries, sources)
    different = [p.relative_to(out).as_posix() for p, text in files.items() if p.exists() and p.read_text() != text]
    if different and not force:
        raise DataError(f"{out}: holds a different import ({', '.join(different)} differ); give another "
                        "output folder, or --force to overwrite (runs made from the old files are then stale)")
    for path, text in files.items():
        atomic_write_text(path, text)
    names = folders.split.class_map.names
    counts = {n: sum(1 for _, lab in folders.held_back if lab == n) for n in names} if folders.held_back else {}
    return FolderImport(out, out / "experiment.toml", folders.split, pool_entries, truth, counts, folders.skipped)


def _common_root(folders: list[Path]) -> str:
    return os.path.commonpath([str(f.resolve()) for f in folders])


def _per_class(items, names, n: int, seed: int, source: Path, what: str, leave: int = 0):
    """(N items of every class (seeded choice), the rest); a class with fewer than N + `leave`
    items is a DataError."""
    if n < 1:
        raise DataError(f"{what} must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    keep, rest = [], []
    for name in names:
        mine = sorted(i for i in items if i[1] == name)
        if len(mine) < n + leave:
            raise DataError(f"{source}: class '{name}' has {len(mine)} training image(s), too few for {n} {what}"
                            + (f" and {leave} left to train" if leave else ""))
        order = rng.permutation(len(mine))
        keep += [mine[i] for i in order[:n]]
        rest += [mine[i] for i in order[n:]]
    return sorted(keep), sorted(rest)


def _stratified_part(items, fraction: float, seed: int, source: Path) -> list[str]:
    """Images of a stratified, seeded `fraction` of `items` (the validation part; at least one
    image of every class)."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0:
        return []
    if not fraction < 1:
        raise DataError(f"--val-size must be below 1, got {fraction}")
    images, labels = [i for i, _ in items], [lab for _, lab in items]
    n_val = max(len(set(labels)), round(fraction * len(images)))  # at least one image per class
    try:
        _, val = train_test_split(images, test_size=n_val, random_state=seed, stratify=labels)
    except ValueError as e:
        raise DataError(f"{source}: cannot set aside a validation part of {fraction} from "
                        f"{len(images)} training images: {e}") from None
    return val


def shipped_recipe(kind: str, recipes_dir=None) -> Path:
    """The shipped Lite0 recipe of `kind` ("teacher" / "student"), from the source tree."""
    base = Path(recipes_dir) if recipes_dir else Path(__file__).resolve().parents[2]
    path = base / SHIPPED_RECIPES[kind]
    if not path.is_file():
        raise DataError(f"{path}: shipped {kind} recipe not found (is this a source checkout?)")
    return path


def _contents(out: Path, folders: FolderSplit, pools: list[dict], recipes: dict[str, Path]) -> dict:
    split = folders.split
    labels = io.StringIO()
    writer = csv.writer(labels, lineterminator="\n")
    writer.writerow(["image", "label"])
    writer.writerows((image, label) for image, label, _ in split.items)
    files = {out / "labels.csv": labels.getvalue(), out / "split.csv": split.canonical_csv()}
    for kind, source in recipes.items():
        if not source.is_file():
            raise DataError(f"{source}: no such {kind} recipe")
        files[out / "recipes" / f"{kind}.toml"] = source.read_text()
    if folders.held_back:
        files[out / TRUTH_FILE] = folders.truth_csv()
    files[out / "experiment.toml"] = experiment_toml(out, folders.root, split, pools, folders.train_dir)
    return files


def experiment_toml(out: Path, root: Path, split: Split, pools: list[dict], train_dir: Path) -> str:
    """The experiment file's text; paths absolute, strings quoted as JSON (valid TOML basic strings)."""
    q = json.dumps
    names = list(split.class_map.names)
    sizes = split.sizes()
    lines = [
        f"# Written by `pseudolabel data import-folders` from {train_dir}:",
        f"# {len(names)} classes, split " + ", ".join(f"{part} {sizes[part]}" for part in SPLIT_NAMES) + ".",
        f"# Run it with: pseudolabel run {out / 'experiment.toml'}",
        f"name = {q(train_dir.name)}",
        "seed = 0",
        f"output = {q(str(out / 'runs'))}",
        "",
        "[data]",
        f"root = {q(str(root))}",
        f"labels = {q(str(out / 'labels.csv'))}",
        f"split = {q(str(out / 'split.csv'))}",
        "",
        "[data.classes]  # one class per folder; the raw labels are the folder names",
        f"names = [{', '.join(q(n) for n in names)}]",
    ]
    for pool in pools:
        lines += ["", "[[pools]]", f"name = {q(pool['name'])}", f"path = {q(pool['path'])}"]
        if "truth" in pool:
            lines.append(f"truth = {q(pool['truth'])}  # the held-back labels of this pool's images: "
                         "measures the pseudo-labels, never trains")
    lines += ["", "[teacher]", f"recipe = {q(str(out / 'recipes' / 'teacher.toml'))}", "",
              "[students]", f"recipes = [{q(str(out / 'recipes' / 'student.toml'))}]", ""]
    return "\n".join(lines)
