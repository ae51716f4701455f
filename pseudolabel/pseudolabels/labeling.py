"""`label_pools`: the teacher's predictions on the filtered pools, streamed into a pseudo-label table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pseudolabel.pseudolabels.predict import stream_predictions, unreadable_reasons
from pseudolabel.pseudolabels.shards import part_path, shard_record
from pseudolabel.pseudolabels.table import (
    UNREADABLE_AT_DECODE,
    PseudoLabelTable,
    file_sha256,
    format_row,
    format_summary,
    header,
    pool_not_labeled,
    prepare_table_output,
    read_pseudo_labels,
    sidecar,
    table_summary,
    write_skipped,
    write_table_manifest,
)
from pseudolabel.rundir import RunLock, atomic_path, atomic_write_json

__all__ = ["label_pools"]


def label_pools(
    model,
    pools: Iterable,
    *,
    image_size: int,
    batch_size: int = 64,
    tta: str = "none",
    class_names: Sequence[str],
    out_path: str | Path,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> PseudoLabelTable:
    """Predict every image of `pools` with `model` (no noise) and write the table to `out_path`.

    `pools` are `data.Pool`s (already filtered against the labeled images: `.name`, `.images`,
    and what the scan and filter left out: `.skipped`, `.excluded`). Rows are streamed to a
    temporary file and renamed into place at the end; the manifest is written last. Every file
    not labeled (unreadable at scan or at decode, excluded) is listed with its reason in
    `<out>.skipped.csv`; unreadable images are never fatal. The output is locked while it is
    written: a second process on the same `out_path` is refused (rundir.LockedError).
    `shard=(index, count)`: label only this worker's share of the pools' images and write it to
    `part_path(out_path, index, count)` (returned as the table); `merge_pseudo_label_parts` joins
    the parts. Its summary records where the share lies in the whole list (`"shard"`).
    """
    class_names = [str(c) for c in class_names]
    pools = list(pools)
    paths, pool_names = _pool_images(pools)
    out_path = Path(out_path)
    record, positions = None, range(len(paths))
    if shard is not None:
        record, positions = shard_record(paths, pool_names, shard)
        paths, pool_names = [paths[i] for i in positions], [pool_names[i] for i in positions]
        out_path = part_path(out_path, record["index"], record["count"])
    with RunLock.for_file(out_path):
        prepare_table_output(out_path)
        seen = np.zeros(len(paths), dtype=bool)
        predicted = np.zeros(len(class_names), dtype=np.int64)
        # The table is renamed into place after its sidecars and before the manifest, so a table
        # always has its sidecars, and only a finished one has a manifest.
        with atomic_path(out_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header(class_names))
                if paths:
                    for i, p in stream_predictions(model, paths, image_size, batch_size, tta, len(class_names),
                                                   progress):
                        seen[i] = True
                        predicted[int(np.argmax(p))] += 1
                        writer.writerow(format_row(paths[i], pool_names[i], file_sha256(paths[i]), p, class_names))
            not_labeled = [row for pool in pools for row in pool_not_labeled(pool)]
            not_labeled += [(image, pool, UNREADABLE_AT_DECODE, detail)
                            for image, pool, detail in unreadable_reasons(paths, pool_names, seen)]
            write_skipped(out_path, not_labeled)
            summary = table_summary(out_path, class_names, [name for name, ok in zip(pool_names, seen) if ok],
                                    predicted, not_labeled, tta=tta, image_size=image_size)
            if record is not None:
                summary["shard"] = {**record, "skipped_positions": [positions[k] for k in np.flatnonzero(~seen)]}
            atomic_write_json(sidecar(out_path, "summary"), summary)
        write_table_manifest(out_path)
    if progress:
        print(format_summary(summary))
    return read_pseudo_labels(out_path)


def _pool_images(pools: Iterable) -> tuple[list[str], list[str]]:
    """All image paths of the pools, in order, with the pool name of each."""
    paths, names = [], []
    for pool in pools:
        for image in pool.images:
            paths.append(str(image))
            names.append(str(pool.name))
    return paths, names
