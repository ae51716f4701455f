"""Pool images in batches cut by position, the unit every labeling engine works in.

Batch k holds the images at positions `k*B .. (k+1)*B - 1` of the pools' image list, whatever is
unreadable among them: an unreadable image stays in its batch as a blank (zeros) and its row is
dropped after the forward. So the batches the model sees do not depend on which images fail, nor
on the engine (local threads or Ray tasks and actors): the same model gives the same
probabilities, bit for bit, everywhere (CPU kernels may round differently for another batch size).

`decode_batch` (one batch: read, hash and decode each file, never raising on a bad one) and
`predict_decoded` (the compiled forward over a decoded batch) are what the engines share;
`local_batches` runs them on this machine: a few threads decode the next batches while the model
predicts the current one (Pillow and TensorFlow both release the GIL), with no tf.data iterator,
whose autotuning thread took seconds to tear down at the end of every pass.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

__all__ = ["DecodedBatch", "PredictedBatch", "batch_starts", "decode_batch", "local_batches", "predict_decoded"]


@dataclass
class DecodedBatch:
    """One batch of pool images at positions `start .. start + len(ok) - 1`."""

    start: int
    images: np.ndarray  # [B, H, W, 3] uint8, zeros where unreadable
    ok: np.ndarray  # [B] bool
    sha256: list[str]  # of each file's bytes ("" where it could not be read)
    reasons: list[str]  # why an image is unreadable ("" where readable), as images.read_image says


@dataclass
class PredictedBatch:
    """What an engine returns per batch: rows of the readable images, reasons of the others."""

    start: int
    rows: list[tuple[int, str, np.ndarray]] = field(default_factory=list)  # (position, sha256, probs)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)


def batch_starts(n: int, batch_size: int) -> range:
    """First positions of the batches of `n` images."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return range(0, int(n), int(batch_size))


def decode_batch(paths: Sequence[str], start: int, image_size: int) -> DecodedBatch:
    """Read, hash and decode `paths` (the batch at `start`) at `image_size` px; a file that cannot
    be read or decoded becomes a blank with its reason, never an error."""
    from pseudolabel.images import ImageError, read_image

    size = int(image_size)
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    ok = np.zeros(len(paths), bool)
    sha256, reasons = [""] * len(paths), [""] * len(paths)
    for k, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = None  # read_image names the reason (missing, permission...)
        try:
            images[k] = read_image(path, size)
        except ImageError as e:
            reasons[k] = e.reason
            continue
        # The bytes read first are the file's, unless it changed in between: then hash it again.
        sha256[k] = hashlib.sha256(data).hexdigest() if data is not None else _file_sha256(path)
        ok[k] = True
    return DecodedBatch(int(start), images, ok, sha256, reasons)


def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def predict_decoded(predict: Callable, batch: DecodedBatch, num_classes: int) -> PredictedBatch:
    """The forward over the whole batch (blanks too, so its size is the engine's, not the data's),
    then the rows of the readable images."""
    out = PredictedBatch(batch.start)
    out.failed = [(batch.start + k, batch.reasons[k]) for k in np.flatnonzero(~batch.ok)]
    if not batch.ok.any():
        return out
    probs = np.asarray(predict(batch.images))   # uint8: the predictor casts in-graph
    if probs.ndim != 2 or probs.shape != (len(batch.ok), num_classes):
        from pseudolabel.pseudolabels.table import PseudoLabelError

        raise PseudoLabelError(f"the model outputs shape {probs.shape}, expected [batch, {num_classes}] probabilities")
    out.rows = [(batch.start + k, batch.sha256[k], probs[k]) for k in np.flatnonzero(batch.ok)]
    return out


def local_batches(paths: Sequence[str], *, image_size: int, batch_size: int, predict: Callable, num_classes: int,
                  threads: int | None = None) -> Iterator[PredictedBatch]:
    """Every batch of `paths`, in order, predicted on this machine: `threads` (default: the CPU
    count, at most 2) decode ahead while the model runs; at most threads + 1 batches are in memory."""
    paths = [str(p) for p in paths]
    threads = max(1, int(threads or min(2, os.cpu_count() or 1)))
    starts = iter(batch_starts(len(paths), batch_size))
    pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")
    try:
        pending = []

        def submit() -> None:
            start = next(starts, None)
            if start is not None:
                pending.append(pool.submit(decode_batch, paths[start:start + batch_size], start, image_size))

        for _ in range(threads + 1):
            submit()
        while pending:
            decoded = pending.pop(0).result()
            submit()
            yield predict_decoded(predict, decoded, num_classes)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an interrupted pass leaves no thread behind

