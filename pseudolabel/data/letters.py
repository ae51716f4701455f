"""The original tutorial's letter string -> a labeled set (House Rooms import)."""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from pathlib import Path, PurePosixPath
from typing import Iterable

from pseudolabel.data.errors import DataError, DataWarning
from pseudolabel.data.labels import LabeledSet
from pseudolabel.images import IMAGE_EXTENSIONS


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
