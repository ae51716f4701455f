"""Online pseudo-labeling algorithms against Noisy Student, the teacher and the linear probe, over seeds.

Launch the real one (hours on a shared 2-core CPU; resumable: rerun the same command after an
interruption or in a later session):

    nohup nice python scripts/bench_algorithms.py --work /work/scratch/bench-algorithms \\
        > /work/scratch/bench-algorithms.log 2>&1 &

House Rooms with the all-rooms pools (experiments/house_rooms_all_rooms.toml: data, split, pools,
the Lite0 teacher, [pseudo] and the students' unfreeze_blocks), seeds 0,1,2. Per seed one teacher
and one linear probe, shared by every algorithm (they do not depend on the student); per
(algorithm, seed) one Lite0 student trained by `rounds.run_chain` on an experiment derived from
the base one with only that student, in the same seed directory (WORK/<experiment>/seed-<s>/), so
the teacher and probe runs are finished and only reported after the first algorithm:

    noisy_student  students/efficientnet_lite0.toml   (the teacher's pseudo-label table, round 1)
    pseudo_label, fixmatch, flexmatch, freematch      students/<name>_lite0.toml (online, no table)

CPU budget, the same for every student: the same number of optimizer steps (`--epochs` x
`--steps`, via train.steps_per_epoch; patience = epochs, so no early stop; the best epoch on
val_loss is kept, as always) and the same batch composition (`--batch` labeled + `--mu` x batch
unlabeled images a step: the online `algorithm.mu`, Noisy Student's `train.unlabeled_ratio`).
Wall-clock is NOT equalised: an online step passes 1 + 2 mu (pseudo_label: 1 + mu) images per
labeled one through the model, Noisy Student 1 + mu; each one's training time is reported.

Resumable across sessions: every finished (algorithm, seed) and each seed's teacher and probe is
recorded in benchmarks/algorithms/<experiment>/<run>-seed-<s>.json (a few hundred bytes,
committed, with the budget in budget.json beside them); a recorded pair is never run again, and the
run directories (outside the repository, `--work`) may be gone. After every new record the
section of BENCHMARKS.md (`--out`) is replaced: test ROC AUC mean +- sd per algorithm, its paired
difference to the better supervised baseline, training time, and the goal line "at least one online
algorithm beats the better supervised baseline on the mean of seeds": met / missed.

`--quick`: the tiny synthetic demo task (tiny CNN, teacher phase 1 only, 2 steps a student),
records under WORK/records: checks that the script works (tens of seconds per seed on a quiet
machine, several minutes on a loaded one); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import _bench_common as bench

RECORDS = bench.REPO / "benchmarks" / "algorithms"
EXPERIMENT = bench.REPO / "experiments" / "house_rooms_all_rooms.toml"
ALGORITHMS = ("noisy_student", "pseudo_label", "fixmatch", "flexmatch", "freematch")
ONLINE = ALGORITHMS[1:]
BASELINES = {"teacher": "round0_teacher", "probe": "baseline_probe"}   # record name: run directory
SECTION_TITLE = "Online algorithms"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="where the run directories go (outside the repository)")
    p.add_argument("--experiment", type=Path, default=EXPERIMENT, help="data, split, pools, teacher (default: all rooms)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--algorithms", default=",".join(ALGORITHMS), help=f"comma-separated (default {','.join(ALGORITHMS)})")
    p.add_argument("--epochs", type=int, default=6, help="epochs of every student (default 6)")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps per epoch of every student (default 50)")
    p.add_argument("--batch", type=int, default=16, help="labeled images a step (default 16)")
    p.add_argument("--mu", type=float, default=2.0, help="unlabeled images a step, x --batch (default 2)")
    p.add_argument("--records", type=Path, default=None,
                   help=f"records folder (default {bench.display(RECORDS)}; with --quick: WORK/records)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild the section from the records (say, records copied from another checkout)")
    bench.add_report_args(p)
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.algorithms = [a.strip() for a in args.algorithms.split(",")]
    unknown = sorted(set(args.algorithms) - set(ALGORITHMS))
    if unknown:
        p.error(f"unknown algorithm(s) {', '.join(unknown)}; known: {', '.join(ALGORITHMS)}")
    if args.quick:
        args.epochs, args.steps, args.batch = 1, 2, 4
    work = args.work.resolve()
    if work == bench.REPO or bench.REPO in work.parents:
        p.error(f"--work {args.work}: inside the repository; run directories go outside it")
    args.records = args.records or (work / "records" if args.quick else RECORDS)
    return args


# --------------------------------------------------------------------------- what runs


def base_experiment(args):
    """(the experiment every pair derives from, {algorithm: recipe file}); --quick: the tiny demo."""
    from pseudolabel.config import load_experiment

    if args.quick:
        from pseudolabel.demo import write_demo

        path = write_demo(args.work / "quick-data", n_labeled=24, n_unlabeled=16, n_test=12, size=16, epochs=1)
        student = path.parent / "recipes" / "student.toml"
        fast_teacher = {"teacher": {"overrides": {"train": {"phase1_epochs": 1, "phase2_epochs": 0}}}}
        return load_experiment(path, fast_teacher), {name: student for name in ALGORITHMS}
    recipes = {name: bench.REPO / "students" / (f"{name}_lite0.toml" if name in ONLINE else "efficientnet_lite0.toml")
               for name in ALGORITHMS}
    return load_experiment(args.experiment), recipes


def budget(args) -> dict:
    return {"epochs": args.epochs, "steps_per_epoch": args.steps, "labeled_batch": args.batch, "mu": args.mu,
            "optimizer_steps": args.epochs * args.steps}


def student_overrides(name: str, args, experiment_overrides: dict) -> dict:
    """The experiment's [students.overrides] with the budget over it: same steps, same batches."""
    from pseudolabel.config import merge_overrides

    train = {"batch_size": args.batch, "epochs": args.epochs, "steps_per_epoch": args.steps, "patience": args.epochs}
    if name in ONLINE:
        own = {"train": train, "algorithm": {"mu": args.mu, **({"name": name} if args.quick else {})}}
    else:
        own = {"train": {**train, "unlabeled_ratio": args.mu}}
    return merge_overrides(experiment_overrides, own)


def pair_experiment(base, recipe_file: Path, name: str, seed: int, args):
    """`base` with only `name`'s student, the probe as its only feature baseline, output in WORK."""
    from pseudolabel.config import load_recipe
    from pseudolabel.seeds import with_seed

    recipe = load_recipe(recipe_file, "student", student_overrides(name, args, base.students.overrides))
    derived = base.model_copy(update={
        "output": str(args.work.resolve() / base.name),
        "student_recipes": [recipe],
        "students": base.students.model_copy(update={"student_teaches": False, "first_teacher": "teacher"}),
        "baselines": base.baselines.model_copy(update={"probe": True, "self_training": False,
                                                       "label_spreading": False}),
    })
    return with_seed(derived, seed)


def run_pair(base, recipe_file: Path, name: str, seed: int, args) -> dict:
    """Train (or resume, or report) the pair's chain; {record name: record} of its runs."""
    from pseudolabel.rounds import run_chain

    summary = run_chain(pair_experiment(base, recipe_file, name, seed, args))
    rows = {row["run"]: row for row in summary["rows"]}
    student = next(run for run in rows if run.startswith("round1"))
    return {record: describe_run(rows[run], record, seed, args) for record, run in
            [(name, student), *((b, d) for b, d in BASELINES.items() if d in rows)]}


def describe_run(row: dict, record: str, seed: int, args) -> dict:
    """What a record keeps of one run: test / val ROC AUC, its training time and step budget."""
    metrics = json.loads((Path(row["path"]) / "metrics.json").read_text())
    timings = metrics.get("timings", {})
    out = {"run": record, "seed": seed, "run_dir": row["run"], "roc_auc": row["roc_auc"],
           "roc_auc_ci": row.get("roc_auc_ci"), "val_roc_auc": row.get("val_roc_auc"),
           # the fits of the session that finished it (a resumed run: its last session)
           "train_s": round(sum(v for k, v in timings.items() if k.endswith("fit_s") or k == "features_s"), 1),
           # CPU seconds of the training process (all its threads): not inflated by a pause or a
           # neighbour, as the wall time is (students only; older records lack it)
           **({"train_cpu_s": round(timings["fit_cpu_s"], 1)} if "fit_cpu_s" in timings else {}),
           "recorded": bench.timestamp()}
    if record in ALGORITHMS:
        out.update(batches=metrics.get("batches"), epochs=metrics.get("epochs"), budget=budget(args))
    return out


# --------------------------------------------------------------------------- records


def record_file(records: Path, run: str, seed: int) -> Path:
    return records / f"{run}-seed-{seed}.json"


def check_budget(records: Path, args) -> None:
    """Records of one budget per folder: another budget is refused (another --records, or the same)."""
    from pseudolabel.rundir import atomic_write_json

    records.mkdir(parents=True, exist_ok=True)
    path, wanted = records / "budget.json", budget(args)
    if path.exists():
        found = json.loads(path.read_text())
        if found != wanted:
            sys.exit(f"{path}: the records there were made with budget {found}, not {wanted}: "
                     "rerun with that budget or give another --records")
    else:
        atomic_write_json(path, wanted)


def write_records(records: Path, found: dict) -> list[str]:
    """Record every run of `found` not recorded yet (a teacher or probe once per seed)."""
    from pseudolabel.rundir import atomic_write_json

    written = []
    for run, record in found.items():
        path = record_file(records, run, record["seed"])
        if not path.exists():
            atomic_write_json(path, record)
            written.append(run)
    return written


def read_records(records: Path) -> dict[str, dict[int, dict]]:
    """{run: {seed: record}} of every record in `records`."""
    out: dict[str, dict[int, dict]] = {}
    for path in sorted(records.glob("*-seed-*.json")):
        record = json.loads(path.read_text())
        out.setdefault(record["run"], {})[int(record["seed"])] = record
    return out


# --------------------------------------------------------------------------- the section


def mean_sd(values) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(found: dict[str, dict[int, dict]]) -> dict:
    """Rows (mean +- sd of test ROC AUC, training time, paired difference to the better supervised
    baseline over the seeds both have) and the goal: some online algorithm's mean above it."""
    means = {b: mean_sd([r["roc_auc"] for r in found[b].values()])[0] for b in BASELINES if found.get(b)}
    better = max(means, key=means.get) if means else None
    rows = []
    for run in [*BASELINES, *ALGORITHMS]:
        if not found.get(run):
            continue
        seeds = sorted(found[run])
        auc, sd = mean_sd([found[run][s]["roc_auc"] for s in seeds])
        row = {"run": run, "seeds": seeds, "roc_auc_mean": auc, "roc_auc_sd": sd,
               "train_s_mean": statistics.mean(found[run][s]["train_s"] for s in seeds)}
        cpu = [found[run][s].get("train_cpu_s") for s in seeds]
        if None not in cpu:
            row["train_cpu_s_mean"] = statistics.mean(cpu)
        paired = [s for s in seeds if better and s in found[better]]
        if better and run not in BASELINES and paired:
            row["delta_better_mean"] = statistics.mean(found[run][s]["roc_auc"] - found[better][s]["roc_auc"]
                                                       for s in paired)
            row["paired_seeds"] = paired
        rows.append(row)
    online = [row for row in rows if row["run"] in ONLINE and "delta_better_mean" in row]
    best = max(online, key=lambda row: row["delta_better_mean"]) if online else None
    return {"rows": rows, "better_baseline": better, "baseline_means": means, "best_online": best,
            "goal_met": bool(best and best["delta_better_mean"] > 0)}


def goal_line(result: dict, planned: int) -> str:
    best, better = result["best_online"], result["better_baseline"]
    head = "at least one online algorithm beats the better supervised baseline on the mean of seeds"
    if best is None:
        return f"{head}: not decided yet (no online algorithm and baseline recorded on the same seed)"
    partial = "" if len(best["paired_seeds"]) >= planned else f"; on {len(best['paired_seeds'])} of {planned} seeds so far"
    return (f"{head} ({better}, mean {result['baseline_means'][better]:.3f}): "
            f"**{'met' if result['goal_met'] else 'missed'}** (best online: {best['run']} "
            f"{best['delta_better_mean']:+.3f}{partial})")


def section(title: str, result: dict, args, records: Path, started_on: str) -> str:
    b = budget(args)
    lines = bench.section_head(
        title, bench.command_line(), started_on,
        f"Budget, the same for every student: {b['epochs']} epochs x {b['steps_per_epoch']} steps = "
        f"{b['optimizer_steps']} optimizer steps, each {b['labeled_batch']} labeled + "
        f"{round(b['mu'] * b['labeled_batch'])} unlabeled images (online: `mu`; Noisy Student: its pseudo-labeled "
        "batch); patience = epochs (no early stop), the best epoch on val_loss kept. Wall-clock is not equalised: "
        "training time is reported, as wall time (which counts pauses and other work on the machine) and as the "
        "training process's CPU time (all its threads; which neither inflates)",
        f"Records: {bench.display(records)}/ (one JSON per (run, seed); runs possibly from several sessions, "
        "with other work beside them); planned seeds " + ",".join(map(str, args.seeds)))
    lines += bench.quick_note(args.quick)
    names = {"teacher": "teacher (supervised)", "probe": "linear probe (supervised, frozen features)"}
    lines += ["| model | seeds | test ROC AUC, mean ± sd | minus the better baseline (paired mean) | training time, mean: "
              "wall | CPU |",
              "| --- | --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        delta = f"{row['delta_better_mean']:+.3f}" if "delta_better_mean" in row else "-"
        cpu = f"{row['train_cpu_s_mean'] / 60:.1f} min" if "train_cpu_s_mean" in row else "-"
        spread = f" ± {row['roc_auc_sd']:.3f}" if len(row["seeds"]) > 1 else " (one seed: no spread yet)"
        lines.append(f"| {names.get(row['run'], row['run'])} | {','.join(map(str, row['seeds']))} | "
                     f"{row['roc_auc_mean']:.3f}{spread} | {delta} | {row['train_s_mean'] / 60:.1f} min "
                     f"| {cpu} |")
    lines += ["", f"Goal: {goal_line(result, len(args.seeds))}", ""]
    return "\n".join(lines)


def update_report(args, title: str, records: Path, started_on: str) -> str:
    text = section(title, summarize(read_records(records)), args, records, started_on)
    bench.replace_section(args.report, title, text)
    return text


def main(argv=None) -> None:
    args = parse_args(argv)
    started_on = bench.machine()
    base, recipes = base_experiment(args)
    records = args.records / base.name
    check_budget(records, args)
    title = f"{SECTION_TITLE}: {base.name}"
    text = None
    for seed in [] if args.report_only else args.seeds:
        for name in args.algorithms:
            if record_file(records, name, seed).exists():
                bench.log(f"{name} seed {seed}: recorded already ({record_file(records, name, seed)})")
                continue
            bench.log(f"{name} seed {seed}: running (the seed's teacher and probe are reused once finished)")
            written = write_records(records, run_pair(base, recipes[name], name, seed, args))
            bench.log(f"{name} seed {seed}: recorded {', '.join(written)} in {records}")
            text = update_report(args, title, records, started_on)
    if not read_records(records):
        sys.exit(f"{records}: nothing recorded yet")
    print(text or update_report(args, title, records, started_on))


if __name__ == "__main__":
    main()
