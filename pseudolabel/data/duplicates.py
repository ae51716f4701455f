"""Perceptual hashes of image files and near-duplicate detection."""

from __future__ import annotations

import json
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.data.errors import DataWarning, problems_error
from pseudolabel.images import ImageError, perceptual_hash, read_image
from pseudolabel.rundir import atomic_write_json


# Largest pHash Hamming distance treated as "the same picture". Measured on House Rooms (5201
# images, 13.5M pairs): distances are 0 (121 pairs), 2 (16), 4 (2), 6 (3), 8 (11), then 10 (30),
# 12 (193), ... Pairs up to 8 are re-encodes or near-identical shots (2 unrelated pairs among the
# 14 at 6-8); from 10 on they are mostly unrelated. A false positive costs one pool image, a miss
# can leak a test image into training, so the threshold sits at the top of the duplicate mass.
DEFAULT_HASH_DISTANCE = 8


class HashCache:
    """64-bit pHash per image file, keyed by resolved path, size and mtime.

    In memory by default (one per process, shared by every caller that passes no cache); with `path`, loaded from and
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


def hash_images(paths: Sequence[Path], cache: HashCache | None, progress: bool | None, what: str):
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


def min_hash_distances(query: np.ndarray, reference: np.ndarray, chunk: int = 4096):
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
    hashes, errors = hash_images(paths, cache, progress, "hashing labeled images")
    if errors:
        raise problems_error("near-duplicate check", "unreadable images", [str(e) for e in errors.values()])
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
