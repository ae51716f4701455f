"""Add answers to a labels CSV (`image,label`) one row at a time, safely under concurrency.

Every append holds two locks -- a lock per file inside this process (threads of a web server)
and an exclusive `fcntl.flock` on a lock file beside the CSV (`.<name>.lock`, other processes) --
then re-reads the CSV, refuses an image it already lists, and writes the old rows plus the new
one to a temporary file renamed into place (`rundir.atomic_write_bytes`). So a reader sees the
old file or the new one, never half a row, and no answer is lost when two arrive together.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import threading
from pathlib import Path
from typing import Iterator

from pseudolabel.rundir import atomic_write_bytes

HEADER = ("image", "label")

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


class LabelsFileError(ValueError):
    """A labels CSV that cannot take the answer (bad header, image already labeled)."""


def lock_path(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(f".{csv_path.name}.lock")


@contextlib.contextmanager
def locked(csv_path: str | Path) -> Iterator[None]:
    """Hold the in-process and the cross-process lock of `csv_path`."""
    path = Path(csv_path).resolve()
    with _locks_guard:
        lock = _locks.setdefault(path, threading.Lock())
    with lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path(path), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def read_labeled(csv_path: str | Path) -> dict[str, str]:
    """image -> label of a labels CSV ({} when it does not exist)."""
    path = Path(csv_path)
    if not path.exists():
        return {}
    return dict(_rows(path.read_text(encoding="utf-8"), path))


def _rows(text: str, path: Path) -> list[tuple[str, str]]:
    reader = csv.reader(io.StringIO(text))
    head = next(reader, None)
    if head is None:
        return []
    if [h.strip() for h in head[:2]] != list(HEADER):
        raise LabelsFileError(f"{path}: expected a header starting image,label; got {head}")
    return [(row[0], row[1] if len(row) > 1 else "") for row in reader if row]


def append_label(csv_path: str | Path, image: str, label: str) -> None:
    """Append `image,label` to `csv_path` (created with a header if absent), atomically.

    Raises LabelsFileError when the CSV already lists `image` or is not a labels CSV.
    """
    path = Path(csv_path)
    if not image or not label or any(c in image + label for c in "\r\n"):
        raise LabelsFileError(f"{path}: image and label must be non-empty single-line text")
    with locked(path):
        data = path.read_bytes() if path.exists() else b""
        text = data.decode("utf-8")
        if text.strip():
            if image in dict(_rows(text, path)):
                raise LabelsFileError(f"{path}: {image} is labeled already")
        else:
            data = _line(HEADER)
        if not data.endswith(b"\n"):
            data += b"\n"
        atomic_write_bytes(path, data + _line((image, label)))


def _line(values) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode("utf-8")
