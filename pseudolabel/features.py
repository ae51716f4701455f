"""Backbone features: extracted once per image set in inference mode, cached in a run directory.

The frozen backbone's output for an image never changes, so the teacher's phase 1 and the linear
probe fit on features computed ONCE (and reused across reruns while the backbone's weights, the
image size, the views and the split are the same) instead of running the backbone every epoch.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from pseudolabel.lifecycle import task_subset
from pseudolabel.rundir import atomic_path
from pseudolabel.training import predict_verbose

FEATURES_NPZ = "features.npz"


def extract_features(backbone, dataset, *, verbose="auto") -> np.ndarray:
    """Pooled features `[N, D]` (float32) of every image `dataset` yields, in order, inference mode.

    `dataset` yields image batches or `(images, ...)` tuples (only the images are used).
    """
    import warnings

    import tensorflow as tf

    images_only = dataset.map(lambda *e: e[0]) if isinstance(dataset, tf.data.Dataset) and _is_tuple(dataset) else dataset
    with warnings.catch_warnings():
        # A dataset of unknown length (a pool whose unreadable images are skipped) makes Keras'
        # predict warn "Your input ran out of data" at its end, which is where it should stop.
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        return np.asarray(backbone.predict(images_only, verbose=predict_verbose(verbose)), dtype=np.float32)


def _is_tuple(dataset) -> bool:
    return isinstance(dataset.element_spec, tuple)


def plain_dataset(paths, *, image_size: int, batch_size: int):
    """Images in file order, no augmentation: what evaluation and feature extraction read."""
    from pseudolabel.pipeline import make_dataset

    return make_dataset(paths, image_size=image_size, batch_size=batch_size, shuffle=False, augment=None,
                        cache=None, repeat=False)


def weights_fingerprint(model) -> str:
    """sha1 of all weights of `model`: cached features are only reused for the very same backbone
    (a randomly initialised one, or other weights under the same file name, gets new features)."""
    digest = hashlib.sha1()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def augmented_dataset(paths, *, image_size: int, batch_size: int, augment: str, seed: int):
    from pseudolabel.augment import get_augment
    from pseudolabel.pipeline import make_dataset

    return make_dataset(paths, image_size=image_size, batch_size=batch_size, shuffle=False, seed=seed,
                        augment=get_augment(augment, image_size, seed=seed), cache=None, repeat=False)


def compute_features(backbone, task, *, image_size: int, batch_size: int, views: int = 1,
                     augment: str = "teacher", seed: int = 0, verbose="auto") -> dict[str, np.ndarray]:
    """Backbone features of train (1 clean + views-1 augmented copies, stacked) and val (clean)."""
    train_paths, train_y = task_subset(task, "train")
    val_paths, val_y = task_subset(task, "val")
    plain = dict(image_size=image_size, batch_size=batch_size)
    train_x = [extract_features(backbone, plain_dataset(train_paths, **plain), verbose=verbose)]
    for view in range(1, int(views)):
        ds = augmented_dataset(train_paths, **plain, augment=augment, seed=seed + view)
        train_x.append(extract_features(backbone, ds, verbose=verbose))
    return {
        "train_x": np.concatenate(train_x),
        "train_y": np.tile(train_y, len(train_x)),
        "val_x": extract_features(backbone, plain_dataset(val_paths, **plain), verbose=verbose),
        "val_y": val_y,
    }


def cached_features(path, key: dict, compute) -> tuple[dict[str, np.ndarray], bool]:
    """The features cached in `path` (.npz) when their key matches `key`, else `compute()` saved
    there atomically. Returns (features, reused). A damaged cache is computed again."""
    path = Path(path)
    key_text = json.dumps(key, sort_keys=True)
    if path.exists():
        try:
            with np.load(path) as npz:
                if str(npz["key"]) == key_text:
                    return {k: npz[k] for k in npz.files if k != "key"}, True
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            print(f"{path}: damaged ({type(e).__name__}); computing the features again")
    features = compute()
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.array(key_text), **features)
    return features, False


