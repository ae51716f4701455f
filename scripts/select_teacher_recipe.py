"""Try teacher recipe variants on House Rooms, choose one by VALIDATION ROC AUC, report test once.

    python scripts/select_teacher_recipe.py                          # seeds 0,1,2, runs in runs/teacher_variants
    python scripts/select_teacher_recipe.py --seeds 0,1,2,3,4 --variants current,probe_init

Every variant is `teachers/efficientnet_lite0.toml` with overrides of its `[train]` table, trained
once per seed (a run directory each, so an interrupted run resumes: rerun the same command). The
linear probe (the baseline the teacher must reach) runs per seed too. The variant with the best
mean validation ROC AUC over the seeds is the one chosen; the test figures of every variant are
printed beside it for the record (never used to choose), and the section is appended to
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from _bench_common import REPO, append_report, command_line, machine, section_head

RECIPE = REPO / "teachers" / "efficientnet_lite0.toml"
EXPERIMENT = REPO / "experiments" / "house_rooms_bedroom_pool.toml"   # its [data]: the data and the fixed split
PROBE_INIT = {"head_init": "probe", "phase1_epochs": 0, "select": "val_auc"}
VARIANTS = {
    "current": {},                                             # random head, phase 1 + 2 by val_loss
    "select_val_auc": {"select": "val_auc"},                   # the same, epochs chosen by val ROC AUC
    "probe_init": PROBE_INIT,                                  # head = the probe's solution, then phase 2
    "probe_init_lr3e-6": {**PROBE_INIT, "phase2_lr": 3e-6},    # ... at a lower phase-2 rate
    "probe_init_3blocks": {**PROBE_INIT, "unfreeze_blocks": 3, "phase2_epochs": 15},
    "probe_head": {**PROBE_INIT, "phase2_epochs": 0},             # the probe itself, as a Keras teacher
    # Phase 2 must beat the probe's head on val by 0.02 (the margin model selection keeps a
    # teacher by): with 68 val images a smaller "gain" is noise.
    "probe_init_margin": {**PROBE_INIT, "phase2_margin": 0.02},
    "probe_init_margin_flip": {**PROBE_INIT, "phase2_margin": 0.02, "tta": "flip"},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", type=Path, default=EXPERIMENT, help="the experiment whose [data] is used")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "teacher_variants")
    p.add_argument("--report", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--no-report", action="store_true", help="print only, append nothing to BENCHMARKS.md")
    return p.parse_args()


def run_variants(task, names: list[str], seeds: list[int], out: Path) -> dict[str, list[dict]]:
    from pseudolabel.config import load_recipe
    from pseudolabel.probe import run_probe
    from pseudolabel.teacher import train_teacher

    results: dict[str, list[dict]] = {"probe": []}
    for seed in seeds:
        results["probe"].append(run_probe(task, out / "probe" / f"seed-{seed}", seed=seed, verbose=0))
    for name in names:
        results[name] = []
        for seed in seeds:
            print(f"== {name}, seed {seed}")
            recipe = load_recipe(RECIPE, "teacher", {"train": {**VARIANTS[name], "seed": seed}})
            results[name].append(train_teacher(recipe, task, out / name / f"seed-{seed}", verbose=0))
    return results


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {sd:.3f}"


def summarise(results: dict[str, list[dict]], names: list[str]) -> tuple[str, list[str]]:
    """(the variant chosen by mean val ROC AUC, table rows)."""
    chosen = max(names, key=lambda n: statistics.mean(m["val"]["roc_auc"] for m in results[n]))
    rows = ["| recipe | overrides of [train] | val ROC AUC, mean +- sd | test ROC AUC, mean +- sd | per seed (test) |",
            "| --- | --- | --- | --- | --- |"]
    for name in ["probe", *names]:
        runs = results[name]
        overrides = "(linear probe, C by 5-fold CV on train)" if name == "probe" else (
            ", ".join(f"{k} = {v!r}" for k, v in VARIANTS[name].items()) or "(none)")
        label = f"**{name}** (chosen)" if name == chosen else name
        per_seed = ", ".join(f"{m['roc_auc']:.3f}" for m in runs)
        rows.append(f"| {label} | {overrides} | {mean_sd([m['val']['roc_auc'] for m in runs])} | "
                    f"{mean_sd([m['roc_auc'] for m in runs])} | {per_seed} |")
    return chosen, rows


def main() -> None:
    args = parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    started_on = machine()
    from pseudolabel.config import load_experiment
    from pseudolabel.data import load_task

    task = load_task(load_experiment(args.experiment).data.as_task_config())
    results = run_variants(task, names, seeds, args.out)
    chosen, rows = summarise(results, names)
    section = "\n".join([
        *section_head("Teacher recipe variants, chosen by validation ROC AUC", command_line(), started_on,
                      f"Seeds {seeds}; House Rooms Modern vs not-Modern, fixed split (test 89 images); "
                      "EfficientNet-Lite0 at 224 px; runs in " + str(args.out),
                      f"Chosen by the mean val ROC AUC over seeds: **{chosen}**; test figures are for the record"),
        *rows, ""])
    print(section)
    if not args.no_report:
        append_report(args.report, section)


if __name__ == "__main__":
    main()
