"""Repeated seeds: the same experiment, one whole teacher -> students chain per seed, summarised.

With `seeds = [0, 1, 2]` in an experiment (or `run --seeds 0,1,2`) every seed runs the chain on
the same fixed split in OUTPUT/seed-<s>/ (the seed sets every model's initialisation, augmentation,
batch order and pseudo-label sampling: `train.seed` of every recipe). This module turns the
per-seed comparisons (`report.compare_runs` summaries) into what answers "did it help?": per
model, the test ROC AUC as mean +- sd over seeds, and the paired difference to the baseline (the
teacher) on each seed, its mean with a 95% t-interval over seeds, and on how many seeds the model
was ahead; for the students the same against the best of the feature-space baselines (probe,
self-training) on each seed. OUTPUT/report/seeds.json and seeds.md hold it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pseudolabel.model_selection import aggregate_selection
from pseudolabel.rundir import atomic_write_json, atomic_write_text

SEEDS_JSON = "seeds.json"
BASELINE_PREFIX = "baseline_"   # run names of the feature-space baselines (rounds.plan_baselines)
SEEDS_MD = "seeds.md"


def with_seed(experiment, seed: int):
    """`experiment` with every recipe's `train.seed` = `seed`, its output in OUTPUT/seed-<seed>."""
    def reseeded(recipe):
        return recipe.model_copy(update={"train": recipe.train.model_copy(update={"seed": int(seed)})})

    return experiment.model_copy(update={
        "output": str(Path(experiment.output) / f"seed-{seed}"),
        "teacher_recipe": reseeded(experiment.teacher_recipe) if experiment.teacher_recipe else None,
        "student_recipes": [reseeded(r) for r in experiment.student_recipes],
    })


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean over seeds (low = high = mean for one seed)."""
    from scipy import stats

    values = np.asarray(values, float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def aggregate(summaries: dict[int, dict]) -> dict:
    """Per run name (in the order of the first seed's report): AUC per seed, mean +- sd, and the
    paired difference to the baseline per seed with its mean, 95% interval and wins."""
    seeds = sorted(summaries)
    first = summaries[seeds[0]]
    rows = []
    for name in [row["run"] for row in first["rows"]]:
        found = {s: next((r for r in summaries[s]["rows"] if r["run"] == name), None) for s in seeds}
        found = {s: r for s, r in found.items() if r is not None}
        aucs = [found[s]["roc_auc"] for s in found]
        row = {"run": name, "model": next(iter(found.values()))["model"], "seeds": list(found),
               "roc_auc": aucs, "roc_auc_mean": float(np.mean(aucs)),
               "roc_auc_sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
               "baseline": name == first["baseline"]}
        if not row["baseline"]:
            deltas = [found[s]["delta_auc"] for s in found]
            mean, low, high = mean_interval(deltas)
            row.update(delta_auc=deltas, delta_auc_mean=mean, delta_auc_ci=[low, high],
                       wins=int(sum(d > 0 for d in deltas)))
        if not row["baseline"] and not name.startswith(BASELINE_PREFIX):
            row.update(versus_best_baseline(found, summaries))
        rows.append(row)
    teacher_test = {s: next(r["roc_auc"] for r in summaries[s]["rows"] if r["baseline"]) for s in seeds}
    selection = aggregate_selection({s: summaries[s].get("selection") for s in seeds}, teacher_test)
    return {"seeds": seeds, "baseline": first["baseline"], "auc": first["auc"],
            "n_test_images": first["n_test_images"], "rows": rows, "selection": selection}


def versus_best_baseline(found: dict, summaries: dict) -> dict:
    """The model's AUC minus the best baseline run's (probe, self-training: `baseline_*`) on each
    seed, the best chosen on that seed's test AUC: a conservative statement of a gain."""
    deltas = []
    for seed, row in found.items():
        others = [r["roc_auc"] for r in summaries[seed]["rows"] if r["run"].startswith(BASELINE_PREFIX)]
        if others:
            deltas.append(row["roc_auc"] - max(others))
    if not deltas:
        return {}
    mean, low, high = mean_interval(deltas)
    return {"delta_best_baseline": deltas, "delta_best_baseline_mean": mean, "delta_best_baseline_ci": [low, high],
            "wins_best_baseline": int(sum(d > 0 for d in deltas))}


def seeds_markdown(result: dict) -> str:
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [f"# Over seeds {seeds}", "",
             f"{result['auc']} on the same {result['n_test_images']} test images for every seed; the "
             f"difference to the baseline ({result['baseline']}) is paired per seed, its interval is a 95% "
             "t-interval of the mean over seeds.", "",
             "| run | model | test ROC AUC mean ± sd | per seed | ΔAUC vs baseline, mean [95% CI] | ahead on "
             "| ΔAUC vs the best of probe / self-training, mean [95% CI] | ahead on |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        per_seed = ", ".join(f"{a:.3f}" for a in row["roc_auc"])
        if row["baseline"]:
            delta, wins = "baseline", ""
        else:
            low, high = row["delta_auc_ci"]
            delta = f"{row['delta_auc_mean']:+.3f} [{low:+.3f}, {high:+.3f}]"
            wins = f"{row['wins']} of {len(row['seeds'])} seeds"
        best, best_wins = "", ""
        if "delta_best_baseline" in row:
            low, high = row["delta_best_baseline_ci"]
            best = f"{row['delta_best_baseline_mean']:+.3f} [{low:+.3f}, {high:+.3f}]"
            best_wins = f"{row['wins_best_baseline']} of {len(row['delta_best_baseline'])} seeds"
        lines.append(f"| {row['run']} | {row['model']} | {row['roc_auc_mean']:.3f} ± {row['roc_auc_sd']:.3f} | "
                     f"{per_seed} | {delta} | {wins} | {best} | {best_wins} |")
    return "\n".join(lines + selection_lines(result.get("selection"), result["baseline"])) + "\n"


def selection_lines(selection: dict | None, baseline: str) -> list[str]:
    """What choosing by validation (`model_selection`) gave over the seeds."""
    if not selection:
        return []
    low, high = selection["delta_teacher_ci"]
    picks = ", ".join(f"{run} {n}x" for run, n in sorted(selection["picks"].items(), key=lambda kv: -kv[1]))
    tau = selection["kendall_tau_mean"]
    n = len(selection["seeds"])
    return ["", "## Choosing by validation", "",
            f"Keeping {baseline} unless a model beats it on val by >= {selection['margin']:g}, validation picked: "
            f"{picks}. The picked model's test ROC AUC: {selection['chosen_test_roc_auc_mean']:.3f} ± "
            f"{selection['chosen_test_roc_auc_sd']:.3f}, {selection['delta_teacher_mean']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}] vs {baseline}. Val picked the test's best on {selection['picked_test_best']} "
            f"of {n} seeds; mean Kendall's tau between val and test orders "
            f"{'n/a' if tau is None else f'{tau:+.2f}'}."]


def write_seed_report(summaries: dict[int, dict], out_dir) -> dict:
    """seeds.json and seeds.md in `out_dir`; returns the aggregate."""
    result = aggregate(summaries)
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / SEEDS_JSON, result)
    atomic_write_text(out_dir / SEEDS_MD, seeds_markdown(result))
    return result
