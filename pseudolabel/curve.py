"""Label-budget curves: how much do the unlabeled images help at 25, 50, 100 ... labels?

    run_curve(load_experiment("experiments/x.toml"), parse_budgets("25,50,100,all"), seeds=[0, 1, 2])

For a budget of n labels, n images of the experiment's labeled TRAIN split keep their labels and
the rest of the train split joins the pools as one more pool (`curve_hidden`, first, so a hidden
image that also lies in a pool folder is labeled once) with its labels hidden from training. The
validation and test splits never change, so every budget is scored on the same test images.

Subsets: the train images are put in one order and budget n keeps the first n, so the subsets are
NESTED (25 is part of 50, of 100, of all). The order is seeded by the experiment's `seed`, not by
the run seeds: every run seed of every budget sees the same subsets, and the spread over seeds is
that of training alone. It is STRATIFIED: the first MIN_LABELS_PER_CLASS images of every class
come first (round robin), then each next image comes from the class furthest below its share of
the train split; within a class, images follow a seeded permutation of their sorted names.

Small budgets: the baselines choose their settings by stratified cross-validation on the kept
labels; their folds are min(5, the smallest class's kept images) (`rounds.probe_folds`), and a
budget must keep MIN_LABELS_PER_CLASS (2) images of every class, so a budget below 2 x classes is
refused at the start with one line, as is a budget not below the train split's size (say `all`).

Every budget is an experiment derived from the user's (`derive_budget`): its own split, labels
CSV, hidden pool list and output, trained per seed by `rounds.run_experiment`, so every run keeps
its provenance, resumes, and refuses a changed config as runs do. Layout (CURVE: OUTPUT/curve or
`out`):

    CURVE/labels-<n>/split.csv          train = the n kept images; val and test as they are
    CURVE/labels-<n>/labels.csv         every labeled image but the hidden ones (pools exclude these)
    CURVE/labels-<n>/hidden_pool.csv    the hidden train images (column image, absolute paths)
    CURVE/labels-<n>/hidden_truth.csv   their labels (image,label: class names); nothing that trains reads it
    CURVE/labels-<n>/seed-<s>/...       one teacher -> students chain per seed; report/seeds.md over them
    OUTPUT/seed-<s>/...                 'all': the experiment as it is (every train label, its own pools
                                        only), the same runs as `run --seeds` (trained once for both)
    CURVE/curve.md, curve.json          per budget and model: test ROC AUC mean +- sd over seeds, and
                                        every semi-supervised model minus the supervised ones, paired per seed
    CURVE/curve.png                     test ROC AUC against labels, supervised vs semi-supervised
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pseudolabel.rundir import atomic_write_json, atomic_write_text

ALL = "all"
MIN_LABELS_PER_CLASS = 2       # stratified cross-validation of the baselines needs 2 per class
HIDDEN_POOL = "curve_hidden"
SPLIT_CSV, LABELS_CSV = "split.csv", "labels.csv"
HIDDEN_POOL_CSV, HIDDEN_TRUTH_CSV = "hidden_pool.csv", "hidden_truth.csv"
CURVE_JSON, CURVE_MD, CURVE_PNG = "curve.json", "curve.md", "curve.png"
TEACHER = "round0_teacher"
SUPERVISED = (TEACHER, "baseline_probe")       # run names (`rounds`) trained on the kept labels alone
MODEL_NAMES = {TEACHER: "teacher", "baseline_probe": "linear probe", "baseline_self_training": "self-training"}


class CurveError(ValueError):
    """A label budget that cannot be used, or a curve folder made from other subsets: one line."""


def parse_budgets(text: str) -> list:
    """'25,50,100,all' -> [25, 50, 100, 'all']: distinct whole numbers >= 1 (ascending) and 'all' (last)."""
    parts = [part.strip().lower() for part in str(text).split(",") if part.strip()]
    numbers = [p for p in parts if p != ALL]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in numbers):
        raise CurveError(f"--labels {text!r}: expected label counts >= 1 and 'all', separated by commas "
                         "(e.g. 25,50,100,all)")
    if len(set(parts)) != len(parts):
        raise CurveError(f"--labels {text!r}: a budget is given twice")
    return sorted(int(p) for p in numbers) + ([ALL] if ALL in parts else [])


def label_order(train_items, class_map, seed: int) -> list[str]:
    """The train images (`(image, raw label)` pairs) in the order budgets keep them: budget n keeps
    the first n (nested), stratified as the module says; depends on `seed` only, not on row order."""
    rng = np.random.default_rng(seed)
    queues = []
    for index in range(class_map.num_classes):
        images = sorted(image for image, raw in train_items if class_map.encode(raw) == index)
        queues.append([images[i] for i in rng.permutation(len(images))])
    total = sum(len(q) for q in queues)
    shares = [len(q) / total for q in queues]
    taken = [0] * len(queues)
    order = []

    def take(index):
        order.append(queues[index][taken[index]])
        taken[index] += 1

    for _ in range(MIN_LABELS_PER_CLASS):
        for index in range(len(queues)):
            if taken[index] < len(queues[index]):
                take(index)
    while len(order) < total:
        n = len(order) + 1
        open_classes = [k for k in range(len(queues)) if taken[k] < len(queues[k])]
        take(max(open_classes, key=lambda k: (n * shares[k] - taken[k], -k)))
    return order


def check_budgets(budgets, task, where) -> None:
    """Refuse, in one line naming `where`, a budget that keeps fewer than MIN_LABELS_PER_CLASS images
    of some class or is not below the train split's size."""
    counts = task.split.class_counts()["train"]
    n_train, least = sum(counts.values()), MIN_LABELS_PER_CLASS * len(counts)
    for budget in budgets:
        if budget == ALL:
            continue
        short = {name: n for name, n in counts.items() if n < MIN_LABELS_PER_CLASS}
        if short:
            raise CurveError(f"{where}: class(es) {short} have fewer than {MIN_LABELS_PER_CLASS} train images: "
                             "no budget below 'all' can keep 2 labels of every class")
        if budget < least:
            raise CurveError(f"{where}: --labels {budget} is below {least} ({MIN_LABELS_PER_CLASS} per class x "
                             f"{len(counts)} classes: the baselines' cross-validation needs 2 labels per class)")
        if budget >= n_train:
            raise CurveError(f"{where}: --labels {budget} is not below the {n_train} labeled train images; "
                             "say 'all' for every label")


@dataclass
class Budget:
    """One point of the curve: its label, kept labels, folder, derived experiment (set by `derive_budget`)."""

    label: str
    n_labels: int
    directory: Path
    class_counts: dict
    hidden: int = 0
    files: dict = field(default_factory=dict)    # file name -> text (none for 'all')
    experiment: object = None


def plan_budget(budget, task, order: list[str], curve_dir: Path, output: Path) -> Budget:
    """The files that make budget `budget` (an int or 'all') an experiment, in memory. 'all' is
    the experiment itself: its folder is the experiment's `output`, whose seed-<s>/ runs are those
    of `run --seeds` (hours of training on a CPU, not done twice)."""
    label = str(budget)
    directory = output if budget == ALL else curve_dir / f"labels-{label}"
    train = [(image, raw) for image, raw, part in task.split.items if part == "train"]
    kept = {image for image, _ in train} if budget == ALL else set(order[:budget])
    counts = {name: 0 for name in task.class_map.names}
    for image, raw in train:
        if image in kept:
            counts[task.class_map.mapping[raw]] += 1
    plan = Budget(label, len(kept), directory, counts, hidden=len(train) - len(kept))
    if budget != ALL:
        plan.files = budget_files(task, kept)
    return plan


def budget_files(task, kept: set[str]) -> dict[str, str]:
    """split.csv (train = `kept`), labels.csv (all labeled images but the hidden), the hidden pool's
    list and its truth (absolute paths, class names)."""
    from pseudolabel.data import LabeledSet, Split

    hidden = sorted(image for image, _, part in task.split.items if part == "train" and image not in kept)
    hidden_set = set(hidden)
    split = Split(task.root, [item for item in task.split.items if item[0] not in hidden_set], task.class_map)
    labeled = LabeledSet(task.root, [item for item in task.labeled.items if item[0] not in hidden_set])
    name_of = {image: task.class_map.mapping[raw] for image, raw, _ in task.split.items}
    return {SPLIT_CSV: split.canonical_csv(), LABELS_CSV: labeled.to_csv(),
            HIDDEN_POOL_CSV: csv_text(["image"], [[str(task.root / image)] for image in hidden]),
            HIDDEN_TRUTH_CSV: csv_text(["image", "label"],
                                       [[str(task.root / image), name_of[image]] for image in hidden])}


def csv_text(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def check_budget_files(plan: Budget, restart: bool) -> None:
    """Refuse a budget folder whose files were written for another subset (unless restart)."""
    for name, text in plan.files.items():
        path = plan.directory / name
        if not restart and path.exists() and path.read_text(encoding="utf-8") != text:
            raise CurveError(f"{path}: written for another subset of labels (the experiment's seed, split or labels "
                             f"changed since); --restart starts labels-{plan.label} over, or give another --out")


def derive_budget(experiment, plan: Budget):
    """Write the budget's files and return its experiment: the user's with the derived data, the
    hidden pool first, and its output in the budget's folder ('all': only the output changes)."""
    from pseudolabel.config import PoolConfig, validate

    if not plan.files:
        return experiment
    for name, text in plan.files.items():
        path = plan.directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
    data = experiment.data.model_copy(update={"labels": str(plan.directory / LABELS_CSV),
                                              "split": str(plan.directory / SPLIT_CSV)})
    pool_list = str(plan.directory / HIDDEN_POOL_CSV)
    # Its truth is read only for the pseudo-label quality report (accuracy per budget and round).
    hidden = validate(PoolConfig, {"name": HIDDEN_POOL, "path": data.root, "images": pool_list,
                                   "truth": str(plan.directory / HIDDEN_TRUTH_CSV)}, source=pool_list)
    return experiment.model_copy(update={"data": data, "pools": [hidden, *experiment.pools],
                                         "output": str(plan.directory)})


def run_curve(experiment, budgets, seeds=None, *, out=None, strategy=None, restart: bool = False) -> dict | None:
    """Train (or resume) every budget of `budgets` (ints and 'all', e.g. from `parse_budgets`) for
    every seed (default: the experiment's `seeds`, else [0]) and write curve.md / .json / .png in
    `out` (default OUTPUT/curve). Every budget is checked, and every run's recorded config, before
    any work. Returns the curve's summary (None on a non-chief worker, which writes no report)."""
    from pseudolabel import distribute
    from pseudolabel.data import load_task
    from pseudolabel.rounds import check_chain, experiment_lock, run_experiment
    from pseudolabel.seeds import with_seed

    strategy = distribute.resolve_strategy(strategy)
    seeds = list(seeds or experiment.seeds or [0])
    curve_dir = Path(out) if out else Path(experiment.output) / "curve"
    where = experiment.path or "the experiment"
    if not experiment.pools and ALL in budgets:
        raise CurveError(f"{where}: the budget 'all' hides no labels and the experiment names no [[pools]]")
    task = load_task(experiment.data.as_task_config())
    check_budgets(budgets, task, where)
    order = label_order([(image, raw) for image, raw, part in task.split.items if part == "train"],
                        task.class_map, experiment.seed)
    plans = [plan_budget(budget, task, order, curve_dir, Path(experiment.output)) for budget in budgets]
    with experiment_lock(curve_dir, strategy):
        for plan in plans:
            check_budget_files(plan, restart)
        for plan in plans:
            plan.experiment = derive_budget(experiment, plan)
            for seed in seeds:
                check_chain(with_seed(plan.experiment, seed), strategy=strategy, restart=restart)
        summaries = {}
        for plan in plans:
            print(f"== labels {plan.label}: {plan.n_labels} labeled train images {plan.class_counts}, "
                  f"{plan.hidden} hidden in pool '{HIDDEN_POOL}'")
            summaries[plan.label] = run_experiment(plan.experiment, strategy=strategy, restart=restart, seeds=seeds)
    if not distribute.is_chief(strategy):
        return None
    result = curve_summary(experiment, plans, summaries, seeds)
    write_curve_report(result, curve_dir)
    print(f"label-budget curve: {curve_dir / CURVE_MD}, {curve_dir / CURVE_PNG}")
    return result


# --------------------------------------------------------------------------- the table and the figure


def curve_summary(experiment, plans: list[Budget], summaries: dict, seeds: list[int]) -> dict:
    """What curve.json holds: the budgets (kept and hidden labels) and `curve_rows` over their runs."""
    budgets = []
    for plan in plans:
        per_seed = {seed: summaries[plan.label][seed] for seed in seeds}
        budgets.append({"budget": plan.label, "n_labels": plan.n_labels, "class_counts": plan.class_counts,
                        "hidden": plan.hidden, "directory": str(plan.directory),
                        "models": {row["run"]: row["model"] for row in per_seed[seeds[0]]["rows"]},
                        "roc_auc": {seed: {row["run"]: row["roc_auc"] for row in s["rows"]}
                                    for seed, s in per_seed.items()},
                        "pseudo_accuracy": {seed: pseudo_accuracy(s) for seed, s in per_seed.items()}})
    first = summaries[plans[0].label][seeds[0]]
    return {"experiment": experiment.path, "subset_seed": experiment.seed, "seeds": seeds, "auc": first["auc"],
            "n_test_images": first["n_test_images"], "budgets": budgets, "rows": curve_rows(budgets)}


def pseudo_accuracy(summary: dict) -> dict:
    """{run: {"all": accuracy, "selected": accuracy}} of every round whose pseudo-labels were
    measured against the hidden labels (`pseudo_quality.json`, via the comparison's section)."""
    section = summary.get("pseudo_labels") or {}
    return {r["run"]: {part: r["quality"][part]["accuracy"] for part in ("all", "selected")
                       if r["quality"][part]["n"]}
            for r in section.get("rounds", []) if r.get("quality")}


def curve_rows(budgets: list[dict]) -> list[dict]:
    """Per budget and run: test ROC AUC per seed, mean, sd, seeds; for a semi-supervised run also
    its difference to the teacher and to the best supervised run (teacher or probe, the better on
    that seed's test AUC: a conservative statement of a gain), paired per seed, with the mean, a
    95% t-interval over seeds, and on how many seeds it was ahead."""
    rows = []
    for budget in budgets:
        aucs = budget["roc_auc"]
        seeds = sorted(aucs)
        for run, model in budget["models"].items():
            found = [s for s in seeds if run in aucs[s]]
            values = np.array([aucs[s][run] for s in found], float)
            row = {"budget": budget["budget"], "n_labels": budget["n_labels"], "run": run,
                   "model": model_name(run, model), "supervised": run in SUPERVISED, "seeds": found,
                   "roc_auc": values.tolist(), "roc_auc_mean": float(values.mean()),
                   "roc_auc_sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "n_seeds": len(found)}
            if not row["supervised"]:
                row["minus_teacher"] = paired([(aucs[s][run], aucs[s][TEACHER]) for s in found if TEACHER in aucs[s]])
                row["minus_best_supervised"] = paired(
                    [(aucs[s][run], max(aucs[s][r] for r in SUPERVISED if r in aucs[s])) for s in found
                     if any(r in aucs[s] for r in SUPERVISED)])
                row["pseudo_accuracy"] = mean_accuracy(budget.get("pseudo_accuracy", {}), run, found)
            rows.append(row)
    return rows


def mean_accuracy(per_seed: dict, run: str, seeds: list) -> dict:
    """{"all"|"selected": mean pseudo-label accuracy over the seeds that measured it}."""
    out = {}
    for part in ("all", "selected"):
        values = [per_seed[s][run][part] for s in seeds if part in per_seed.get(s, {}).get(run, {})]
        if values:
            out[part] = float(np.mean(values))
    return out


def paired(pairs) -> dict | None:
    """Differences a - b per seed, their mean with a 95% t-interval over seeds, and wins (a > b)."""
    from pseudolabel.seeds import mean_interval

    if not pairs:
        return None
    deltas = [float(a - b) for a, b in pairs]
    mean, low, high = mean_interval(deltas)
    return {"per_seed": deltas, "mean": mean, "ci": [low, high], "wins": int(sum(d > 0 for d in deltas)),
            "n": len(deltas)}


def model_name(run: str, model: str) -> str:
    from pseudolabel.report import run_role

    return MODEL_NAMES.get(run) or run_role(run, model)


def curve_markdown(result: dict) -> str:
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [f"# Label-budget curve over seeds {seeds}", "",
             f"{result['auc']} on the same {result['n_test_images']} test images for every budget and seed. "
             f"Each budget keeps a stratified subset of the train split's labels, nested (every budget holds the "
             f"smaller ones) and the same for every seed (chosen with the experiment's seed, "
             f"{result['subset_seed']}); the rest of the train split is an unlabeled pool ('{HIDDEN_POOL}'). "
             "Differences are paired per seed; intervals are 95% t-intervals of the mean over seeds; the best "
             "supervised model is the teacher or the probe, whichever scored higher on that seed. Pseudo-label "
             "accuracy is measured against the hidden labels (and any pool's own truth), never trained on: over "
             "every pseudo-labeled image with a known class / over the ones the student trained on.", "",
             "| labels | model | kind | seeds | test ROC AUC mean ± sd | minus teacher, mean [95% CI] "
             "| minus best supervised, mean [95% CI] | ahead of best supervised "
             "| pseudo-label accuracy, all / selected (mean) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    n_of = {b["budget"]: b["n_labels"] for b in result["budgets"]}
    for row in result["rows"]:
        labels = f"{row['budget']} ({n_of[row['budget']]})" if row["budget"] == ALL else row["budget"]
        kind = "supervised" if row["supervised"] else "semi-supervised"
        auc = f"{row['roc_auc_mean']:.3f} ± {row['roc_auc_sd']:.3f}"
        cells = [labels, row["model"], kind, str(row["n_seeds"]), auc]
        for key in ("minus_teacher", "minus_best_supervised"):
            d = row.get(key)
            if d is None:
                cells.append("")
            else:   # one seed has no interval over seeds
                cells.append(f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d["n"] > 1
                             else f"{d['mean']:+.3f} (1 seed)")
        best = row.get("minus_best_supervised")
        cells.append(f"{best['wins']} of {best['n']} seeds" if best else "")
        accuracy = row.get("pseudo_accuracy") or {}
        cells.append(" / ".join(f"{accuracy[p]:.3f}" if p in accuracy else "n/a" for p in ("all", "selected"))
                     if accuracy else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_curve_report(result: dict, curve_dir) -> dict:
    """curve.json, curve.md and curve.png in `curve_dir`."""
    from pseudolabel.evaluation import plot_label_curve

    curve_dir = Path(curve_dir)
    series = {}
    for row in result["rows"]:
        s = series.setdefault(row["model"], {"x": [], "mean": [], "sd": [], "supervised": row["supervised"]})
        s["x"].append(row["n_labels"])
        s["mean"].append(row["roc_auc_mean"])
        s["sd"].append(row["roc_auc_sd"])
    ticks = {b["n_labels"]: (f"all ({b['n_labels']})" if b["budget"] == ALL else b["budget"])
             for b in result["budgets"]}
    plot_label_curve(series, curve_dir / CURVE_PNG, ticks=ticks, ylabel=f"test {result['auc']}",
                     title=f"Test ROC AUC vs labels: mean ± sd over {len(result['seeds'])} seed(s), "
                           f"{result['n_test_images']} test images")
    atomic_write_text(curve_dir / CURVE_MD, curve_markdown(result))
    atomic_write_json(curve_dir / CURVE_JSON, result)
    return result
