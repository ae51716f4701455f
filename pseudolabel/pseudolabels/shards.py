"""Sharded labeling: worker i of n labels the images at positions i, i + n, ... of the pools'
image list into its own part `<table>.part-III-of-NNN.csv`; `merge_pseudo_label_parts` checks the
parts (each shard once, cut from the same list with the same settings) and writes the table an
unsharded run would have written."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.pseudolabels.table import (
    UNREADABLE_AT_DECODE,
    PseudoLabelError,
    PseudoLabelTable,
    class_counts,
    format_row,
    format_summary,
    header,
    prepare_table_output,
    read_pseudo_labels,
    read_skipped,
    sidecar,
    table_summary,
    write_skipped,
    write_table_manifest,
)
from pseudolabel.rundir import RunLock, atomic_path, atomic_write_json, read_json

__all__ = ["check_shard", "find_parts", "merge_pseudo_label_parts", "parse_shard", "part_path", "shard_record"]


def parse_shard(text: str) -> tuple[int, int]:
    """"INDEX/COUNT" (e.g. "0/3": the first of three shards) -> (index, count), checked."""
    index, sep, count = str(text).partition("/")
    try:
        if not sep:
            raise ValueError(text)
        return check_shard((int(index), int(count)))
    except ValueError:
        raise PseudoLabelError(f"a shard is INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/3; got {text!r}") from None


def check_shard(shard) -> tuple[int, int]:
    """(index, count) with 0 <= index < count, else ValueError."""
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be 0..{count - 1}, got {index} of {count}")
    return index, count


def part_path(table_path: str | Path, index: int, count: int) -> Path:
    """Where shard `index` of `count` writes its part: `pseudo.csv` -> `pseudo.part-001-of-003.csv`."""
    table_path = Path(table_path)
    return table_path.with_name(f"{table_path.stem}.part-{index:03d}-of-{count:03d}{table_path.suffix or '.csv'}")


def _list_sha256(paths: Sequence[str], pool_names: Sequence[str]) -> str:
    """Fingerprint of the whole (pool, image) list: parts cut from different lists do not merge."""
    digest = hashlib.sha256()
    for pool, image in zip(pool_names, paths):
        digest.update(f"{pool}\t{image}\n".encode())
    return digest.hexdigest()


def shard_record(paths: list[str], pool_names: list[str], shard) -> tuple[dict, range]:
    """What a part records about its share, and the share's positions in the whole list."""
    index, count = check_shard(shard)
    record = {"index": index, "count": count, "pool_images": len(paths), "pools": list(dict.fromkeys(pool_names)),
              "list_sha256": _list_sha256(paths, pool_names)}
    return record, range(index, len(paths), count)


@dataclass
class _Part:
    path: Path
    shard: dict  # the part's summary["shard"]
    summary: dict
    table: PseudoLabelTable
    skipped: list[tuple]  # (image, pool, reason, detail) of its share's images unreadable at decode
    pool_rows: list[tuple]  # the files the pools' scan and filter left out (the same in every part)


def find_parts(table_path: str | Path) -> list[Path]:
    """The part files of `table_path` lying beside it (of any count), sorted by name."""
    table_path = Path(table_path)
    suffix = table_path.suffix or ".csv"  # as part_path names them
    name = re.compile(rf"{re.escape(table_path.stem)}\.part-\d{{3,}}-of-\d{{3,}}{re.escape(suffix)}")
    return sorted(path for path in table_path.parent.glob("*.part-*-of-*") if name.fullmatch(path.name))


def _read_part(path: Path) -> _Part:
    summary_path = sidecar(path, "summary")
    if not summary_path.exists():
        raise PseudoLabelError(f"{path}: no {summary_path.name} beside it (was it written by `label --shard`?)")
    summary = read_json(summary_path)
    if "shard" not in summary:
        raise PseudoLabelError(f"{path}: not a shard's part (its summary records no shard)")
    table = read_pseudo_labels(path)
    not_labeled = read_skipped(path)
    decode = [row for row in not_labeled if row[2] == UNREADABLE_AT_DECODE]
    return _Part(path, summary["shard"], summary, table, decode, [r for r in not_labeled if r not in decode])


def _check_parts(parts: list[_Part], table_path: Path) -> None:
    """Shards 0..count-1 of one count, each once, cut from the same list with the same settings."""
    if not parts:
        raise PseudoLabelError(f"no parts of {table_path} found (expected {part_path(table_path, 0, 1).name} ...)")
    first = parts[0]
    for part in parts[1:]:
        for key, what in (("count", "shard count"), ("pool_images", "pool image count"), ("pools", "pools"),
                          ("list_sha256", "pool image list")):
            if part.shard[key] != first.shard[key]:
                raise PseudoLabelError(f"{part.path.name} and {first.path.name} differ in {what} "
                                       f"({part.shard[key]} vs {first.shard[key]}): parts of different runs")
        for key in ("tta", "image_size"):
            if part.summary.get(key) != first.summary.get(key):
                raise PseudoLabelError(f"{part.path.name} and {first.path.name} differ in {key}")
        if part.pool_rows != first.pool_rows:
            raise PseudoLabelError(f"{part.path.name} and {first.path.name} differ in the files their pools left out "
                                   f"({sidecar(part.path, 'skipped').name}): pools filtered differently")
        if part.table.class_names != first.table.class_names:
            raise PseudoLabelError(f"{part.path.name} and {first.path.name} differ in class names "
                                   f"({part.table.class_names} vs {first.table.class_names})")
    count = int(first.shard["count"])
    by_index: dict[int, list[Path]] = {}
    for part in parts:
        by_index.setdefault(int(part.shard["index"]), []).append(part.path)
    duplicated = {i: paths for i, paths in by_index.items() if len(paths) > 1}
    if duplicated:
        raise PseudoLabelError("duplicate shard(s): " + "; ".join(
            f"shard {i} of {count} in {', '.join(p.name for p in paths)}" for i, paths in sorted(duplicated.items())))
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        raise PseudoLabelError(f"missing shard(s) {', '.join(map(str, missing))} of {count}: expected "
                               + ", ".join(part_path(table_path, i, count).name for i in missing))


def _positions(part: _Part) -> tuple[list[int], list[int]]:
    """Positions in the whole list of the part's rows and of its skipped images (its share, split)."""
    share = range(int(part.shard["index"]), int(part.shard["pool_images"]), int(part.shard["count"]))
    skipped = set(part.shard["skipped_positions"])
    rows = [p for p in share if p not in skipped]
    if len(rows) != len(part.table) or len(skipped) != len(part.skipped) or not skipped <= set(share):
        raise PseudoLabelError(f"{part.path.name}: {len(part.table)} rows and {len(part.skipped)} skipped images "
                               f"do not make up its share of {len(share)} images (a truncated or edited part?)")
    return rows, sorted(skipped)


def merge_pseudo_label_parts(table_path: str | Path, parts: Sequence[str | Path] | None = None, *,
                             progress: bool = True) -> PseudoLabelTable:
    """Join the parts of a sharded labeling (`label_pools(..., shard=...)`) into the table `table_path`.

    `parts`: the part files (default: `find_parts(table_path)`). Refuses, naming the files, parts
    of different counts, pools, image lists, classes or settings, a missing or duplicate shard, and
    an image labeled twice. Writes the table, its skipped list and summary atomically (the
    manifest last), rows in the order an unsharded `label_pools` writes them, holding the table's
    lock; returns the table.
    """
    table_path = Path(table_path)
    loaded = [_read_part(Path(p)) for p in (find_parts(table_path) if parts is None else parts)]
    _check_parts(loaded, table_path)
    labeled: dict[int, tuple] = {}  # position in the whole list -> (image, pool, sha256, probs)
    skipped_at: dict[int, tuple] = {}  # position -> (image, pool, reason, detail)
    for part in loaded:
        rows, skipped = _positions(part)
        t = part.table
        labeled.update((p, (t.images[k], t.pools[k], t.sha256[k], t.probs[k])) for k, p in enumerate(rows))
        skipped_at.update(zip(skipped, part.skipped))
    _check_merged_list(labeled, skipped_at, loaded)
    rows = [labeled[p] for p in sorted(labeled)]
    class_names = loaded[0].table.class_names
    merged = PseudoLabelTable(images=[r[0] for r in rows], pools=[r[1] for r in rows], sha256=[r[2] for r in rows],
                              probs=np.array([r[3] for r in rows], np.float32).reshape(len(rows), len(class_names)),
                              class_names=class_names)
    not_labeled = loaded[0].pool_rows + [skipped_at[p] for p in sorted(skipped_at)]
    with RunLock.for_file(table_path):
        prepare_table_output(table_path)
        with atomic_path(table_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header(class_names))
                for i in range(len(merged)):
                    writer.writerow(format_row(merged.images[i], merged.pools[i], merged.sha256[i], merged.probs[i],
                                               class_names))
            write_skipped(table_path, not_labeled)
            summary = table_summary(table_path, class_names, merged.pools,
                                    class_counts(merged.predicted, len(class_names)), not_labeled,
                                    tta=loaded[0].summary["tta"], image_size=loaded[0].summary["image_size"])
            summary["shards"] = {"count": len(loaded), "parts": [part.path.name for part in loaded]}
            atomic_write_json(sidecar(table_path, "summary"), summary)
        write_table_manifest(table_path)
    if progress:
        print(format_summary(summary) + f" (merged from {len(loaded)} parts)")
    return merged


def _check_merged_list(labeled: dict, skipped_at: dict, parts: list[_Part]) -> None:
    """No image labeled twice, and the joined list is the very list every part was cut from."""
    twice = [pair for pair, k in Counter((r[1], r[0]) for r in labeled.values()).items() if k > 1]
    if twice:
        raise PseudoLabelError(f"{len(twice)} image(s) labeled twice in the parts, e.g. {twice[0][1]} "
                               f"(pool {twice[0][0]})")
    listed = [labeled.get(p) or skipped_at[p] for p in range(int(parts[0].shard["pool_images"]))]
    if _list_sha256([e[0] for e in listed], [e[1] for e in listed]) != parts[0].shard["list_sha256"]:
        raise PseudoLabelError("the parts' images do not make up the pool image list they were cut from "
                               f"({', '.join(p.path.name for p in parts)}): edited or mixed parts?")
