"""A classifier over image files: load a run's model, stream images through it in batches
(no noise: inference mode, optional TTA), list the unreadable ones; `predict_images` for new
images, and the streaming that `label_pools` writes its table from."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.pseudolabels.table import PseudoLabelError
from pseudolabel.rundir import MANIFEST, read_json, read_manifest, verify_manifest

__all__ = ["batch_predictor", "load_classifier", "predict_images", "stream_predictions", "unreadable_reasons"]


def load_classifier(path: str | Path, class_names: Sequence[str] | None = None):
    """(model, model file, class names or None) from a run directory (its model.keras) or a
    .keras file; the class names are the ones its run recorded in metrics.json, if any. With
    `class_names` (a task's), a model that predicts other classes is refused (`check_classes`).

    A model file that its run's manifest does not verify, that is not a .keras archive, or that
    Keras cannot load is a one-line PseudoLabelError naming the file as damaged.
    """
    import keras

    path = Path(path)
    model_file = path / "model.keras" if path.is_dir() else path
    if not model_file.exists():
        raise PseudoLabelError(f"{model_file}: no such model (is the run finished?)")
    _check_model_file(model_file)
    try:
        model = keras.models.load_model(model_file, compile=False)
    except Exception as e:  # Keras reports a damaged archive as anything, even "File not found"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise PseudoLabelError(f"{model_file}: damaged, Keras cannot load it ({reason}); "
                               "train the model again or restore the file") from None
    metrics = model_file.parent / "metrics.json"
    names = read_json(metrics).get("class_names") if metrics.exists() else None
    recorded = [str(c) for c in names] if names else None
    if class_names is not None:
        check_classes(model, model_file, [str(c) for c in class_names], recorded)
    return model, model_file, recorded


def check_classes(model, model_file: Path, class_names: list[str], recorded: list[str] | None) -> None:
    """The model must predict the task's classes (their count, and their names when its run recorded them)."""
    outputs = int(model.output_shape[-1])
    if outputs != len(class_names):
        raise PseudoLabelError(f"{model_file}: the model predicts {outputs} classes, the task has "
                               f"{len(class_names)} ({', '.join(class_names)})")
    if recorded and list(recorded) != class_names:
        raise PseudoLabelError(f"{model_file}: the model was trained on classes {recorded}, "
                               f"the task's are {class_names}")


def _check_model_file(model_file: Path) -> None:
    """The run's manifest (when it lists the model) verifies; a .keras file is a whole zip archive."""
    manifest = model_file.parent / MANIFEST
    if manifest.exists() and model_file.name in read_manifest(model_file.parent).get("files", {}):
        problems = [p for p in verify_manifest(model_file.parent) if p.startswith(str(model_file))]
        if problems:
            raise PseudoLabelError(problems[0] + "; train the model again or restore the file")
    if model_file.suffix == ".keras" and not zipfile.is_zipfile(model_file):
        size = model_file.stat().st_size
        raise PseudoLabelError(f"{model_file}: damaged, not a .keras archive ({size} bytes; truncated or "
                               "overwritten?); train the model again or restore the file")


def predict_images(model, paths: Sequence[str | Path], *, class_names: Sequence[str], tta: str = "none",
                   batch_size: int = 32, progress: bool = True) -> tuple[list[dict], list[tuple[str, str]]]:
    """Class probabilities of new images: rows {image, p_<class>..., predicted, confidence} in
    input order, and (image, reason) of the images that could not be read (skipped, not fatal)."""
    from tqdm import tqdm

    from pseudolabel.pseudolabels.batches import local_batches

    paths = [str(p) for p in paths]
    if not paths:
        raise PseudoLabelError("no images to predict")
    if int(batch_size) < 1:
        raise PseudoLabelError(f"batch_size must be >= 1, got {batch_size}")
    class_names = [str(c) for c in class_names]
    size = int(model.input_shape[1])
    rows, skipped = [], []
    batches = local_batches(paths, image_size=size, batch_size=int(batch_size),
                            predict=batch_predictor(model, tta, size), num_classes=len(class_names))
    with tqdm(total=len(paths), desc="predicting", unit="img", disable=not progress) as bar:
        for batch in batches:
            rows += [{"image": paths[i], **{f"p_{c}": float(v) for c, v in zip(class_names, p)},
                      "predicted": class_names[int(np.argmax(p))], "confidence": float(np.max(p))}
                     for i, _, p in batch.rows]
            skipped += [(paths[i], reason) for i, reason in batch.failed]
            bar.update(len(batch.rows) + len(batch.failed))
    return rows, skipped


def stream_predictions(model, paths, image_size, batch_size, tta, num_classes, progress=False):
    """(index into `paths`, probabilities) of every readable image, one batch (cut by position) at a time."""
    from pseudolabel.pseudolabels.batches import local_batches

    for batch in local_batches(paths, image_size=image_size, batch_size=batch_size,
                               predict=batch_predictor(model, tta, image_size), num_classes=num_classes):
        for i, _, probs in batch.rows:
            yield i, probs


# The compiled forwards of a model, by (tta, image size): kept on the model object itself, so they
# live as long as it does and a second labeling with the same model traces nothing.
_PREDICTORS = "_pseudolabel_predictors"


def batch_predictor(model, tta: str, image_size: int):
    """The compiled, noise-free `uint8 images -> probs` of evaluation (TTA views averaged), one per
    (model, tta, image size), made once and reused by every later call."""
    from pseudolabel.evaluation import tta_predictor

    cache = model.__dict__.get(_PREDICTORS)
    if cache is None:
        cache = {}
        # object.__setattr__: Keras' attribute tracking would wrap the dict (and try to save it).
        object.__setattr__(model, _PREDICTORS, cache)
    key = (str(tta), int(image_size))
    if key not in cache:
        cache[key] = _from_uint8(tta_predictor(model, tta, image_hw=(int(image_size), int(image_size))),
                                 int(image_size))
    return cache[key]


def _from_uint8(forward, image_size: int):
    """`forward` fed the decoded uint8 batches as they are, cast to float32 inside the graph: the
    same values as casting them in NumPy first (uint8 -> float32 is exact), without a 4x larger
    copy per batch made and handed to TensorFlow on the cores the model needs (labeling ran ~3%
    closer to the model's speed). `.float_forward` is the function on float32 batches."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)])
    def probs_of_uint8(images):
        return forward(tf.cast(images, tf.float32))

    probs_of_uint8.float_forward = forward
    return probs_of_uint8


def unreadable_reasons(paths: list[str], pool_names: list[str], seen: np.ndarray) -> list[tuple]:
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
