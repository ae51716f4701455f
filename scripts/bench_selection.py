"""Pseudo-label selection rules where the truth is known: how right and how drifted is what each keeps?

    python scripts/bench_selection.py                       # about 3 min on 2 cores (features cached)
    python scripts/bench_selection.py --budgets 25,50,100 --seeds 0,1,2,3,4 --rooms Bedroom
    python scripts/bench_selection.py --teachers probe,self_training   # about 20 min
    python scripts/bench_selection.py --quick --out /tmp/bench.md

No network trains here, so every `[pseudo]` rule can be compared on many label subsets in minutes:
1. Frozen EfficientNet-Lite0 features (ImageNet weights, 224 px) of the labeled train split and of
   the unlabeled images of `--rooms`, computed once and cached in `--work`.
2. For each budget n and seed s: the first n train images of `curve.label_order(seed=s)` (the
   label-budget curve's stratified subsets) keep their labels; the rest of the train split is
   hidden and joins the pool, its labels known to this script only.
3. The teacher is the linear probe fitted on the n kept images (`probe.fit_probe`, C by CV): the
   default Lite0 teacher (head initialised from the probe, `phase2_margin`) kept the probe on
   every seed measured (BENCHMARKS.md, "Teacher recipe variants"). With `--teachers
   probe,self_training` also the probe self-trained on the pool (`[students] first_teacher =
   "self_training"`; its threshold chosen by CV on the kept labels): are its pseudo-labels better?
4. Each rule is `pseudolabels.select_pseudo_labels` on the teacher's table over the pool (hidden
   train images + the room images), with the labeled prior of the n kept images, and
   `pseudolabels.quality.pseudo_label_quality` scores what it selected against the hidden labels.

Reported per budget and rule, mean +- sd over seeds: accuracy of the selected hidden images
(each once) and of the training rows (repeats counted), the "modern" share of the targets the
student would train on against the labeled prior, and how many distinct images are kept. The
spread over seeds is that of which labels are kept. What this does NOT measure: the students'
test AUC under each rule (that needs a student trained per rule and seed; hours on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import _bench_common as bc

SECTION_TITLE = "Pseudo-label selection rules where the truth is known"
RULES = {   # name -> select_pseudo_labels settings (the bedroom experiment's [pseudo] is the first)
    "threshold 0.3 + balance equal (today's default)": dict(threshold=0.3, balance=True),
    "nothing dropped, nothing balanced": dict(threshold=0.0, balance=False),
    "balance prior": dict(threshold=0.3, balance="prior"),
    "align prior + balance equal": dict(threshold=0.3, align="prior", balance=True),
    "align prior + balance prior": dict(threshold=0.3, align="prior", balance="prior"),
    "keep_fraction 0.5 + balance equal": dict(threshold=0.3, keep_fraction=0.5, balance=True),
    "keep_fraction 0.5 + balance prior": dict(threshold=0.3, keep_fraction=0.5, balance="prior"),
    "flexmatch thresholds (0.8) + balance equal": dict(threshold=0.8, threshold_rule="flexmatch", balance=True),
    "freematch thresholds + balance equal": dict(threshold_rule="freematch", balance=True),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=bc.DEFAULT_DATA, help="House Rooms folder (labels.csv inside)")
    p.add_argument("--split", type=Path, default=bc.DEFAULT_SPLIT, help="fixed split CSV")
    p.add_argument("--budgets", default="25,50,100", help="labels kept, comma-separated (each below the train split)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="label subsets, comma-separated")
    p.add_argument("--rooms", default="Bedroom", help="room folders whose unlabeled images form the pool")
    p.add_argument("--teachers", default="probe", help=f"comma-separated, of {', '.join(TEACHERS)} "
                   "(self_training fits a CV-chosen self-training per subset: minutes each)")
    p.add_argument("--work", type=Path, default=Path("/tmp/pseudolabel-bench-selection"),
                   help="where the features are cached")
    bc.add_report_args(p)
    args = p.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.rooms = tuple(r.strip() for r in args.rooms.split(","))
    args.teachers = [t.strip() for t in args.teachers.split(",")]
    unknown = [t for t in args.teachers if t not in TEACHERS]
    if unknown:
        p.error(f"--teachers: unknown {', '.join(unknown)} (known: {', '.join(TEACHERS)})")
    if args.quick:
        args.budgets, args.seeds = args.budgets[:1], args.seeds[:2]
    return args


def features(args, task) -> dict:
    """{"train_x", "train_paths", "pool_x", "pool_paths"}: Lite0 features, cached in --work."""
    import numpy as np

    train_paths, _ = task.split.subset("train")
    pool_paths = bc.unlabeled_images(args.data, rooms=args.rooms, limit=64 if args.quick else None)
    paths = [str(p) for p in [*train_paths, *pool_paths]]
    cache = args.work / "features.npz"
    if cache.exists():
        held = np.load(cache, allow_pickle=False)
        if list(held["paths"]) == paths:
            bc.log(f"features: cached in {cache}")
            return {"x": held["x"], "n_train": len(train_paths), "paths": paths}
    from pseudolabel.backbones import create_backbone
    from pseudolabel.features import extract_features, plain_dataset
    from pseudolabel.rundir import atomic_path

    bc.log(f"features: {len(paths)} images through EfficientNet-Lite0")
    backbone = create_backbone("efficientnet_lite0")
    x = extract_features(backbone, plain_dataset(paths, image_size=int(backbone.input_shape[1]), batch_size=32),
                         verbose=0)
    args.work.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=x, paths=np.array(paths))
    return {"x": x, "n_train": len(train_paths), "paths": paths}


def one_subset(task, feats, order, budget: int, seed: int, teachers) -> dict:
    """{teacher: {rule: scores}} with the first `budget` images of `order` as labels, the rest hidden."""
    import numpy as np

    from pseudolabel.data.truth import truth_key
    from pseudolabel.pseudolabels import PseudoLabelTable

    n_train, x, paths = feats["n_train"], feats["x"], feats["paths"]
    _, train_y = task.split.subset("train")
    position = {truth_key(p): i for i, p in enumerate(paths[:n_train])}
    kept = np.array([position[truth_key(task.root / image)] for image in order[:budget]])
    hidden = np.setdiff1d(np.arange(n_train), kept)
    pool = np.concatenate([hidden, np.arange(n_train, len(paths))])
    prior = np.bincount(train_y[kept], minlength=len(task.class_map.names)) / len(kept)
    truth = {truth_key(paths[i]): int(train_y[i]) for i in hidden}
    out = {}
    for teacher in teachers:
        probs = TEACHERS[teacher](x[kept], train_y[kept], x[pool], seed)
        table = PseudoLabelTable(images=[paths[i] for i in pool],
                                 pools=["hidden_train" if i < n_train else "rooms" for i in pool],
                                 sha256=[""] * len(pool), probs=probs.astype(np.float32),
                                 class_names=list(task.class_map.names))
        out[teacher] = score_rules(table, truth, prior, task.class_map.positive_index, seed)
    return out


def score_rules(table, truth: dict, prior, positive: int, seed: int) -> dict:
    """{rule: scores} of every RULES entry on `table`, against `truth` (hidden images only)."""
    from pseudolabel.pseudolabels import select_pseudo_labels
    from pseudolabel.pseudolabels.quality import pseudo_label_quality

    out = {}
    for name, rule in RULES.items():
        selected, targets, report = select_pseudo_labels(table, seed=seed, prior=prior, **rule)
        quality = pseudo_label_quality(table, selected, targets, truth)
        out[name] = {"accuracy": quality["selected"]["accuracy"], "accuracy_rows": quality["selected"]["accuracy_rows"],
                     "teacher_accuracy": quality["all"]["accuracy"],
                     "share": report["selected"]["target_share"][table.class_names[positive]],
                     "unique": report["selected"]["unique_images"], "rows": report["selected"]["n"],
                     "prior": float(prior[positive])}
    return out


def probe_teacher(train_x, train_y, pool_x, seed: int):
    """The linear probe on the kept labels (C by CV): its probabilities on the pool."""
    import numpy as np

    from pseudolabel.probe import cv_folds, fit_probe

    folds = cv_folds(np.bincount(train_y))
    return fit_probe(train_x, train_y, cv=folds, seed=seed).predict_proba(pool_x)


def self_training_teacher(train_x, train_y, pool_x, seed: int):
    """The probe self-trained on the pool (`[students] first_teacher = "self_training"`): C as the
    probe's, the threshold by CV on the kept labels, as `baseline_self_training` chooses them."""
    import numpy as np

    from pseudolabel.config.schema import SelfTrainingConfig
    from pseudolabel.probe import choose_threshold, cv_folds, fit_probe, fit_self_training, probe_summary

    folds = cv_folds(np.bincount(train_y))
    c = probe_summary(fit_probe(train_x, train_y, cv=folds, seed=seed)[-1], folds)["C"]
    threshold, _ = choose_threshold(train_x, train_y, pool_x, C=c, thresholds=SelfTrainingConfig().thresholds,
                                    cv=folds, seed=seed)
    return fit_self_training(train_x, train_y, pool_x, C=c, threshold=threshold, seed=seed).predict_proba(pool_x)


TEACHERS = {"probe": probe_teacher, "self_training": self_training_teacher}
TEACHER_NAMES = {"probe": "linear probe", "self_training": "self-trained probe"}


def measure(args) -> dict:
    from pseudolabel.curve import label_order

    task, _ = bc.load_house_rooms(args.data, args.split)
    feats = features(args, task)
    train_items = [(image, raw) for image, raw, part in task.split.items if part == "train"]
    results = {}
    for budget in args.budgets:
        for seed in args.seeds:
            order = label_order(train_items, task.class_map, seed)
            results[(budget, seed)] = one_subset(task, feats, order, budget, seed, args.teachers)
            accuracy = {t: next(iter(r.values()))["teacher_accuracy"] for t, r in results[(budget, seed)].items()}
            bc.log(f"budget {budget}, seed {seed}: accuracy on the hidden train images "
                   + ", ".join(f"{t} {a:.3f}" for t, a in accuracy.items()))
    return {"results": results, "n_pool": len(feats["paths"]) - feats["n_train"], "n_train": feats["n_train"],
            "positive": task.class_map.names[task.class_map.positive_index]}


def _mean_sd(values, percent: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    scale, unit = (100, "%") if percent else (1, "")
    mean = statistics.mean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f}{unit} ± {sd:.1f}{unit}" if percent else f"{mean:.3f} ± {sd:.3f}"


def section(args, measured: dict) -> list[str]:
    results = measured["results"]
    lines = [f"Pool: the hidden train images + {measured['n_pool']} unlabeled images of {', '.join(args.rooms)}; "
             f"seeds {','.join(map(str, args.seeds))}; mean ± sd over seeds.", ""]
    for budget in args.budgets:
        lines += [f"### {budget} labels ({measured['n_train'] - budget} train images hidden in the pool)", ""]
        for teacher in args.teachers:
            lines += rules_table(teacher, [results[(budget, s)][teacher] for s in args.seeds], measured["positive"])
    return lines


def rules_table(teacher: str, runs: list[dict], positive: str) -> list[str]:
    """One teacher's rules at one budget: a Markdown table, mean ± sd over the seeds' `runs`."""
    first = next(iter(RULES))
    accuracy = _mean_sd([r[first]["teacher_accuracy"] for r in runs])
    prior = _mean_sd([r[first]["prior"] for r in runs], percent=True)
    lines = [f"Teacher **{TEACHER_NAMES[teacher]}**: its argmax on all hidden images is right {accuracy}. "
             f"Labeled '{positive}' share (prior): {prior}.", "",
             f"| rule | accuracy, selected hidden images | accuracy, training rows | '{positive}' share of the "
             f"targets | minus the prior (points) | distinct images kept |", "| --- | --- | --- | --- | --- | --- |"]
    for name in RULES:
        cells = [r[name] for r in runs]
        lines.append(
            f"| {name} | {_mean_sd([c['accuracy'] for c in cells])} | {_mean_sd([c['accuracy_rows'] for c in cells])} "
            f"| {_mean_sd([c['share'] for c in cells], percent=True)} "
            f"| {_mean_sd([c['share'] - c['prior'] for c in cells], percent=True)} "
            f"| {statistics.mean(c['unique'] for c in cells):.0f} |")
    return lines + [""]


def main(argv=None):
    args = parse_args(argv)
    head = bc.RunHead(SECTION_TITLE, args.quick)
    measured = measure(args)
    details = (f"Data: {args.data}; teachers: {', '.join(TEACHER_NAMES[t] for t in args.teachers)}, on frozen "
               "EfficientNet-Lite0 features of the kept labels")
    bc.publish(args.report, "\n".join(head.lines(details) + section(args, measured)))


if __name__ == "__main__":
    main()
