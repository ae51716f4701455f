"""Labeled sets: `image,label` CSVs, read and checked row by row."""

from __future__ import annotations

import csv
import io
import posixpath
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.data.classes import ClassMap
from pseudolabel.data.errors import DataError, problems_error
from pseudolabel.images import ImageError, read_image
from pseudolabel.rundir import atomic_write_bytes


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
    rows = read_csv_rows(csv_path, ("image", "label"))
    items, problems = check_rows(rows, root, class_map, check_images)
    if problems:
        raise problems_error(csv_path, f"{len(problems)} problem(s)", format_problems(problems))
    return LabeledSet(root, [(image, label) for _, image, label in items], source=csv_path)


def write_labels_csv(labeled_set: LabeledSet, path: str | Path) -> Path:
    """Write `image,label` rows (in item order) atomically."""
    return atomic_write_bytes(path, labeled_set.to_csv().encode("utf-8"))


def read_csv_rows(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
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


def check_rows(
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


def format_problems(problems: list[tuple[int, str]]) -> list[str]:
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
