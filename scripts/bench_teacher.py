"""Benchmark the supervised teacher on House Rooms and append the figures to BENCHMARKS.md.

    python scripts/bench_teacher.py                      # data beside the checkout, EfficientNet-Lite0 at 224
    python scripts/bench_teacher.py --data /path/to/house_rooms --epochs 10 --phase2-epochs 3

Measures, on one machine in one run:
1. Phase 1 wall time, same head, same epochs, same data: (a) backbone features computed once,
   head fitted on them (what `train_teacher` does) vs (b) the frozen backbone run on every
   image every epoch (the Keras tutorial's way). Decoded images are cached in memory for (b),
   so only the backbone's work differs.
2. The teacher of `teachers/efficientnet_lite0.toml` (phase 1 + a short phase 2): test ROC AUC
   with its 95% bootstrap CI, and its timings.
3. The linear probe (frozen Lite0 features + logistic regression): test ROC AUC with CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from _bench_common import DEFAULT_DATA, DEFAULT_SPLIT, REPO, command_line, load_house_rooms, machine, publish

DEFAULT_RECIPE = REPO / "teachers" / "efficientnet_lite0.toml"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="House Rooms folder (labels.csv inside)")
    p.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split CSV; made with seed 0 if missing")
    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="teacher recipe")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--epochs", type=int, default=10, help="phase-1 epochs of the timing comparison")
    p.add_argument("--phase2-epochs", type=int, default=None, help="override the recipe's phase2_epochs")
    p.add_argument("--out", type=Path, default=None, help="run directories (default runs/bench_teacher/<time>)")
    p.add_argument("--report", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--skip-timing", action="store_true", help="skip the cached-vs-frozen timing comparison")
    return p.parse_args()


def time_phase1(task, backbone_name: str, epochs: int, batch_size: int = 32, seed: int = 0) -> dict:
    """Same head (same initial weights), same epochs: cached features vs frozen backbone every epoch."""
    import keras

    from pseudolabel import training
    from pseudolabel.backbones import create_model, freeze_backbone, get_spec
    from pseudolabel.features import compute_features
    from pseudolabel.pipeline import make_dataset

    size = get_spec(backbone_name).image_size
    num_classes = len(task.class_map.names)
    keras.utils.set_random_seed(seed)
    model = create_model(backbone_name, num_classes, image_size=size, dropout=0.5)
    freeze_backbone(model)
    head = model.get_layer("head")
    initial_head = head.get_weights()
    train_paths, train_y = task.split.subset("train")
    val_paths, val_y = task.split.subset("val")
    weights = training.class_weights(train_y, num_classes)
    fit = dict(epochs=epochs, class_weight=weights, verbose=2)

    print(f"\n== (a) features once, then {epochs} head epochs")
    started = time.perf_counter()
    features = compute_features(model.get_layer("backbone"), task, image_size=size, batch_size=batch_size)
    extracted = time.perf_counter()
    keras.utils.set_random_seed(seed)
    training.compile_classifier(head, 1e-3)
    cached = head.fit(features["train_x"], training.one_hot(features["train_y"], num_classes), batch_size=batch_size,
                      validation_data=(features["val_x"], training.one_hot(features["val_y"], num_classes)),
                      shuffle=True, **fit)
    cached_done = time.perf_counter()

    print(f"\n== (b) frozen backbone on every image, {epochs} epochs (decoded images cached in memory)")
    head.set_weights(initial_head)
    keras.utils.set_random_seed(seed)
    training.compile_classifier(model, 1e-3)
    train_ds = make_dataset(train_paths, train_y, image_size=size, batch_size=batch_size, shuffle=True, seed=seed,
                            cache="memory", num_classes=num_classes)
    val_ds = make_dataset(val_paths, val_y, image_size=size, batch_size=batch_size, cache="memory",
                          num_classes=num_classes)
    frozen_started = time.perf_counter()
    frozen = model.fit(train_ds, validation_data=val_ds, shuffle=False, **fit)
    frozen_done = time.perf_counter()

    cached_s = cached_done - started
    frozen_s = frozen_done - frozen_started
    return {
        "epochs": epochs, "n_train": len(train_paths), "n_val": len(val_paths), "image_size": size,
        "feature_s": extracted - started, "head_fit_s": cached_done - extracted, "cached_total_s": cached_s,
        "frozen_total_s": frozen_s, "ratio": frozen_s / cached_s,
        "cached_val_loss": cached.history["val_loss"][-1], "frozen_val_loss": frozen.history["val_loss"][-1],
    }


def fmt_auc(m: dict) -> str:
    lo, hi = m["roc_auc_ci"]
    return f"{m['roc_auc']:.3f} [95% CI {lo:.3f}, {hi:.3f}]"


def report_section(args, command: str, split_source: str, task, timing: dict | None, teacher: dict, probe: dict,
                   paired: dict, out: Path, wall_s: float) -> str:
    sizes = task.split.sizes()
    lines = [
        f"## Teacher benchmark ({dt.datetime.now().strftime('%Y-%m-%d %H:%M')})",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}",
        f"- Data: {args.data} (Modern vs not-Modern), split {split_source} "
        f"(sha256 {task.split.hash[:12]}...): train {sizes['train']}, val {sizes['val']}, test {sizes['test']}",
        f"- Backbone: {args.backbone}; run directories under `{out}`; whole script {wall_s / 60:.1f} min",
        "",
    ]
    if timing:
        lines += [
            f"### Phase 1 wall time, {timing['epochs']} epochs, same head and data "
            f"({timing['n_train']} train + {timing['n_val']} val images at {timing['image_size']} px)",
            "",
            "| variant | wall time | final val_loss |",
            "| --- | --- | --- |",
            f"| features computed once ({timing['feature_s']:.1f} s) + head fit ({timing['head_fit_s']:.1f} s) "
            f"| {timing['cached_total_s']:.1f} s | {timing['cached_val_loss']:.3f} |",
            f"| frozen backbone run every epoch | {timing['frozen_total_s']:.1f} s | {timing['frozen_val_loss']:.3f} |",
            "",
            f"Cached features are **{timing['ratio']:.1f}x** faster for phase 1 at {timing['epochs']} epochs, and the "
            f"gap grows with the epochs: {timing['head_fit_s'] / timing['epochs']:.2f} s per head epoch on features "
            f"vs {timing['frozen_total_s'] / timing['epochs']:.1f} s per epoch through the frozen backbone.",
            "",
        ]
    t = teacher["timings"]
    lines += [
        "### Test ROC AUC (P(modern)), 2000 stratified bootstrap resamples",
        "",
        "| model | test ROC AUC | accuracy | val ROC AUC | time |",
        "| --- | --- | --- | --- | --- |",
        f"| teacher `{args.recipe.name}` (phase 1: {teacher['epochs']['phase1']} epochs; "
        f"phase 2: up to epoch {teacher['epochs']['phase2']}, top {len((teacher.get('phase2') or {}).get('unfrozen_blocks', []))} blocks) "
        f"| {fmt_auc(teacher)} | {teacher['accuracy']:.3f} | {teacher['val']['roc_auc']:.3f} "
        f"| features {t['features_s']:.0f} s, phase 1 {t['phase1_fit_s']:.0f} s, phase 2 {t['phase2_fit_s']:.0f} s |",
        f"| linear probe (C = {probe['probe']['C']:.3g} by {probe['probe']['cv']}-fold CV on train, "
        f"CV AUC {probe['probe']['cv_roc_auc']:.3f}) | {fmt_auc(probe)} | {probe['accuracy']:.3f} "
        f"| {probe['val']['roc_auc']:.3f} | features {probe['timings']['features_s']:.0f} s |",
        "",
        f"Teacher minus probe on the same {paired['n']} test images: {paired['diff']:+.3f} "
        f"[paired bootstrap 95% CI {paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}], DeLong p = {paired['p_value']:.2f}.",
        "",
    ]
    return "\n".join(lines)


def paired_difference(probe_dir: Path, teacher_dir: Path, positive_index) -> dict:
    """AUC(teacher) - AUC(probe) on the same test images (rows aligned by image name)."""
    from pseudolabel.evaluation import paired_auc_difference, read_predictions

    a, b = read_predictions(probe_dir / "test_predictions.csv"), read_predictions(teacher_dir / "test_predictions.csv")
    row_of = {image: i for i, image in enumerate(b.images)}
    return paired_auc_difference(a.y_true, a.probs, b.probs[[row_of[i] for i in a.images]],
                                 positive_index=positive_index)


def main():
    args = parse_args()
    command = command_line()
    started = time.perf_counter()
    from pseudolabel.config import load_recipe
    from pseudolabel.probe import run_probe
    from pseudolabel.teacher import train_teacher

    task, split_source = load_house_rooms(args.data, args.split)
    out = args.out or REPO / "runs" / "bench_teacher" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")

    timing = None if args.skip_timing else time_phase1(task, args.backbone, args.epochs)
    overrides = {"model": {"backbone": args.backbone}}
    if args.phase2_epochs is not None:
        overrides["train"] = {"phase2_epochs": args.phase2_epochs}
    print("\n== teacher")
    teacher = train_teacher(load_recipe(args.recipe, "teacher", overrides), task, out / "teacher")
    print("\n== linear probe")
    probe = run_probe(task, out / "probe", backbone=args.backbone)

    paired = paired_difference(out / "probe", out / "teacher", task.class_map.positive_index)
    section = report_section(args, command, split_source, task, timing, teacher, probe, paired, out,
                             time.perf_counter() - started)
    publish(args.report, section)


if __name__ == "__main__":
    main()
