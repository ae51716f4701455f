"""tf.data input pipelines: decode, resize, cache, augment, batch, prefetch.

    ds = make_dataset(paths, labels, image_size=224, batch_size=32, num_classes=2,
                      shuffle=True, seed=0, augment=get_augment("teacher", 224), cache="memory")

Elements are float32 pixels in 0..255, `[B, H, W, 3]` (models do their own preprocessing), then
targets `[B, K]` float32 when labels are given, then the int64 index of each image in `paths`
when `with_index=True`: `images`, `(images, targets)`, `(images, index)` or
`(images, targets, index)`. With `views=(aug_1, ..., aug_v)` instead of `augment`, `images` is a
tuple of v batches, view j of every image augmented by `aug_j` from the same decoded image (the
weak and strong views of online pseudo-labeling), each with its own seed.

How it is built, and why:
- The dataset runs over *indices* `0..n-1`: shuffling integers costs nothing (a full-permutation
  shuffle buffer of n int64), labels are gathered by index, and callers map predictions back to
  files by index.
- Decoding is `images.read_image` inside `tf.numpy_function`, `num_parallel_calls=AUTOTUNE`:
  Pillow releases the GIL while decoding and resizing, so threads run in parallel.
- The cache is ours, not `Dataset.cache`: decoded uint8 images at target size in an array indexed
  by image index (in memory, or a `.npy` memmap on disk). Because it is random-access, the
  shuffle stays a cheap shuffle of indices before decoding, instead of a shuffle buffer of decoded
  images after the cache (which would hold the whole set in memory even with a file cache), and a
  partially read epoch still leaves everything it decoded cached. A file cache's name carries a
  hash of the image size and of every path with its size and mtime, so a changed set of files
  never reads a stale cache.
- Without a cache nothing is kept: memory does not grow with the number of images.
- Augmentation runs after the cache, in parallel, on uint8 images. Each element gets a seed
  from `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`, passed to
  `augment(image, seed=...)` (augment.Augmenter), so results do not depend on thread timing.
- tf.data's autotuner is off unless `autotune=True`: releasing an autotuned iterator waits for
  the autotuner's next tick, and its ticks come at 10 ms, 30 ms, 70 ms, ... (the period doubles
  up to 60 s), so a pass over the validation images, a prediction or a feature extraction ended
  up to twice as late as its last batch (BENCHMARKS.md, "tf.data autotuning"). Without it,
  `AUTOTUNE` parallelism is min(16, usable cores) and the prefetch buffer still adapts.

Determinism: with the same arguments, the k-th iteration over a dataset gives the same elements
in the same order as the k-th iteration over another dataset built the same way (order, shuffle
and augmentation); successive iterations differ (reshuffled, re-augmented); a different `seed`
gives a different order and different augmentation. An augment callable that takes no `seed`
keyword is called as `augment(image)`: its own randomness then decides, and with parallel calls
its draws land on elements in thread order.

Errors: `on_error="raise"` stops iteration with a `tf.errors.InvalidArgumentError` whose message
holds `ImageError: <path>: <reason>`; `on_error="skip"` drops unreadable images (their indices are
missing from the output; see `with_index`).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from pseudolabel import images
from pseudolabel.rundir import atomic_path

AUTOTUNE = tf.data.AUTOTUNE

_UNKNOWN, _DECODED, _UNREADABLE = 0, 1, 2  # cache state of one image


def make_dataset(
    paths: Sequence[str | os.PathLike],
    labels=None,
    *,
    image_size: int | Sequence[int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    augment: Callable[..., np.ndarray] | None = None,
    cache: str | os.PathLike | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    num_classes: int | None = None,
    on_error: str = "raise",
    with_index: bool = False,
    views: Sequence[Callable[..., np.ndarray]] | None = None,
    autotune: bool = False,
) -> tf.data.Dataset:
    """A batched, prefetched dataset of the images at `paths` (see the module docstring).

    labels: None; n ints (class indices, one-hot to `num_classes`); or an [n, K] float array of
    soft targets, passed through. cache: None, "memory", or a file path prefix. autotune: let
    tf.data's autotuner set parallelism (off by default: see the module docstring).
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("make_dataset needs at least one image path")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if views is not None and (augment is not None or not views):
        raise ValueError("give augment (one view) or a non-empty views (several), not both")
    height, width = _hw(image_size)
    targets = _targets(labels, len(paths), num_classes)
    decoder = _Decoder(paths, (height, width), _make_cache(cache, paths, (height, width)), on_error)

    ds = tf.data.Dataset.range(len(paths))
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(_decode_fn(decoder, height, width), num_parallel_calls=AUTOTUNE, deterministic=True)
    if on_error == "skip":
        ds = ds.filter(lambda index, image, ok: ok)
    ds = ds.map(lambda index, image, ok: (index, image))
    if augment is not None or views is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds)
        view_fn = _augment_fn(augment, height, width) if views is None else _views_fn(views, height, width)
        ds = ds.map(view_fn, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.map(_output_fn(targets, with_index), num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.with_options(_options(autotune)).prefetch(AUTOTUNE)


def array_dataset(arrays: tuple[np.ndarray, ...], *, batch_size: int, shuffle: bool = False, seed: int = 0,
                  autotune: bool = False) -> tf.data.Dataset:
    """Batches of in-memory arrays (cached features and their targets), for Keras `fit`/`evaluate`.

    What Keras builds from NumPy arrays by itself, without the autotuner's tick at the end of every
    epoch and validation pass (the module docstring), which made the teacher's phase 1 (a head on
    cached features) take about twice as long. With `shuffle`, a new order every epoch, the same
    orders for the same `seed`.
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays of different lengths: {[len(a) for a in arrays]}")
    ds = tf.data.Dataset.from_tensor_slices(tuple(arrays))
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).with_options(_options(autotune)).prefetch(AUTOTUNE)


def _options(autotune: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = autotune
    return options


def load_images(
    paths: Sequence[str | os.PathLike], image_size: int | Sequence[int], *, workers: int | None = None
) -> np.ndarray:
    """Decode `paths` into one uint8 array `[n, H, W, 3]` (threads; raises ImageError on a bad file).

    For small sets (a few thousand images at most: 224 px costs 150 KB an image).
    """
    size = _hw(image_size)
    out = np.empty((len(paths), *size, 3), np.uint8)

    def load(i):
        out[i] = images.read_image(paths[i], size)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(load, range(len(paths))))
    return out


# ---------------------------------------------------------------- labels

def _targets(labels, n: int, num_classes: int | None) -> np.ndarray | None:
    """[n, K] float32 targets: one-hot of class indices, or soft targets as given."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"1-D labels must be integer class indices, got dtype {labels.dtype}")
        if num_classes is None:
            raise ValueError("integer labels need num_classes (for the one-hot targets)")
        if n and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"class indices must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
        return np.eye(num_classes, dtype=np.float32)[labels]
    if labels.ndim == 2:
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(f"soft targets have {labels.shape[1]} columns, num_classes is {num_classes}")
        targets = labels.astype(np.float32)
        if not np.isfinite(targets).all():
            raise ValueError("soft targets must be finite")
        return targets
    raise ValueError(f"labels must be 1-D class indices or 2-D soft targets, got shape {labels.shape}")


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


# ---------------------------------------------------------------- decoding and the cache

class _Decoder:
    """index -> (uint8 image, ok), through the cache when there is one."""

    def __init__(self, paths: list[str], size: tuple[int, int], cache: "_Cache | None", on_error: str):
        self.paths = paths
        self.size = size
        self.cache = cache
        self.skip = on_error == "skip"

    def __call__(self, index) -> tuple[np.ndarray, np.bool_]:
        i = int(index)
        if self.cache is not None:
            state = self.cache.state[i]
            if state == _DECODED:
                return self.cache.images[i], np.bool_(True)
            if state == _UNREADABLE and self.skip:
                return self._blank(), np.bool_(False)
        try:
            # Looked up on the module each time so tests can count decodes.
            image = images.read_image(self.paths[i], self.size)
        except images.ImageError:
            if not self.skip:
                raise
            if self.cache is not None:
                self.cache.mark_unreadable(i)
            return self._blank(), np.bool_(False)
        if self.cache is not None:
            self.cache.store(i, image)
        return image, np.bool_(True)

    def _blank(self) -> np.ndarray:
        return np.zeros((*self.size, 3), np.uint8)


class _Cache:
    """Decoded images by index: `images` [n, H, W, 3] uint8 and `state` [n] uint8 (0/1/2).

    Each index is written by whichever thread decodes it; two threads writing the same index
    write the same pixels, so no lock is needed. The state is set after the pixels.
    """

    def __init__(self, images_array: np.ndarray, state: np.ndarray):
        self.images = images_array
        self.state = state

    def store(self, i: int, image: np.ndarray) -> None:
        self.images[i] = image
        self.state[i] = _DECODED

    def mark_unreadable(self, i: int) -> None:
        self.state[i] = _UNREADABLE


def _make_cache(cache, paths: list[str], size: tuple[int, int]) -> _Cache | None:
    if cache is None:
        return None
    n, (h, w) = len(paths), size
    if cache == "memory":
        # np.zeros maps pages lazily: memory grows with the images decoded so far, not with n.
        return _Cache(np.zeros((n, h, w, 3), np.uint8), np.zeros(n, np.uint8))
    return _file_cache(Path(cache), paths, size)


_file_cache_lock = threading.Lock()


def _file_cache(prefix: Path, paths: list[str], size: tuple[int, int]) -> _Cache:
    """Two .npy memmaps beside `prefix`: `<prefix>-<H>x<W>-<key>.images.npy` and `.state.npy`.

    The key hashes the size and every path with its file size and mtime: a different set of
    files, or a file changed since, gets a different cache. Created under a temporary name and
    renamed into place, so a crash never leaves a half-created cache under the real name.
    """
    h, w = size
    stem = f"{prefix.name}-{h}x{w}-{_files_key(paths, size)}"
    image_file = prefix.parent / f"{stem}.images.npy"
    state_file = prefix.parent / f"{stem}.state.npy"
    with _file_cache_lock:
        for file, shape in ((image_file, (len(paths), h, w, 3)), (state_file, (len(paths),))):
            if not file.exists():
                with atomic_path(file) as tmp:
                    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
        return _Cache(np.load(image_file, mmap_mode="r+"), np.load(state_file, mmap_mode="r+"))


def _files_key(paths: list[str], size: tuple[int, int]) -> str:
    digest = hashlib.sha1(f"{size}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"\0{p}\0{stamp}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- tf.data map functions

def _decode_fn(decoder: _Decoder, height: int, width: int):
    def decode(index):
        image, ok = tf.numpy_function(decoder, [index], [tf.uint8, tf.bool], name="read_image")
        image.set_shape((height, width, 3))
        ok.set_shape(())
        return index, image, ok

    return decode


def _augment_fn(augment: Callable[..., np.ndarray], height: int, width: int):
    takes_seed = _accepts_seed(augment)

    def run(image, seed):
        if takes_seed:
            out = augment(image, seed=int(seed) % 2**63)
        else:
            out = augment(image)
        if out.shape != (height, width, 3) or out.dtype != np.uint8:
            raise ValueError(f"augmentation returned {out.dtype} {out.shape}, expected uint8 {(height, width, 3)}")
        return out

    def augment_element(element, seed):
        index, image = element
        out = tf.numpy_function(run, [image, seed], tf.uint8, name="augment")
        out.set_shape((height, width, 3))
        return index, out

    return augment_element


def _views_fn(views: Sequence[Callable[..., np.ndarray]], height: int, width: int):
    """(index, image), seed -> (index, (view_1, ..., view_v)): every view from the same decoded image,
    view j with the element's seed + j (so the views differ, and each is still reproducible)."""
    runs = [_augment_fn(view, height, width) for view in views]

    def augment_element(element, seed):
        outs = tuple(run(element, seed + j)[1] for j, run in enumerate(runs))
        return element[0], outs

    return augment_element


def _accepts_seed(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "seed" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _output_fn(targets: np.ndarray | None, with_index: bool):
    table = None if targets is None else tf.constant(targets)

    def output(index, image):
        pixels = tuple(tf.cast(v, tf.float32) for v in image) if isinstance(image, tuple) else tf.cast(image, tf.float32)
        parts = [pixels]
        if table is not None:
            parts.append(tf.gather(table, index))
        if with_index:
            parts.append(index)
        return parts[0] if len(parts) == 1 else tuple(parts)

    return output
