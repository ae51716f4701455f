"""`label_pools`: the teacher's predictions on the filtered pools, streamed into a pseudo-label table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from pseudolabel.pseudolabels import predict
from pseudolabel.pseudolabels.batches import PredictedBatch, local_batches
from pseudolabel.pseudolabels.shards import part_path, shard_record
from pseudolabel.pseudolabels.table import (
    UNREADABLE_AT_DECODE,
    PseudoLabelError,
    PseudoLabelTable,
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

__all__ = ["ENGINES", "label_pools"]

ENGINES = ("local", "ray")


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
    engine: str = "local",
    address: str | None = None,
    model_file: str | Path | None = None,
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
    `engine`: "local" (threads decode, this process predicts) or "ray" (Ray Data: decoding in Ray
    tasks, a pool of actors each holding the model; `address` of a cluster to join, else a local
    Ray is started; `model_file`, the .keras file the actors load, else `model` is saved for
    them). Both write the same files, byte for byte.
    """
    if engine not in ENGINES:
        raise PseudoLabelError(f"unknown labeling engine {engine!r}; choose one of {', '.join(ENGINES)}")
    class_names = [str(c) for c in class_names]
    pools = list(pools)
    paths, pool_names = _pool_images(pools)
    out_path = Path(out_path)
    record, positions = None, range(len(paths))
    if shard is not None:
        record, positions = shard_record(paths, pool_names, shard)
        paths, pool_names = [paths[i] for i in positions], [pool_names[i] for i in positions]
        out_path = part_path(out_path, record["index"], record["count"])
    settings = dict(image_size=int(image_size), batch_size=int(batch_size), tta=tta, num_classes=len(class_names))
    with RunLock.for_file(out_path):
        prepare_table_output(out_path)
        batches = _engine_batches(engine, model, paths, settings, address, model_file)
        summary = _write_table(out_path, batches, paths, pool_names, pools, class_names, progress,
                               tta=tta, image_size=image_size, record=record, positions=positions)
    if progress:
        print(format_summary(summary))
    return read_pseudo_labels(out_path)


def _engine_batches(engine: str, model, paths: list[str], settings: dict, address, model_file) -> Iterator:
    if not paths:
        return iter(())
    if engine == "ray":
        from pseudolabel.pseudolabels.ray_engine import ray_batches

        return ray_batches(model, paths, address=address, model_file=model_file, **settings)
    # Looked up on the module each call, so tests can wrap the predictor.
    forward = predict.batch_predictor(model, settings["tta"], settings["image_size"])
    return local_batches(paths, image_size=settings["image_size"], batch_size=settings["batch_size"],
                         predict=forward, num_classes=settings["num_classes"])


def _write_table(out_path: Path, batches: Iterator[PredictedBatch], paths, pool_names, pools, class_names,
                 progress: bool, *, tta, image_size, record, positions) -> dict:
    """The table from the engine's batches (in order), then its sidecars; the manifest last. The
    bar stays up until the manifest is written, saying what it finishes."""
    from tqdm import tqdm

    seen = np.zeros(len(paths), dtype=bool)
    predicted = np.zeros(len(class_names), dtype=np.int64)
    failed: list[tuple[int, str]] = []
    with tqdm(total=len(paths), desc="pseudo-labeling", unit="img", disable=not progress) as bar:
        # The table is renamed into place after its sidecars and before the manifest, so a table
        # always has its sidecars, and only a finished one has a manifest.
        with atomic_path(out_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header(class_names))
                for batch in batches:
                    for i, sha, p in batch.rows:
                        seen[i] = True
                        predicted[int(np.argmax(p))] += 1
                        writer.writerow(format_row(paths[i], pool_names[i], sha, p, class_names))
                    failed += batch.failed
                    bar.update(len(batch.rows) + len(batch.failed))
            bar.set_postfix_str("writing the skipped list, summary and manifest", refresh=True)
            not_labeled = [row for pool in pools for row in pool_not_labeled(pool)]
            not_labeled += [(paths[i], pool_names[i], UNREADABLE_AT_DECODE, reason) for i, reason in sorted(failed)]
            write_skipped(out_path, not_labeled)
            summary = table_summary(out_path, class_names, [name for name, ok in zip(pool_names, seen) if ok],
                                    predicted, not_labeled, tta=tta, image_size=image_size)
            if record is not None:
                summary["shard"] = {**record, "skipped_positions": [positions[k] for k in np.flatnonzero(~seen)]}
            atomic_write_json(sidecar(out_path, "summary"), summary)
        write_table_manifest(out_path)
    return summary


def _pool_images(pools: Iterable) -> tuple[list[str], list[str]]:
    """All image paths of the pools, in order, with the pool name of each."""
    paths, names = [], []
    for pool in pools:
        for image in pool.images:
            paths.append(str(image))
            names.append(str(pool.name))
    return paths, names
