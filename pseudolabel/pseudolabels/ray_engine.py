"""The Ray Data labeling engine (`label_pools(..., engine="ray")`, `pseudolabel label --engine ray`).

    ray.data.from_items(batches of pool paths, cut by position)
      -> map(decode)                        Ray tasks: read, hash and decode each batch's files
      -> map_batches(Predictor, actors)     each actor loads the classifier once (load_classifier)
      -> iter_rows()                        results stream back to the driver, put in order

The units are the batches of `batches.py` (positions k*B .. (k+1)*B - 1), decoded by the same
`decode_batch` and predicted by the same `predict_decoded` as the local engine, so the driver
writes the same table, skipped list and summary, byte for byte. A file that fails to decode on a
worker is a blank with its reason (listed, never a failed job). The model travels as the bytes
of its .keras file through Ray's object store, so the workers need no copy of it; the pool images
must be readable at the same paths on every node (same path, or shared storage).

With no `address` a local Ray is started (2 CPUs unless told otherwise, no dashboard, quiet);
with one (`ray://...`, `host:port` or "auto") the driver joins that cluster. A Ray that one
labeling started is shut down (a joined cluster: left) when that labeling ends: on two cores an
idle local Ray beside the model slowed the local engine by about a fifth (BENCHMARKS.md,
2026-12-03), and the students that `run` trains next share those cores. Restarting costs tens of
seconds a round. A Ray the caller initialised first is used and left as it is.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from pseudolabel.pseudolabels.batches import PredictedBatch, batch_starts, decode_batch, predict_decoded
from pseudolabel.pseudolabels.table import PseudoLabelError

__all__ = ["RAY_MISSING", "connect", "ray_batches", "ray_for_one_labeling", "require_ray"]

RAY_MISSING = "--engine ray needs Ray, which is not installed: pip install -e \".[ray]\" (or pip install \"ray[data]\")"
LOCAL_CPUS = 2
WORKER_NICENESS = "RAY_worker_niceness"   # Ray's own setting, read by the raylet it starts


def require_ray():
    """The `ray` module with Ray Data, or a one-line PseudoLabelError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise PseudoLabelError(RAY_MISSING) from None
    return ray


def connect(address: str | None = None, *, num_cpus: int = LOCAL_CPUS):
    """Ray, initialised: joined to the cluster at `address`, else a local one on `num_cpus` CPUs
    (an already initialised Ray is used as it is)."""
    from pseudolabel import quiet

    ray = require_ray()
    if not ray.is_initialized():
        # Ray takes tens of seconds to start on a small machine: say what the wait is.
        print(f"ray: joining the cluster at {address}" if address else f"ray: starting a local Ray on {num_cpus} CPUs",
              file=sys.stderr, flush=True)
        options = quiet.ray_init_options()
        with contextlib.nullcontext() if quiet.is_verbose() else quiet.banners_filtered():
            if address:
                ray.init(address=address, **options)
            else:
                # Ray runs its workers at nice 15 by default: on a machine shared with anything
                # else they would lose to it, where the local engine would not. Our own local Ray
                # works at the driver's niceness (the user's env var wins).
                os.environ.setdefault(WORKER_NICENESS, str(os.nice(0)))
                ray.init(num_cpus=num_cpus, include_dashboard=False, **{"log_to_driver": False, **options})
    quiet.quiet_ray()
    return ray


@contextlib.contextmanager
def ray_for_one_labeling(address: str | None = None):
    """Ray as `connect` gives it; shut down afterwards if this call started it (or joined a
    cluster), left as it is if the caller had initialised it (module docstring)."""
    started_here = not require_ray().is_initialized()
    ray = connect(address)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def ray_batches(model, paths: list[str], *, image_size: int, batch_size: int, tta: str, num_classes: int,
                address: str | None = None, model_file: str | Path | None = None,
                actors: int | None = None) -> Iterator[PredictedBatch]:
    """Every batch of `paths`, in order, predicted on Ray (see the module docstring). `actors`:
    model-holding actors (default: one per 2 CPUs of the cluster, at least 1)."""
    with ray_for_one_labeling(address) as ray:
        yield from _predicted_on(ray, model, paths, image_size=image_size, batch_size=batch_size, tta=tta,
                                 num_classes=num_classes, model_file=model_file, actors=actors)


def _predicted_on(ray, model, paths, *, image_size, batch_size, tta, num_classes, model_file, actors):
    """`ray_batches` on a connected `ray`: the Ray Data pipeline, its results put in order."""
    model_ref = ray.put(_model_bytes(model, model_file))
    items = [{"start": s, "paths": paths[s:s + batch_size]} for s in batch_starts(len(paths), batch_size)]
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", LOCAL_CPUS)) // 2)
    dataset = (ray.data.from_items(items, override_num_blocks=len(items))
               # Half a CPU a decode task: the actors keep theirs, and Ray does not fuse the two steps.
               .map(_decode_row, fn_kwargs={"image_size": int(image_size)}, num_cpus=0.5)
               .map_batches(_Predictor, batch_size=1, batch_format="numpy", num_cpus=1,
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=int(actors)),
                            fn_constructor_kwargs={"model_ref": model_ref, "tta": tta, "image_size": int(image_size),
                                                   "num_classes": int(num_classes)}))
    dataset.context.execution_options.preserve_order = True
    waiting, expected = {}, iter(batch_starts(len(paths), batch_size))
    want = next(expected, None)
    for row in dataset.iter_rows():
        batch = pickle.loads(row["batch"])
        waiting[batch.start] = batch
        while want is not None and want in waiting:  # in order, whatever order they arrive in
            yield waiting.pop(want)
            want = next(expected, None)
    if want is not None:
        raise PseudoLabelError(f"Ray returned no result for the batch at position {want} (a lost worker?)")


def _model_bytes(model, model_file) -> bytes:
    """The .keras file the actors load: `model_file`, else `model` saved to a temporary file."""
    if model_file is not None:
        return Path(model_file).read_bytes()
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return (path / "model.keras" if path.is_dir() else path).read_bytes()
    with tempfile.TemporaryDirectory(prefix="pseudolabel-ray-") as tmp:
        target = Path(tmp) / "model.keras"
        model.save(target)
        return target.read_bytes()


def _decode_row(row: dict, *, image_size: int) -> dict:
    """Ray task: one batch's files read, hashed and decoded (a bad file a blank with its reason)."""
    decoded = decode_batch(list(row["paths"]), int(row["start"]), image_size)
    return {"start": int(row["start"]), "decoded": pickle.dumps(decoded, protocol=5)}


class _Predictor:
    """Ray actor: holds the classifier (loaded once from the shipped .keras bytes) and its compiled forward."""

    def __init__(self, model_ref, tta: str, image_size: int, num_classes: int):
        import ray

        from pseudolabel import quiet
        from pseudolabel.pseudolabels.predict import batch_predictor, load_classifier

        quiet.set_library_defaults()
        with tempfile.TemporaryDirectory(prefix="pseudolabel-actor-") as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(ray.get(model_ref))
            self.model, _, _ = load_classifier(path)
        self.forward = batch_predictor(self.model, tta, image_size)
        self.num_classes = num_classes

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        results = [pickle.dumps(predict_decoded(self.forward, pickle.loads(blob), self.num_classes), protocol=5)
                   for blob in batch["decoded"]]
        return {"start": np.asarray(batch["start"]), "batch": np.array(results, dtype=object)}
