"""Labeled sets, class maps, unlabeled pools and fixed splits.

Everything here is plain Python + NumPy (+ scikit-learn for splitting, imported when used): no
TensorFlow. Pixels are only touched through `pseudolabel.images.read_image`.

- A labeled set is a CSV `image,label` with image paths relative to a data root (default: the
  CSV's folder). `read_labels_csv` checks every row and reports ALL bad rows at once, each with
  its file and line number (a missing column, a missing or unreadable image, an unknown label, an
  image listed twice).
- A `ClassMap` turns raw labels (`M`, `O`, `N`) into class names and indices. The default House
  Rooms task is Modern vs not-Modern (`HOUSE_ROOMS_CLASSES`).
- A split is fixed once and kept as a file: `image,label,split`, sorted by image, written by
  `write_split`. Its sha256 (`Split.hash`) is what runs record; `check_split_hash` refuses to
  compare results across different splits. Near-duplicate labeled images (the House Rooms data
  has several) are kept in the same part, so a test image never has a twin in training.
- An unlabeled pool is a folder scanned recursively (`scan_pool`), then `filter_pool` drops every
  labeled image and every near-duplicate (perceptual hash) of ANY labeled image -- train, val or
  test: a test image must never reach training through a pool -- and skips unreadable files
  (listed, never fatal).

Problems the user must fix raise `DataError`; things worth knowing but not fatal (an empty pool,
letters that cover only part of a folder) are `DataWarning`s.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
import re
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pseudolabel.images import IMAGE_EXTENSIONS, ImageError, perceptual_hash, read_image
from pseudolabel.rundir import atomic_write_bytes, atomic_write_json

SPLIT_NAMES = ("train", "val", "test")

# Largest pHash Hamming distance treated as "the same picture". Measured on House Rooms (5201
# images, 13.5M pairs): distances are 0 (121 pairs), 2 (16), 4 (2), 6 (3), 8 (11), then 10 (30),
# 12 (193), ... Pairs up to 8 are re-encodes or near-identical shots (2 unrelated pairs among the
# 14 at 6-8); from 10 on they are mostly unrelated. A false positive costs one pool image, a miss
# can leak a test image into training, so the threshold sits at the top of the duplicate mass.
DEFAULT_HASH_DISTANCE = 8

# Reasons recorded in Pool.excluded (the near-duplicate reason starts with NEAR_DUPLICATE).
LABELED = "labeled image"
NEAR_DUPLICATE = "near-duplicate of labeled image"
IN_EARLIER_POOL = "already in pool"

_MAX_LISTED_PROBLEMS = 25


class DataError(ValueError):
    """Bad input data. The message names the file (and CSV line) and the problem.

    `problems` lists every individual problem when several were found at once.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


class DataWarning(UserWarning):
    """Not fatal, but the user should hear about it (empty pool, partial letter coverage...)."""


def _problems_error(source: str | Path, summary: str, problems: Sequence[str]) -> DataError:
    """One DataError listing many problems (the first _MAX_LISTED_PROBLEMS in the message)."""
    shown = "\n  ".join(problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return DataError(f"{source}: {summary}:\n  {shown}{tail}", problems)


# --------------------------------------------------------------------------------------------
# Class maps
# --------------------------------------------------------------------------------------------


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

    def raw_labels_of(self, name: str) -> list[str]:
        return sorted(r for r, n in self.mapping.items() if n == name)


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


# --------------------------------------------------------------------------------------------
# Labeled sets
# --------------------------------------------------------------------------------------------


@dataclass
class LabeledSet:
    """Images with raw labels. `items` are (image path relative to `root`, raw label)."""

    root: Path
    items: list[tuple[str, str]]
    source: Path | None = None  # the CSV it was read from, if any

    def __len__(self) -> int:
        return len(self.items)

    @property
    def images(self) -> list[str]:
        return [image for image, _ in self.items]

    @property
    def raw_labels(self) -> list[str]:
        return [label for _, label in self.items]

    @property
    def paths(self) -> list[Path]:
        """Absolute image paths, in item order."""
        return [self.root / image for image in self.images]

    def labels(self, class_map: ClassMap) -> np.ndarray:
        """Class indices, in item order."""
        return class_map.encode_many(self.raw_labels)

    def raw_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.raw_labels).items()))

    def class_counts(self, class_map: ClassMap) -> dict[str, int]:
        counts = Counter(class_map.mapping[r] for r in self.raw_labels)
        return {name: counts.get(name, 0) for name in class_map.names}

    def to_csv(self) -> str:
        """`image,label` rows in item order, '\n' line ends (what `write_labels_csv` writes)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "label"])
        writer.writerows(self.items)
        return buffer.getvalue()


def read_labels_csv(
    csv_path: str | Path,
    root: str | Path | None = None,
    class_map: ClassMap | None = None,
    check_images: bool = True,
) -> LabeledSet:
    """Read and check a labels CSV (`image,label`; other columns are ignored).

    `root` (default: the CSV's folder) is what image paths are relative to. Every problem is
    collected and raised together as one DataError naming the file and line of each: missing
    image files, images listed twice, labels unknown to `class_map` (when given), and, with
    `check_images`, images that cannot be decoded.
    """
    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    rows = _read_csv(csv_path, ("image", "label"))
    items, problems = _check_rows(rows, root, class_map, check_images)
    if problems:
        raise _problems_error(csv_path, f"{len(problems)} problem(s)", _format_problems(problems))
    return LabeledSet(root, [(image, label) for _, image, label in items], source=csv_path)


def write_labels_csv(labeled_set: LabeledSet, path: str | Path) -> Path:
    """Write `image,label` rows (in item order) atomically."""
    return atomic_write_bytes(path, labeled_set.to_csv().encode("utf-8"))


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; DataError for a missing file, header or column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise DataError(f"{path}: empty file, expected a header line '{','.join(required)}'")
            reader.fieldnames = header
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)} "
                    f"(line 1 has: {', '.join(header)}; expected: {','.join(required)})")
            rows = []
            for row in reader:
                cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
                if any(cells.values()):  # blank lines are not rows
                    rows.append((reader.line_num, cells))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV file") from None
    except PermissionError:
        raise DataError(f"{path}: cannot read file: permission denied") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return rows


def _normalize_image_path(text: str) -> str:
    """A CSV image cell as a canonical relative POSIX path ("./a//b.jpg" -> "a/b.jpg")."""
    return posixpath.normpath(text.replace("\\", "/"))


def _check_rows(
    rows: list[tuple[int, dict[str, str]]],
    root: Path,
    class_map: ClassMap | None,
    check_images: bool,
) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    """(line, image, label) for each row, and every problem found as (line, text)."""
    items, problems, first = [], [], {}
    for line, row in rows:
        image, label = row.get("image", ""), row.get("label", "")
        if not image or not label:
            problems.append((line, f"empty {'image' if not image else 'label'} cell"))
            continue
        image = _normalize_image_path(image)
        if image in first:
            first_line, first_label = first[image]
            labels = f" (labels '{first_label}' and '{label}')" if label != first_label else ""
            problems.append((line, f"duplicate row: {image} is already on line {first_line}{labels}"))
            continue
        first[image] = (line, label)
        if class_map is not None and label not in class_map.mapping:
            problems.append((line, f"{image}: unknown label '{label}' "
                                   f"(known labels: {', '.join(sorted(class_map.mapping))})"))
        problem = _image_problem(root / image, check_images)
        if problem:
            problems.append((line, f"{image}: {problem}"))
        items.append((line, image, label))
    return items, problems


def _format_problems(problems: list[tuple[int, str]]) -> list[str]:
    return [f"line {line}: {text}" for line, text in sorted(problems, key=lambda p: p[0])]


def _image_problem(path: Path, decode: bool) -> str | None:
    """Why `path` is not a usable image (None if it is). Without `decode`, only existence."""
    if not decode:
        return None if path.is_file() else ("no such file" if not path.exists() else "not a file")
    try:
        read_image(path)
    except ImageError as e:
        return e.reason
    return None


# --------------------------------------------------------------------------------------------
# The original tutorial's letter string
# --------------------------------------------------------------------------------------------

# labels_original.txt -> labels.csv for House Rooms (see the data README): two labeled images are
# missing from every copy (their letters are consumed by a gap), three stay ambiguous (skipped).
HOUSE_ROOMS_LETTER_FIXES = {
    "missing": ("bed_114.jpg", "bed_485.jpg"),
    "skip": ("bed_113.jpg", "bed_486.jpg", "bed_487.jpg"),
}


def labels_from_letters(
    letters_file: str | Path,
    folder: str | Path,
    root: str | Path | None = None,
    *,
    skip: Iterable[str] = (),
    missing: Iterable[str] = (),
) -> LabeledSet:
    """Labels from a string of class letters, one per image of `folder` in numeric name order.

    The tutorial's format: letter i labels the i-th image when the folder's images are sorted by
    the integer in their names (bed_2 before bed_10). Whitespace in the file is ignored.
    - `missing`: names of images that held a letter but are absent from the folder; each is put
      back into the order by its number, consumes its letter, and gets no row.
    - `skip`: names of images in the folder whose letter is consumed but whose row is left out
      (e.g. labels known to be misaligned or ambiguous).
    Fewer letters than images: the letters label the first images; a DataWarning says which
    range is covered. More letters than images: DataError. Paths are relative to `root`
    (default: the folder's parent, so rows read "Bedroom/bed_1.jpg").
    """
    letters_file, folder = Path(letters_file), Path(folder)
    root = Path(root) if root is not None else folder.parent
    skip, missing = list(skip), list(missing)
    letters = _read_letters(letters_file)
    present = _numbered_images(folder)
    skip_names = _present_names(skip, present, folder)
    sequence = _insert_missing(present, _missing_names(missing, present, folder))
    _check_letter_count(letters_file, letters, sequence, folder, len(present))
    covered = sequence[: len(letters)]
    _check_fixes_covered(letters_file, skip_names, missing, covered)
    prefix = Path(os.path.relpath(folder, root)).as_posix()
    items = [
        (posixpath.normpath(f"{prefix}/{name}"), letter)
        for (name, is_missing), letter in zip(covered, letters)
        if not is_missing and name not in skip_names
    ]
    return LabeledSet(root, items)


def _read_letters(path: Path) -> str:
    try:
        letters = "".join(path.read_text(encoding="utf-8").split())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read letters: {e}") from None
    if not letters:
        raise DataError(f"{path}: no letters in the file")
    return letters


def _name_number(name: str) -> int | None:
    """The last integer in a file name's stem (bed_12.jpg -> 12), or None."""
    numbers = re.findall(r"\d+", PurePosixPath(name).stem)
    return int(numbers[-1]) if numbers else None


def _numbered_images(folder: Path) -> list[str]:
    """Image names directly in `folder`, sorted by their number; DataError if that is ambiguous."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
    names = [p.name for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    if not names:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    unnumbered = sorted(n for n in names if _name_number(n) is None)
    if unnumbered:
        raise DataError(f"{folder}: cannot order images without a number in their name: {unnumbered[:10]}")
    by_number: dict[int, list[str]] = {}
    for name in names:
        by_number.setdefault(_name_number(name), []).append(name)
    clashes = [sorted(v) for v in by_number.values() if len(v) > 1]
    if clashes:
        raise DataError(f"{folder}: several images share a number, the order is ambiguous: {clashes[:5]}")
    return sorted(names, key=_name_number)


def _present_names(names: Iterable[str], present: list[str], folder: Path) -> set[str]:
    """Resolve `skip` names (with or without extension) to names in the folder."""
    by_stem = {PurePosixPath(n).stem: n for n in present}
    resolved = set()
    for name in names:
        found = name if name in present else by_stem.get(name)
        if found is None:
            raise DataError(f"{folder}: skipped image '{name}' is not in the folder "
                            "(an image absent from the folder belongs in 'missing')")
        resolved.add(found)
    return resolved


def _missing_names(names: Iterable[str], present: list[str], folder: Path) -> list[str]:
    stems = {PurePosixPath(n).stem for n in present}
    out = []
    for name in names:
        if name in present or PurePosixPath(name).stem in stems:
            raise DataError(f"{folder}: '{name}' is given as missing but is in the folder (use 'skip')")
        if _name_number(name) is None:
            raise DataError(f"missing image '{name}' has no number in its name to place it by")
        out.append(name)
    return out


def _insert_missing(present: list[str], missing: list[str]) -> list[tuple[str, bool]]:
    """(name, is_missing) in number order; a missing image goes where its number puts it."""
    numbers = {_name_number(n) for n in present}
    clash = [m for m in missing if _name_number(m) in numbers]
    if clash:
        raise DataError(f"missing image(s) {clash} share a number with an image in the folder")
    entries = [(n, False) for n in present] + [(m, True) for m in missing]
    return sorted(entries, key=lambda e: _name_number(e[0]))


def _check_letter_count(letters_file: Path, letters: str, sequence: list, folder: Path, n_present: int) -> None:
    n_letters, n_seq = len(letters), len(sequence)
    gaps = n_seq - n_present
    counted = f"{n_present} images in {folder}" + (f" (+{gaps} missing)" if gaps else "")
    if n_letters > n_seq:
        raise DataError(f"{letters_file}: {n_letters} letters but only {counted}: "
                        f"{n_letters - n_seq} letters have no image")
    if n_letters < n_seq:
        last = sequence[n_letters - 1][0]
        warnings.warn(DataWarning(
            f"{letters_file}: {n_letters} letters for {counted}: the letters cover the first "
            f"{n_letters} in number order (up to {last}); the other {n_seq - n_letters} images stay unlabeled"),
            stacklevel=3)


def _check_fixes_covered(letters_file: Path, skip_names: set[str], missing: Iterable[str], covered) -> None:
    """A skip/missing name past the letters' reach changes nothing: most likely a typo."""
    reach = {name for name, _ in covered}
    stray = sorted((skip_names | set(missing)) - reach)
    if stray:
        raise DataError(f"{letters_file}: {stray} lie beyond the images the letters cover "
                        f"(last covered: {covered[-1][0]}); check the names")


# --------------------------------------------------------------------------------------------
# Perceptual hashes and near-duplicates
# --------------------------------------------------------------------------------------------


class HashCache:
    """64-bit pHash per image file, keyed by resolved path, size and mtime.

    In memory by default (one per process, `default_hash_cache()`); with `path`, loaded from and
    `save()`d to a JSON file, so repeated runs on a large pool skip the decoding (~2 ms/image).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._hashes: dict[str, tuple[int, int, int]] = {}  # path -> (size, mtime_ns, hash)
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
            self._hashes = {k: (int(s), int(m), int(h, 16)) for k, (s, m, h) in raw["hashes"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(DataWarning(f"{self.path}: ignoring unreadable hash cache ({e})"), stacklevel=3)

    def get(self, path: str | Path) -> int:
        """The image's pHash as an int; ImageError if it cannot be read."""
        resolved = Path(path).resolve()
        try:
            st = resolved.stat()
        except OSError:
            st = None
        key = str(resolved)
        if st is not None:
            cached = self._hashes.get(key)
            if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
                return cached[2]
        value = int(str(perceptual_hash(read_image(path))), 16)
        if st is not None:
            with self._lock:
                self._hashes[key] = (st.st_size, st.st_mtime_ns, value)
        return value

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            hashes = {k: [s, m, f"{h:016x}"] for k, (s, m, h) in sorted(self._hashes.items())}
        atomic_write_json(self.path, {"kind": "pseudolabel phash cache", "hashes": hashes})


_DEFAULT_CACHE = HashCache()


def default_hash_cache() -> HashCache:
    return _DEFAULT_CACHE


def _hash_images(paths: Sequence[Path], cache: HashCache | None, progress: bool | None, what: str):
    """(hashes, errors): hash per path (None if unreadable), and {index: ImageError}."""
    cache = cache or _DEFAULT_CACHE

    def one(path):
        try:
            return cache.get(path)
        except ImageError as e:
            return e

    from tqdm.auto import tqdm

    # Decoding releases the GIL for the most part: two threads are ~1.5x faster on 2 cores.
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(one, paths), total=len(paths), desc=what, unit="img",
                            disable=None if progress is None else not progress, leave=False))
    errors = {i: r for i, r in enumerate(results) if isinstance(r, ImageError)}
    hashes = [None if isinstance(r, ImageError) else r for r in results]
    return hashes, errors


def _min_distances(query: np.ndarray, reference: np.ndarray, chunk: int = 4096):
    """For each query hash: (smallest Hamming distance to a reference hash, its index)."""
    best = np.full(len(query), 65, dtype=np.int64)
    where = np.zeros(len(query), dtype=np.int64)
    if len(reference) == 0:
        return best, where
    for start in range(0, len(query), chunk):
        block = np.bitwise_count(query[start:start + chunk, None] ^ reference[None, :])
        where[start:start + chunk] = block.argmin(axis=1)
        best[start:start + chunk] = block.min(axis=1)
    return best, where


def find_near_duplicates(
    paths: Sequence[str | Path],
    hash_distance: int = DEFAULT_HASH_DISTANCE,
    *,
    cache: HashCache | None = None,
    progress: bool | None = None,
) -> list[list[int]]:
    """Groups (indices into `paths`, sorted) of images within `hash_distance` of each other.

    Transitive (union-find): a~b and b~c puts a, b, c together. Only groups of 2+ are returned.
    DataError if an image cannot be read.
    """
    paths = [Path(p) for p in paths]
    hashes, errors = _hash_images(paths, cache, progress, "hashing labeled images")
    if errors:
        raise _problems_error("near-duplicate check", "unreadable images", [str(e) for e in errors.values()])
    h = np.array(hashes, dtype=np.uint64)
    parent = list(range(len(h)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(h)):
        close = np.nonzero(np.bitwise_count(h[i + 1:] ^ h[i]) <= hash_distance)[0] + i + 1
        for j in close:
            parent[find(int(j))] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(h)):
        groups.setdefault(find(i), []).append(i)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


# --------------------------------------------------------------------------------------------
# Fixed splits
# --------------------------------------------------------------------------------------------


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
    hash_distance: int | None = DEFAULT_HASH_DISTANCE,
    cache: HashCache | None = None,
    progress: bool | None = None,
) -> Split:
    """A stratified, deterministic train/val/test split (fractions of the whole labeled set).

    Stratified on class indices of `class_map` (default: identity). Near-duplicate labeled images
    (pHash distance <= `hash_distance`; None turns this off) are split as one unit, so no image
    has a twin on the other side. The result depends only on the set of (image, label) rows, the
    class map, the fractions and the seed -- not on the CSV's row order.
    """
    from sklearn.model_selection import train_test_split

    class_map = class_map or ClassMap.identity(labeled_set.raw_labels)
    _check_fractions(test_size, val_size)
    items = sorted(labeled_set.items)
    labels = class_map.encode_many(label for _, label in items)
    unit_of = _split_units(labeled_set.root, items, hash_distance, cache, progress)
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
    part_of_unit = {u: "train" for u in rest} | {u: "val" for u in val} | {u: "test" for u in test}
    split_items = [(image, label, part_of_unit[unit_of[i]]) for i, (image, label) in enumerate(items)]
    return Split(labeled_set.root, split_items, class_map, source=None)


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
    rows = _read_csv(path, ("image", "label", "split"))
    bad_parts = [(line, f"unknown split '{row['split']}' (expected one of {', '.join(SPLIT_NAMES)})")
                 for line, row in rows if row["split"] not in SPLIT_NAMES]
    items, problems = _check_rows(rows, root, class_map, check_images)
    problems += bad_parts
    if problems:
        raise _problems_error(path, f"{len(problems)} problem(s)", _format_problems(problems))
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


# --------------------------------------------------------------------------------------------
# Unlabeled pools
# --------------------------------------------------------------------------------------------


@dataclass
class Pool:
    """Unlabeled images of one folder. After `filter_pool`, `images` are the kept ones.

    `excluded`: (path, reason) of labeled images, near-duplicates of labeled ones, and (by
    `prepare_pools`) files an earlier pool already holds.
    `skipped`: (path, reason) of files or folders that could not be read (never fatal).
    """

    name: str
    folder: Path
    images: list[Path]
    glob: str | None = None
    excluded: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    filtered: bool = False  # True once filter_pool has checked it against the labeled images
    hash_distance: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> dict[str, int]:
        """found = kept + excluded + skipped; excluded split into labeled / near-duplicate /
        in an earlier pool."""
        labeled = sum(1 for _, reason in self.excluded if reason == LABELED)
        earlier = sum(1 for _, reason in self.excluded if reason.startswith(IN_EARLIER_POOL))
        return {
            "found": len(self.images) + len(self.excluded) + len(self.skipped),
            "kept": len(self.images),
            "excluded": len(self.excluded),
            "excluded_labeled": labeled,
            "excluded_near_duplicate": len(self.excluded) - labeled - earlier,
            "excluded_in_earlier_pool": earlier,
            "skipped": len(self.skipped),
        }


def scan_pool(folder: str | Path, glob: str | None = None, name: str | None = None) -> Pool:
    """Find the images under `folder` (recursively), sorted by path.

    Images: extensions in IMAGE_EXTENSIONS, any case. Hidden files and folders (".name", e.g.
    .ipynb_checkpoints copies) are ignored. `glob` keeps paths whose trailing part matches
    (PurePath.match: "bed_*.jpg" tests the name, "Bedroom/*.jpg" the last two parts).
    A missing or unreadable folder is a DataError; an empty result is a DataWarning (a pool of
    zero images is legal, just rarely what was meant). Unreadable subfolders go to `skipped`.
    Files are not decoded here: `filter_pool` does that.
    """
    folder = Path(folder)
    name = name or folder.name
    _check_pool_folder(folder)
    images, skipped = [], []

    def unreadable(error: OSError):
        skipped.append((Path(error.filename), f"cannot read folder: {error.strerror or error}"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            path = Path(dirpath, filename)
            if _is_pool_image(path, folder, glob):
                images.append(path)
    if not images:
        matching = f" matching '{glob}'" if glob else ""
        warnings.warn(DataWarning(f"pool '{name}' ({folder}): no images{matching} "
                                  f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"), stacklevel=2)
    return Pool(name, folder, sorted(images), glob=glob, skipped=sorted(skipped))


def _check_pool_folder(folder: Path) -> None:
    if not folder.exists():
        raise DataError(f"{folder}: pool folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: pool path is not a folder")
    try:
        with os.scandir(folder):
            pass
    except PermissionError:
        raise DataError(f"{folder}: cannot read pool folder: permission denied") from None
    except OSError as e:
        raise DataError(f"{folder}: cannot read pool folder: {e.strerror or e}") from None


def _is_pool_image(path: Path, folder: Path, glob: str | None) -> bool:
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    return glob is None or PurePosixPath(path.relative_to(folder).as_posix()).match(glob)


def filter_pool(
    pool: Pool,
    labeled_paths: Iterable[str | Path],
    hash_distance: int | None = DEFAULT_HASH_DISTANCE,
    *,
    cache: HashCache | None = None,
    progress: bool | None = None,
) -> Pool:
    """A new Pool without labeled images and near-duplicates of them; unreadable files skipped.

    Pass ALL labeled images (train, val and test). A pool image is excluded when its resolved
    path is a labeled image, or its pHash is within `hash_distance` of a labeled image's
    (None: compare paths only, decode nothing). Every remaining image is decoded once to hash
    it; those that fail go to `skipped` with the reason. A labeled image that cannot be read is
    a DataError (it could not be checked for twins).
    """
    labeled = [Path(p) for p in labeled_paths]
    labeled_resolved = {p.resolve() for p in labeled}
    excluded = list(pool.excluded)
    candidates = []
    for path in pool.images:
        if path.resolve() in labeled_resolved:
            excluded.append((path, LABELED))
        else:
            candidates.append(path)
    kept, skipped = candidates, list(pool.skipped)
    if hash_distance is not None and candidates:
        kept, near, unreadable = _drop_near_duplicates(candidates, labeled, hash_distance, cache, progress, pool.name)
        excluded += near
        skipped += unreadable
    return Pool(pool.name, pool.folder, kept, glob=pool.glob, excluded=sorted(excluded),
                skipped=sorted(skipped), filtered=True, hash_distance=hash_distance)


def _drop_near_duplicates(candidates, labeled, hash_distance, cache, progress, pool_name):
    """(kept, excluded near-duplicates, skipped unreadable) among `candidates`."""
    labeled_hashes, errors = _hash_images(labeled, cache, progress, "hashing labeled images")
    if errors:
        raise _problems_error("labeled images", "cannot check the pool for duplicates of unreadable images",
                              [str(e) for e in errors.values()])
    pool_hashes, pool_errors = _hash_images(candidates, cache, progress, f"hashing pool {pool_name}")
    readable = [i for i in range(len(candidates)) if i not in pool_errors]
    query = np.array([pool_hashes[i] for i in readable], dtype=np.uint64)
    distance, nearest = _min_distances(query, np.array(labeled_hashes, dtype=np.uint64))
    kept, near = [], []
    for k, i in enumerate(readable):
        if distance[k] <= hash_distance:
            near.append((candidates[i], f"{NEAR_DUPLICATE} {labeled[nearest[k]]} (phash distance {distance[k]})"))
        else:
            kept.append(candidates[i])
    skipped = [(candidates[i], e.reason) for i, e in pool_errors.items()]
    return kept, near, skipped


def labeled_folders(labeled_set: LabeledSet) -> list[Path]:
    """The folders holding labeled images: the natural default pools (same domain)."""
    return sorted({path.parent for path in labeled_set.paths})


def write_pool_report(pools: Sequence[Pool], directory: str | Path, name: str = "pools") -> dict[str, Path]:
    """Write `{name}.csv` (pool,image,status,reason: one row per image found) and `{name}.json`
    (counts and the excluded/skipped lists per pool) into `directory` (a path or a RunDir)."""
    directory = Path(getattr(directory, "path", directory))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["pool", "image", "status", "reason"])
    for pool in pools:
        rows = ([(p, "kept", "") for p in pool.images] + [(p, "excluded", r) for p, r in pool.excluded]
                + [(p, "skipped", r) for p, r in pool.skipped])
        writer.writerows((pool.name, str(p), status, reason) for p, status, reason in sorted(rows))
    csv_path = atomic_write_bytes(directory / f"{name}.csv", buffer.getvalue().encode("utf-8"))
    json_path = atomic_write_json(directory / f"{name}.json", {"pools": [pool_summary(p) for p in pools]})
    return {"csv": csv_path, "json": json_path}


def prepare_pools(pool_cfgs: Sequence[Mapping[str, Any]], labeled_paths: Iterable[str | Path],
                  report_dir: str | Path, report_name: str = "pools") -> list[Pool]:
    """Scan and filter every pool of an experiment (`[[pools]]` tables: name, path, glob) against
    ALL labeled images, drop files an earlier pool already holds (a folder given twice must not
    double its images), write the report and print one line per pool."""
    if not pool_cfgs:
        raise DataError("no unlabeled pools given ([[pools]] in the experiment, or --pool DIR)")
    labeled = list(labeled_paths)
    pools, taken = [], {}
    for cfg in pool_cfgs:
        pool = filter_pool(scan_pool(cfg["path"], glob=cfg.get("glob"), name=cfg.get("name")), labeled)
        kept = []
        for image in pool.images:
            first = taken.setdefault(Path(image).resolve(), pool.name)
            if first == pool.name:
                kept.append(image)
            else:
                pool.excluded.append((image, f"{IN_EARLIER_POOL} {first}"))
        pool.images = kept
        pools.append(pool)
    write_pool_report(pools, report_dir, name=report_name)
    for pool in pools:
        print(f"pool {pool.name}: " + ", ".join(f"{k} {v}" for k, v in pool.counts().items()))
    return pools


def pool_summary(pool: Pool) -> dict:
    """Counts and the excluded/skipped lists of one pool, JSON-ready."""
    return {
        "name": pool.name,
        "folder": str(pool.folder),
        "glob": pool.glob,
        "filtered": pool.filtered,
        "hash_distance": pool.hash_distance,
        "counts": pool.counts(),
        "excluded": [[str(p), r] for p, r in pool.excluded],
        "skipped": [[str(p), r] for p, r in pool.skipped],
    }


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# A task: what training and evaluation need from an experiment's `data` table
# --------------------------------------------------------------------------------------------


@dataclass
class Task:
    """The labeled side of an experiment: data root, class map, the fixed split, labeled images."""

    root: Path
    class_map: ClassMap
    split: Split
    labeled: LabeledSet
    allow_split_change: bool = False

    def check_split(self, recorded_hash: str | None) -> None:
        """Refuse to evaluate a run that recorded another split (unless allowed)."""
        check_split_hash(recorded_hash, self.split.hash, self.allow_split_change)


def load_task(data_cfg: Mapping[str, Any]) -> Task:
    """Build the Task from an experiment's `data` table (see `config.EXPERIMENT_DEFAULTS`).

    With a `split` file (the normal case) the split is read and checked; without one, a split
    is made from the labels CSV with seed 0 and a warning, since results on it are not comparable
    with anyone else's. `labeled` is the union of the split and the labels CSV, so pools exclude
    every labeled image whichever file lists it.
    """
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
    in_split = split.labeled_set()
    if labeled is not None:
        known = {image for image, _ in in_split.items}
        extra = [(image, label) for image, label in labeled.items if image not in known]
        in_split = LabeledSet(root, in_split.items + extra, source=split.source)
    return Task(root, class_map, split, in_split, bool(data_cfg.get("allow_split_change", False)))
