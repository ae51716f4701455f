"""Unlabeled pools: scan folders, drop labeled images and their near-duplicates, report."""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from pseudolabel.data.duplicates import DEFAULT_HASH_DISTANCE, DEFAULT_MIN_INLIERS, HashCache, match_near_duplicates
from pseudolabel.data.errors import DataError, DataWarning
from pseudolabel.data.labels import LabeledSet
from pseudolabel.images import IMAGE_EXTENSIONS
from pseudolabel.rundir import atomic_write_bytes, atomic_write_json


# Reasons recorded in Pool.excluded (the near-duplicate reason starts with NEAR_DUPLICATE).
LABELED = "labeled image"
NEAR_DUPLICATE = "near-duplicate of labeled image"
IN_EARLIER_POOL = "already in pool"


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
    min_inliers: int | None = None

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


def read_image_list(csv_path: str | Path, folder: str | Path) -> list[Path]:
    """The images a pool list names (`image` column; relative entries relative to `folder`),
    absolute, in file order, each once. DataError for a missing file or column, no rows, or a
    listed image that does not exist (the first named, with the count)."""
    from pseudolabel.data.labels import read_csv_rows

    csv_path, folder = Path(csv_path), Path(folder)
    rows = read_csv_rows(csv_path, ("image",))
    paths = list(dict.fromkeys(folder / row["image"] for _, row in rows if row["image"]))
    missing = [(line, row["image"]) for line, row in rows if row["image"] and not (folder / row["image"]).is_file()]
    if missing:
        line, image = missing[0]
        raise DataError(f"{csv_path}: line {line}: {image}: no such image file "
                        f"({len(missing)} of {len(rows)} listed images missing)")
    return paths


def list_pool(folder: str | Path, images_csv: str | Path, name: str | None = None) -> Pool:
    """A pool of the images `images_csv` lists (see `read_image_list`) instead of a whole folder;
    `folder` is where relative entries lie (and what the pool report names). Files are not
    decoded here: `filter_pool` does that."""
    folder = Path(folder)
    name = name or Path(images_csv).stem
    images = read_image_list(images_csv, folder)
    if not images:
        warnings.warn(DataWarning(f"pool '{name}' ({images_csv}): lists no images"), stacklevel=2)
    return Pool(name, folder, sorted(images))


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
    min_inliers: int | None = DEFAULT_MIN_INLIERS,
    embed: Callable[[Sequence[Path]], np.ndarray] | None = None,
    min_cosine: float = 0.95,
    cache: HashCache | None = None,
    progress: bool | None = None,
) -> Pool:
    """A new Pool without labeled images and near-duplicates of them; unreadable files skipped.

    Pass ALL labeled images (train, val and test). A pool image is excluded when its resolved
    path is a labeled image, or it is a near-duplicate of a labeled image (`duplicates`): a
    pHash of it or its mirror or crops within `hash_distance` of one of the labeled image's,
    or (`min_inliers`, None: off) at least that many matching keypoints under one rotation +
    scale, or (when `embed`, paths -> [n, d] features, is given) a feature cosine >= `min_cosine`.
    `hash_distance` None: compare paths only, decode nothing. Every remaining image is decoded
    (reduced) to hash it; those that fail go to `skipped` with the reason. A labeled image that
    cannot be read is a DataError (it could not be checked for twins). Each exclusion's reason
    names the labeled image and the distance.
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
        matches, errors = match_near_duplicates(
            candidates, labeled, hash_distance, min_inliers=min_inliers, embed=embed, min_cosine=min_cosine,
            cache=cache, progress=progress, what=pool.name)
        kept = [p for i, p in enumerate(candidates) if i not in matches and i not in errors]
        excluded += [(candidates[i], f"{NEAR_DUPLICATE} {m.reason(labeled[m.labeled_index])}")
                     for i, m in matches.items()]
        skipped += [(candidates[i], e.reason) for i, e in errors.items()]
    return Pool(pool.name, pool.folder, kept, glob=pool.glob, excluded=sorted(excluded),
                skipped=sorted(skipped), filtered=True, hash_distance=hash_distance,
                min_inliers=min_inliers if hash_distance is not None else None)


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
                  report_dir: str | Path, report_name: str = "pools", **near_duplicates) -> list[Pool]:
    """Scan (or, with `images`, list) and filter every pool of an experiment (`[[pools]]` tables:
    name, path, glob, images) against ALL labeled images, drop files an earlier pool already holds
    (a folder given twice must not double its images), write the report and print one line per pool.

    `near_duplicates`: keyword arguments of `filter_pool` (hash_distance, min_inliers, embed,
    min_cosine, cache, progress)."""
    if not pool_cfgs:
        raise DataError("no unlabeled pools given ([[pools]] in the experiment, or --pool DIR)")
    labeled = list(labeled_paths)
    pools, taken = [], {}
    for cfg in pool_cfgs:
        found = (list_pool(cfg["path"], cfg["images"], name=cfg.get("name")) if cfg.get("images")
                 else scan_pool(cfg["path"], glob=cfg.get("glob"), name=cfg.get("name")))
        pool = filter_pool(found, labeled, **near_duplicates)
        kept = []
        for image in pool.images:
            first = taken.setdefault(Path(image).resolve(), pool.name)
            if first == pool.name:
                kept.append(image)
            else:
                pool.excluded.append((image, f"{IN_EARLIER_POOL} {first}"))
        pool.images = kept
        pools.append(pool)
    report = write_pool_report(pools, report_dir, name=report_name)
    for pool in pools:
        print(f"pool {pool.name}: " + ", ".join(f"{k} {v}" for k, v in pool.counts().items()))
    if not any(pool.images for pool in pools):
        # Before any model trains or labels: an empty pool cannot be fixed by a threshold later.
        found = sum(pool.counts()["found"] for pool in pools)
        raise DataError(f"{', '.join(str(p.folder) for p in pools)}: no image left to pseudo-label ({found} found, "
                        f"all excluded or unreadable; see {report['csv']}); name a folder of unlabeled images")
    return pools


def pool_summary(pool: Pool) -> dict:
    """Counts and the excluded/skipped lists of one pool, JSON-ready."""
    return {
        "name": pool.name,
        "folder": str(pool.folder),
        "glob": pool.glob,
        "filtered": pool.filtered,
        "hash_distance": pool.hash_distance,
        "min_inliers": pool.min_inliers,
        "counts": pool.counts(),
        "excluded": [[str(p), r] for p, r in pool.excluded],
        "skipped": [[str(p), r] for p, r in pool.skipped],
    }
