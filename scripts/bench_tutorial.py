"""The tutorials' teacher training vs pseudolabel's, same backbone, epochs and resolution, in one run.

    python scripts/bench_tutorial.py                      # Lite0 at 224 px, 30 epochs (4-8 min on 2 cores)
    python scripts/bench_tutorial.py --quick --out /tmp/bench.md
    python scripts/bench_tutorial.py --epochs 60 --backbone efficientnet_lite1

Both variants train the same classifier (`backbones.create_model`: frozen ImageNet backbone ->
BatchNorm -> Dropout -> Dense head, the recipe's dropout), with the same optimizer (Adam at the
recipe's phase-1 learning rate), batch size, balanced class weights, seed, number of epochs (no
early stopping: patience = epochs) and resolution, on the fixed House Rooms split:

- tutorial: the Keras tutorials' way. A Python batch generator -- a `keras.utils.PyDataset`, the
  Keras 3 successor of the `Sequence` that `ImageDataGenerator.flow_from_directory` returned
  (ImageDataGenerator itself is gone from Keras 3) -- loads each image with Pillow
  (`images.read_image`), applies the tutorial's augmentation (`augment` policy "teacher":
  rotation, zoom, shift, shear, flip, brightness) and feeds `model.fit` with Keras' defaults
  (one worker, no multiprocessing). The frozen backbone runs on every image every epoch, and
  the weights of the last epoch are kept, as in the tutorial.
- pseudolabel: `training.train_teacher` phase 1 only -- backbone features of the clean train and
  val images computed once, the head fitted on them, the best epoch by val_loss kept.

Reported: training wall time of each and their ratio, end-to-end wall time (model build,
training, test predictions, and for train_teacher its run-directory files), and the test ROC AUC
of P(modern) with its 95% bootstrap CI (`evaluation.evaluate_predictions`) and the paired
difference on the same test images. The two differ in more than speed -- augmentation vs clean
features, last vs best epoch -- and both AUCs are reported for exactly that reason.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import _bench_common as bc

DEFAULT_RECIPE = bc.REPO / "teachers" / "efficientnet_lite0.toml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=bc.DEFAULT_DATA, help="House Rooms folder (labels.csv inside)")
    p.add_argument("--split", type=Path, default=bc.DEFAULT_SPLIT, help="fixed split CSV")
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="teacher recipe (model, lr, batch size)")
    p.add_argument("--backbone", default=None, help="override the recipe's backbone")
    p.add_argument("--epochs", type=int, default=30,
                   help="epochs of both variants (30: about where the recipe's early stopping ends phase 1)")
    p.add_argument("--runs", type=Path, default=None, help="keep the run directories here (default: a temporary folder)")
    bc.add_report_args(p)
    args = p.parse_args(argv)
    args.subsample = None
    if args.quick:
        args.epochs, args.subsample = 2, {"train": 48, "val": 24}
    return args


def small_task(task, keep: dict[str, int]):
    """The same task with only the first `keep[part]` images of some parts (quick mode); test whole."""
    from pseudolabel.data import Split

    seen: dict[str, int] = {}
    items = []
    for image, label, part in task.split.items:
        seen[part] = seen.get(part, 0) + 1
        if seen[part] <= keep.get(part, 10**9):
            items.append((image, label, part))
    split = Split(task.split.root, items, task.class_map, source=None)
    return SimpleNamespace(root=task.root, class_map=task.class_map, split=split, labeled=split.labeled_set())


# =========================================================================== the tutorial's way


def tutorial_batches(paths, labels, *, num_classes: int, image_size: int, batch_size: int, augment=None,
                     shuffle: bool = False, seed: int = 0):
    """A PyDataset of (float32 pixels, one-hot) batches: Pillow loading + per-image augmentation in
    Python, reshuffled every epoch -- what ImageDataGenerator.flow_from_directory did."""
    import keras
    import numpy as np

    from pseudolabel.images import read_image

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()   # Keras' defaults: workers=1, use_multiprocessing=False
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(paths)) if shuffle else np.arange(len(paths))
            self.onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]

        def __len__(self):
            return math.ceil(len(paths) / batch_size)

        def __getitem__(self, i):
            rows = self.order[i * batch_size:(i + 1) * batch_size]
            x = np.empty((len(rows), image_size, image_size, 3), np.float32)
            for j, k in enumerate(rows):
                image = read_image(paths[k], image_size)
                x[j] = augment(image) if augment is not None else image
            return x, self.onehot[rows]

        def on_epoch_end(self):
            if shuffle:
                self.order = self.rng.permutation(len(paths))

    return Batches()


def run_tutorial(recipe: dict, task, epochs: int) -> dict:
    import keras

    from pseudolabel import training
    from pseudolabel.augment import get_augment
    from pseudolabel.backbones import freeze_backbone
    from pseudolabel.evaluation import evaluate_predictions, predict
    from pseudolabel.features import plain_dataset
    from pseudolabel.lifecycle import image_names

    t = recipe.train
    started = time.perf_counter()
    keras.utils.set_random_seed(t.seed)
    model = training.build_model(recipe, len(task.class_map.names))
    size = recipe.model.image_size
    freeze_backbone(model)
    training.compile_classifier(model, t.phase1_lr)
    num_classes, bs = len(task.class_map.names), t.batch_size
    train_paths, train_y = task.split.subset("train")
    val_paths, val_y = task.split.subset("val")
    common = dict(num_classes=num_classes, image_size=size, batch_size=bs)
    train = tutorial_batches(train_paths, train_y, **common, shuffle=True, seed=t.seed,
                             augment=get_augment("teacher", size, seed=t.seed))
    val = tutorial_batches(val_paths, val_y, **common)
    fit_started = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=epochs, verbose=2,
                        class_weight=training.class_weights(train_y, num_classes, t.class_weight))
    fit_s = time.perf_counter() - fit_started
    test_paths, y = task.split.subset("test")
    names = image_names(test_paths, task.root)
    probs = predict(model, plain_dataset(test_paths, image_size=size, batch_size=bs))
    metrics = evaluate_predictions(y, probs, [str(c) for c in task.class_map.names],
                                   positive_index=task.class_map.positive_index)
    return {"metrics": metrics, "names": names, "probs": probs, "fit_s": fit_s, "epochs": len(history.epoch),
            "total_s": time.perf_counter() - started, "val_loss": history.history["val_loss"][-1]}


# =========================================================================== pseudolabel's way


def run_pseudolabel(recipe: dict, task, run_dir: Path) -> dict:
    from pseudolabel.evaluation import read_predictions
    from pseudolabel.teacher import train_teacher

    started = time.perf_counter()
    metrics = train_teacher(recipe, task, run_dir, verbose=2)   # a fresh, timestamped run directory
    total_s = time.perf_counter() - started
    predictions = read_predictions(run_dir / "test_predictions.csv")
    timings = metrics["timings"]
    return {"metrics": metrics, "names": list(predictions.images), "probs": predictions.probs,
            "features_s": timings["features_s"], "head_fit_s": timings["phase1_fit_s"],
            "fit_s": timings["features_s"] + timings["phase1_fit_s"], "epochs": metrics["epochs"]["phase1"],
            "total_s": total_s, "val_loss": metrics["phase1"]["best_val_loss"] if metrics.get("phase1") else None}


def warm_up(recipe: dict, num_classes: int) -> None:
    """One forward pass of a throwaway model: TensorFlow's and oneDNN's one-time set-up (and the
    weight file's first read) happen here, not in whichever variant runs first."""
    import numpy as np

    from pseudolabel import training

    model = training.build_model(recipe, num_classes)
    size = recipe.model.image_size
    model.predict(np.zeros((2, size, size, 3), np.float32), verbose=0)


# =========================================================================== report


def fmt_auc(m: dict) -> str:
    lo, hi = m["roc_auc_ci"]
    return f"{m['roc_auc']:.3f} [95% CI {lo:.3f}, {hi:.3f}]"


def paired(task, tut: dict, pl: dict) -> dict:
    from pseudolabel.evaluation import paired_auc_difference

    row_of = {name: i for i, name in enumerate(pl["names"])}
    order = [row_of[name] for name in tut["names"]]
    _, y = task.split.subset("test")
    return paired_auc_difference(y, tut["probs"], pl["probs"][order], positive_index=task.class_map.positive_index)


def section(args, command, machine_text, split_source, task, recipe, tut, pl, diff, wall_s) -> str:
    sizes = task.split.sizes()
    m = recipe.model
    ratio = tut["fit_s"] / pl["fit_s"]
    lines = bc.section_head(
        "Tutorial pipeline vs pseudolabel, teacher phase 1" + (" (QUICK, not results)" if args.quick else ""),
        command, machine_text,
        f"Data: {args.data} (Modern vs not-Modern), split {split_source} (sha256 {task.split.hash[:12]}...): "
        f"train {sizes['train']}, val {sizes['val']}, test {sizes['test']}",
        f"Model: {m.backbone} at {pl['metrics']['image_size']} px, ImageNet "
        f"weights, frozen; head BatchNorm -> Dropout({m.dropout}) -> Dense; Adam {recipe.train.phase1_lr:g}, "
        f"batch {recipe.train.batch_size}, balanced class weights, seed {recipe.train.seed}; "
        f"{args.epochs} epochs each, no early stopping; pseudolabel ran first, the tutorial second, after a "
        f"warm-up forward pass (one-time library set-up is in neither); whole script {wall_s / 60:.1f} min",
    )
    lines += bc.quick_note(args.quick)
    lines += [
        "| variant | training wall time | end to end | epochs | test ROC AUC (P(modern)) | accuracy |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| tutorial: Python batch generator (Pillow + `teacher` augmentation) -> `model.fit`, frozen backbone "
        f"every epoch, last epoch kept | {tut['fit_s']:.1f} s | {tut['total_s']:.1f} s | {tut['epochs']} "
        f"| {fmt_auc(tut['metrics'])} | {tut['metrics']['accuracy']:.3f} |",
        f"| pseudolabel: `train_teacher` phase 1, features once ({pl['features_s']:.1f} s) + head fit "
        f"({pl['head_fit_s']:.1f} s), best val_loss epoch kept | {pl['fit_s']:.1f} s | {pl['total_s']:.1f} s "
        f"| {pl['epochs']} | {fmt_auc(pl['metrics'])} | {pl['metrics']['accuracy']:.3f} |",
        "",
        f"- Training wall-time ratio, tutorial / pseudolabel: **{ratio:.1f}x** "
        f"({tut['fit_s'] / args.epochs:.1f} s vs {pl['head_fit_s'] / max(pl['epochs'], 1):.2f} s per epoch once the "
        f"features exist); end to end {tut['total_s'] / pl['total_s']:.1f}x.",
        f"- Test ROC AUC, pseudolabel minus tutorial on the same {diff['n']} images: {diff['diff']:+.3f} "
        f"[paired bootstrap 95% CI {diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}], DeLong p = {diff['p_value']:.2f}.",
        "- End to end: model build + training + test predictions; for `train_teacher` also its run directory "
        "(val predictions, checkpoints, model.keras, curves).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    command, machine_text = bc.command_line(), bc.machine()
    started = time.perf_counter()
    from pseudolabel.config import load_recipe

    task, split_source = bc.load_house_rooms(args.data, args.split)
    if args.subsample:
        task = small_task(task, args.subsample)
        split_source += f" (quick: first {args.subsample} images)"
    overrides = {"train": {"phase1_epochs": args.epochs, "phase1_patience": args.epochs, "phase2_epochs": 0}}
    if args.backbone:
        overrides["model"] = {"backbone": args.backbone}
    recipe = load_recipe(args.recipe, "teacher", overrides)
    warm_up(recipe, len(task.class_map.names))
    with tempfile.TemporaryDirectory(prefix="bench_tutorial_") as tmp:
        runs = args.runs or Path(tmp)
        bc.log(f"pseudolabel: train_teacher phase 1, {args.epochs} epochs")
        pl = run_pseudolabel(recipe, task, runs / "pseudolabel_teacher")
        bc.log(f"tutorial: generator -> fit, frozen backbone every epoch, {args.epochs} epochs")
        tut = run_tutorial(recipe, task, args.epochs)
    diff = paired(task, tut, pl)
    text = section(args, command, machine_text, split_source, task, recipe, tut, pl, diff,
                   time.perf_counter() - started)
    bc.publish(args.report, text)


if __name__ == "__main__":
    main()
