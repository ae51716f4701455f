"""Teacher predictions on unlabeled pools -> a pseudo-label table -> filtered, balanced targets.

Two steps, kept apart so a table (the expensive part) can be re-selected with other settings:

1. `label_pools` runs the teacher WITHOUT noise (inference mode, no augmentation; optional TTA)
   over every image of the already filtered pools and writes one row per readable image:
   `image,pool,sha256,p_<class>...,confidence,predicted`. It streams: images go through
   `pipeline.make_dataset` with no cache, rows are appended to a temporary file beside the table
   as each batch is predicted, and the file is renamed into place only when every batch is done
   (an interrupted run leaves no table under the final name). Unreadable images are skipped and
   listed in `<table>.skipped.csv`; `<table>.summary.json` counts rows per pool and class.
   A pool too large for one machine is labeled in shards: worker i of n runs `label_pools(...,
   shard=(i, n))` on the same pools and labels the images at positions i, i + n, i + 2n, ... of
   the pools' image list, writing its own part `<table>.part-III-of-NNN.csv` (with its sidecars);
   `merge_pseudo_label_parts` checks that every part is there once, cut from the same list, and
   writes the table an unsharded run would have written (same rows, in the same order).

2. `select_pseudo_labels` turns the table into training targets, as the official Noisy Student
   code does (google-research/noisystudent, filter_unlabel.py): soft targets are the teacher's
   probabilities re-tempered (`p**(1/T)` renormalised, i.e. softmax(logits / T)), hard targets
   the argmax one-hot with label smoothing; images whose top probability is below `threshold` are
   dropped; balancing keeps, per predicted class, the most confident images up to `per_class` and
   duplicates the images of classes with fewer. The official code duplicates by random rounding
   of `target / count` copies, so its class counts are only near the target; here every image
   gets `target // count` copies and a seeded random `target % count` of them one more, so each
   class has exactly `target` rows and the same seed gives the same rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pseudolabel.data import DataError
from pseudolabel.rundir import atomic_path, atomic_write_json

FIXED_COLUMNS = ("image", "pool", "sha256")
TAIL_COLUMNS = ("confidence", "predicted")
MODES = ("soft", "hard")


class PseudoLabelError(DataError):
    """A pseudo-label table that cannot be read or selected from as asked (the CLI shows it cleanly)."""


# --------------------------------------------------------------------------- the table


@dataclass
class PseudoLabelTable:
    """The rows of a pseudo-label table: one readable pool image each, with the teacher's probs."""

    images: list[str]
    pools: list[str]
    sha256: list[str]
    probs: np.ndarray  # [N, K] float32, rows sum to 1
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(axis=1) if len(self) else np.zeros(0, np.float32)

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class index per row."""
        return self.probs.argmax(axis=1) if len(self) else np.zeros(0, np.int64)

    @property
    def predicted_names(self) -> list[str]:
        return [self.class_names[k] for k in self.predicted]

    def summary(self) -> dict:
        """Rows per pool and per predicted class (what `label` prints and saves)."""
        return {
            "n": len(self),
            "per_pool": dict(Counter(self.pools)),
            "per_class": {name: int(n) for name, n in zip(self.class_names, _class_counts(self.predicted, len(self.class_names)))},
        }


def header(class_names: Sequence[str]) -> list[str]:
    return [*FIXED_COLUMNS, *(f"p_{c}" for c in class_names), *TAIL_COLUMNS]


def _row(image: str, pool: str, sha: str, probs: np.ndarray, class_names: Sequence[str]) -> list:
    k = int(np.argmax(probs))
    # %.9g round-trips float32 exactly, so a re-read table gives the same selection.
    return [image, pool, sha, *(f"{float(p):.9g}" for p in probs), f"{float(probs[k]):.9g}", class_names[k]]


def read_pseudo_labels(path: str | Path) -> PseudoLabelTable:
    """Read a table written by `label_pools`."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            rows = [r for r in reader if r]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such pseudo-label table") from None
    class_names = _class_names_from_header(path, head)
    k = len(class_names)
    try:
        probs = np.array([[float(v) for v in r[3:3 + k]] for r in rows], dtype=np.float32).reshape(len(rows), k)
    except ValueError as e:
        raise PseudoLabelError(f"{path}: malformed probability ({e})") from None
    return PseudoLabelTable(
        images=[r[0] for r in rows], pools=[r[1] for r in rows], sha256=[r[2] for r in rows],
        probs=probs, class_names=class_names,
    )


def _class_names_from_header(path: Path, head: list[str] | None) -> list[str]:
    if (not head or tuple(head[:3]) != FIXED_COLUMNS or tuple(head[-2:]) != TAIL_COLUMNS
            or not all(h.startswith("p_") for h in head[3:-2]) or len(head) < 7):
        raise PseudoLabelError(
            f"{path}: not a pseudo-label table (expected header image,pool,sha256,p_<class>...,"
            f"confidence,predicted; got {head})")
    return [h[2:] for h in head[3:-2]]


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sidecar(table_path: str | Path, kind: str) -> Path:
    """`pseudo.csv` -> `pseudo.skipped.csv` / `pseudo.summary.json` / `pseudo.pools.json`."""
    table_path = Path(table_path)
    suffix = ".json" if kind in ("summary", "pools") else ".csv"
    return table_path.with_name(f"{table_path.stem}.{kind}{suffix}")


# --------------------------------------------------------------------------- labeling


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

    `pools` are `data.Pool`s (already filtered against the labeled images: `.name`, `.images`).
    Rows are streamed to a temporary file and renamed into place at the end. Images that cannot be
    read are skipped and listed in `<out>.skipped.csv` (image,pool,reason); never fatal.
    `shard=(index, count)`: label only this worker's share of the pools' images and write it to
    `part_path(out_path, index, count)` (returned as the table); `merge_pseudo_label_parts` joins
    the parts. Its summary records where the share lies in the whole list (`"shard"`).
    """
    class_names = [str(c) for c in class_names]
    paths, pool_names = _pool_images(pools)
    out_path = Path(out_path)
    shard_record, positions = None, range(len(paths))
    if shard is not None:
        shard_record, positions = _shard_record(paths, pool_names, shard)
        paths, pool_names = [paths[i] for i in positions], [pool_names[i] for i in positions]
        out_path = part_path(out_path, shard_record["index"], shard_record["count"])
    seen = np.zeros(len(paths), dtype=bool)
    predicted = np.zeros(len(class_names), dtype=np.int64)
    # The table is renamed into place last, so a table that exists always has its sidecars.
    with atomic_path(out_path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header(class_names))
            if paths:
                for i, p in _predictions(model, paths, image_size, batch_size, tta, len(class_names), progress):
                    seen[i] = True
                    predicted[int(np.argmax(p))] += 1
                    writer.writerow(_row(paths[i], pool_names[i], file_sha256(paths[i]), p, class_names))
        skipped = _skipped_images(paths, pool_names, seen)
        _write_skipped(out_path, skipped)
        summary = _summary(out_path, class_names, [name for name, ok in zip(pool_names, seen) if ok], predicted,
                           skipped, tta=tta, image_size=image_size)
        if shard_record is not None:
            summary["shard"] = {**shard_record, "skipped_positions": [positions[k] for k in np.flatnonzero(~seen)]}
        atomic_write_json(sidecar(out_path, "summary"), summary)
    if progress:
        print(format_summary(summary))
    return read_pseudo_labels(out_path)


def _predictions(model, paths, image_size, batch_size, tta, num_classes, progress):
    """(index into `paths`, probabilities) of every readable image, one streamed batch at a time."""
    from tqdm import tqdm

    from pseudolabel.pipeline import make_dataset

    predict_batch = _batch_predictor(model, tta, image_size)
    # No cache, no shuffle, one pass: only the batches in flight are held in memory.
    dataset = make_dataset(paths, image_size=image_size, batch_size=batch_size, shuffle=False, augment=None,
                           cache=None, repeat=False, drop_remainder=False, on_error="skip", with_index=True)
    with tqdm(total=len(paths), desc="pseudo-labeling", unit="img", disable=not progress) as bar:
        for images, index in dataset:
            probs = _check_probs(predict_batch(images).numpy(), num_classes)
            yield from zip(index.numpy().tolist(), probs)
            bar.update(len(probs))
        bar.update(len(paths) - bar.n)  # the skipped ones


def load_classifier(path: str | Path):
    """(model, model file, class names or None) from a run directory (its model.keras) or a
    .keras file; the class names are the ones its run recorded in metrics.json, if any."""
    import json

    import keras

    path = Path(path)
    model_file = path / "model.keras" if path.is_dir() else path
    if not model_file.exists():
        raise PseudoLabelError(f"{model_file}: no such model (is the run finished?)")
    model = keras.models.load_model(model_file, compile=False)
    metrics = model_file.parent / "metrics.json"
    names = json.loads(metrics.read_text()).get("class_names") if metrics.exists() else None
    return model, model_file, [str(c) for c in names] if names else None


def predict_images(model, paths: Sequence[str | Path], *, class_names: Sequence[str], tta: str = "none",
                   batch_size: int = 32, progress: bool = True) -> tuple[list[dict], list[tuple[str, str]]]:
    """Class probabilities of new images: rows {image, p_<class>..., predicted, confidence} in
    input order, and (image, reason) of the images that could not be read (skipped, not fatal)."""
    paths = [str(p) for p in paths]
    class_names = [str(c) for c in class_names]
    seen = np.zeros(len(paths), dtype=bool)
    rows = {}
    for i, p in _predictions(model, paths, int(model.input_shape[1]), batch_size, tta, len(class_names), progress):
        seen[i] = True
        rows[i] = {"image": paths[i], **{f"p_{c}": float(v) for c, v in zip(class_names, p)},
                   "predicted": class_names[int(np.argmax(p))], "confidence": float(np.max(p))}
    skipped = [(image, reason) for image, _, reason in _skipped_images(paths, [""] * len(paths), seen)]
    return [rows[i] for i in sorted(rows)], skipped


def _pool_images(pools: Iterable) -> tuple[list[str], list[str]]:
    """All image paths of the pools, in order, with the pool name of each."""
    paths, names = [], []
    for pool in pools:
        for image in pool.images:
            paths.append(str(image))
            names.append(str(pool.name))
    return paths, names


def _batch_predictor(model, tta: str, image_size: int):
    """The compiled, noise-free `images -> probs` of evaluation (TTA views averaged)."""
    from pseudolabel.evaluation import tta_predictor

    return tta_predictor(model, tta, image_hw=(image_size, image_size))


def _check_probs(probs: np.ndarray, num_classes: int) -> np.ndarray:
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise PseudoLabelError(f"the model outputs shape {probs.shape}, expected [batch, {num_classes}] probabilities")
    return probs


def _skipped_images(paths: list[str], pool_names: list[str], seen: np.ndarray) -> list[tuple]:
    """(image, pool, reason) of the images the pipeline skipped, reason as `images.read_image` gives it."""
    from pseudolabel.images import ImageError, read_image

    skipped = []
    for i in np.flatnonzero(~seen):
        try:
            read_image(paths[i])
            reason = "skipped by the input pipeline"
        except ImageError as e:
            reason = e.reason
        skipped.append((paths[i], pool_names[i], reason))
    return skipped


def _write_skipped(out_path: Path, skipped: list[tuple]) -> None:
    with atomic_path(sidecar(out_path, "skipped")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "pool", "reason"])
        writer.writerows(skipped)


def _read_skipped(out_path: Path) -> list[tuple]:
    path = sidecar(out_path, "skipped")
    if not path.exists():
        raise PseudoLabelError(f"{path}: missing (every table written by label_pools has one)")
    with open(path, newline="") as f:
        return [tuple(row) for row in list(csv.reader(f))[1:] if row]


def _summary(out_path: Path, class_names: list[str], row_pools: list[str], predicted: np.ndarray,
             skipped: list[tuple], *, tta: str, image_size: int) -> dict:
    """`<table>.summary.json`: rows per pool and predicted class, skipped images, settings."""
    return {
        "n": len(row_pools),
        "per_pool": dict(Counter(row_pools)),
        "per_class": dict(zip(class_names, np.asarray(predicted).tolist())),
        "skipped": len(skipped),
        "skipped_per_pool": dict(Counter(pool for _, pool, _ in skipped)),
        "tta": tta, "image_size": int(image_size), "table": str(out_path),
    }


def format_summary(summary: dict) -> str:
    pools = ", ".join(f"{name}: {n}" for name, n in summary["per_pool"].items()) or "none"
    classes = ", ".join(f"{name}: {n}" for name, n in summary["per_class"].items())
    return (f"pseudo-labeled {summary['n']} images ({pools}); predicted {classes}; "
            f"skipped {summary['skipped']} unreadable -> {summary['table']}")


# --------------------------------------------------------------------------- sharded labeling

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


def _shard_record(paths: list[str], pool_names: list[str], shard) -> tuple[dict, range]:
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
    skipped: list[tuple]


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
    summary = json.loads(summary_path.read_text())
    if "shard" not in summary:
        raise PseudoLabelError(f"{path}: not a shard's part (its summary records no shard)")
    return _Part(path, summary["shard"], summary, read_pseudo_labels(path), _read_skipped(path))


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
    an image labeled twice. Writes the table, its skipped list and summary atomically (the table
    last), rows in the order an unsharded `label_pools` writes them; returns the table.
    """
    table_path = Path(table_path)
    loaded = [_read_part(Path(p)) for p in (find_parts(table_path) if parts is None else parts)]
    _check_parts(loaded, table_path)
    labeled: dict[int, tuple] = {}  # position in the whole list -> (image, pool, sha256, probs)
    skipped_at: dict[int, tuple] = {}  # position -> (image, pool, reason)
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
    skipped = [skipped_at[p] for p in sorted(skipped_at)]

    with atomic_path(table_path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header(class_names))
            for i in range(len(merged)):
                writer.writerow(_row(merged.images[i], merged.pools[i], merged.sha256[i], merged.probs[i], class_names))
        _write_skipped(table_path, skipped)
        summary = _summary(table_path, class_names, merged.pools, _class_counts(merged.predicted, len(class_names)),
                           skipped, tta=loaded[0].summary["tta"], image_size=loaded[0].summary["image_size"])
        summary["shards"] = {"count": len(loaded), "parts": [part.path.name for part in loaded]}
        atomic_write_json(sidecar(table_path, "summary"), summary)
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


# --------------------------------------------------------------------------- selection


def soft_targets(probs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """`p**(1/T)` renormalised, computed in log space (== softmax(logits / T))."""
    if temperature <= 0:
        raise PseudoLabelError(f"temperature must be > 0, got {temperature}")
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-30, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)


def hard_targets(probs: np.ndarray, label_smoothing: float = 0.1) -> np.ndarray:
    """One-hot argmax smoothed as Keras does: `(1 - eps) * onehot + eps / K`."""
    if not 0.0 <= label_smoothing < 1.0:
        raise PseudoLabelError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    k = probs.shape[1]
    onehot = np.eye(k, dtype=np.float64)[np.argmax(probs, axis=1)]
    return ((1.0 - label_smoothing) * onehot + label_smoothing / k).astype(np.float32)


def balance_indices(predicted: np.ndarray, confidence: np.ndarray, num_classes: int,
                    per_class: int = 0, seed: int = 0) -> np.ndarray:
    """Row indices giving every predicted class exactly `per_class` rows (0: the largest class count).

    Classes with more keep their most confident rows; classes with fewer repeat every row
    `target // n` times plus a seeded random `target % n` rows once more. Empty classes stay empty.
    """
    counts = _class_counts(predicted, num_classes)
    target = int(per_class) if per_class > 0 else int(counts.max(initial=0))
    rng = np.random.default_rng(seed)
    keep = []
    for k in range(num_classes):
        members = np.flatnonzero(predicted == k)
        if len(members) == 0:
            continue
        ranked = members[np.argsort(-confidence[members], kind="stable")]
        if len(ranked) >= target:
            keep.append(ranked[:target])
        else:
            extra = rng.choice(ranked, size=target % len(ranked), replace=False)
            keep.append(np.concatenate([np.tile(ranked, target // len(ranked)), np.sort(extra)]))
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)


def select_pseudo_labels(
    table: PseudoLabelTable | str | Path,
    *,
    mode: str = "soft",
    temperature: float = 1.0,
    label_smoothing: float = 0.1,
    threshold: float = 0.3,
    balance: bool = True,
    per_class: int = 0,
    seed: int = 0,
) -> tuple[list[str], np.ndarray, dict]:
    """Training targets from a table: (paths, targets [N, K] float32, report).

    Rows with confidence < `threshold` are dropped; with `balance`, every predicted class ends
    with exactly `per_class` rows (0: the largest class count after thresholding), so paths can
    repeat. The report counts rows per class and per pool before, after the threshold and after
    balancing, plus the settings.
    """
    if not isinstance(table, PseudoLabelTable):
        table = read_pseudo_labels(table)
    if mode not in MODES:
        raise PseudoLabelError(f"unknown pseudo-label mode {mode!r}; choose soft or hard")
    k = len(table.class_names)
    predicted, confidence = table.predicted, table.confidence
    kept = np.flatnonzero(confidence >= threshold)
    rows = kept
    if balance and len(kept):
        rows = kept[balance_indices(predicted[kept], confidence[kept], k, per_class, seed)]
    probs = table.probs[rows].reshape(len(rows), k)
    targets = soft_targets(probs, temperature) if mode == "soft" else hard_targets(probs, label_smoothing)
    paths = [table.images[i] for i in rows]
    report = {
        "settings": {"mode": mode, "temperature": temperature, "label_smoothing": label_smoothing,
                     "threshold": threshold, "balance": balance, "per_class": per_class, "seed": seed},
        "class_names": list(table.class_names),
        "before": _counts(table, np.arange(len(table))),
        "after_threshold": _counts(table, kept),
        "selected": {**_counts(table, rows), "unique_images": int(len(np.unique(rows)))},
    }
    # Balancing cannot create a class the teacher never predicted confidently: say so.
    report["empty_classes"] = [c for c, n in report["selected"]["per_class"].items() if n == 0]
    return paths, targets, report


def _counts(table: PseudoLabelTable, rows: np.ndarray) -> dict:
    predicted = table.predicted[rows] if len(rows) else np.zeros(0, np.int64)
    return {
        "n": int(len(rows)),
        "per_class": {name: int(n) for name, n in zip(table.class_names, _class_counts(predicted, len(table.class_names)))},
        "per_pool": dict(Counter(table.pools[i] for i in rows)),
    }


def _class_counts(predicted: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(predicted, np.int64), minlength=num_classes)[:num_classes]


def write_selection_report(path: str | Path, report: dict) -> Path:
    return atomic_write_json(path, report)


def describe_selection(report: dict) -> str:
    sel = report["selected"]
    classes = ", ".join(f"{c}: {n}" for c, n in sel["per_class"].items())
    pools = ", ".join(f"{p}: {n}" for p, n in sel["per_pool"].items()) or "none"
    text = (f"pseudo-labels: {report['before']['n']} rows, {report['after_threshold']['n']} with confidence >= "
            f"{report['settings']['threshold']}, {sel['n']} selected ({sel['unique_images']} unique; {classes}; "
            f"pools {pools})")
    if report.get("empty_classes"):
        text += f"\nwarning: no pseudo-labels for class(es) {', '.join(report['empty_classes'])}"
    return text


__all__ = [
    "PseudoLabelTable", "PseudoLabelError", "label_pools", "read_pseudo_labels", "select_pseudo_labels",
    "soft_targets", "hard_targets", "balance_indices", "file_sha256", "sidecar", "parse_shard", "part_path",
    "find_parts", "merge_pseudo_label_parts",
]
