"""Repeated seeds of an experiment, resumable across sessions, checked against the evidence goals.

    python scripts/seed_benchmark.py experiments/house_rooms_bedroom_pool.toml --seeds 0,1,2,3,4

Runs one seed at a time (`rounds.run_experiment` with that seed: OUTPUT/seed-<s>/, resumed per
round, the same directories `pseudolabel run --seeds` uses) and, as soon as a seed's chain is
finished, records its comparison summary (`report/compare.json`: test and val AUCs with intervals,
pseudo-label class shares, validation's pick; a few KB) in `benchmarks/seeds/<experiment name>/
seed-<s>.json`. The records are committed: run directories live outside the tracked files and do not
outlive a session on these machines, the records do, so a seed recorded in an earlier session is
not run again and still counts. `--record-only` records finished seeds and trains nothing.

After every recorded seed the aggregate over ALL recorded seeds (`seeds.aggregate`: mean +- sd,
paired differences with t-intervals over seeds, wins) is written beside the records (seeds.md,
seeds.json) and replaces this experiment's section of BENCHMARKS.md, with the predicted class share
of every round and the issue's goals (met / missed) under it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import _bench_common as bench

RECORDS = bench.REPO / "benchmarks" / "seeds"
SECTION_TITLE = "Repeated seeds"
SHARE_TOLERANCE = 0.05       # goal: every round's predicted share of the positive class within 5 points of the prior
GAIN_TARGET = 0.03           # goal: best student >= best baseline + 0.03, its interval over seeds above 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", type=Path)
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    p.add_argument("--records", type=Path, default=RECORDS, help=f"where records go (default {RECORDS})")
    p.add_argument("--record-only", action="store_true", help="record the finished seeds, train nothing")
    p.add_argument("--report", type=Path, default=bench.DEFAULT_REPORT,
                   help="Markdown file whose section of this experiment is replaced (default BENCHMARKS.md)")
    p.add_argument("--no-report", action="store_true", help="leave BENCHMARKS.md alone")
    return p.parse_args(argv)


def finished_summary(experiment, seed: int) -> Path | None:
    """OUTPUT/seed-<s>/report/compare.json when that seed's whole chain is finished."""
    from pseudolabel.seeds import with_seed

    path = Path(with_seed(experiment, seed).output) / "report" / "compare.json"
    return path if path.is_file() else None


def record_seed(summary_file: Path, records: Path, seed: int, config: dict) -> Path:
    """The seed's comparison summary, with how its runs were trained (`trained_by`) and the
    experiment's resolved config and its fingerprint (`config_fingerprint`) added."""
    from pseudolabel.rundir import atomic_write_json

    records.mkdir(parents=True, exist_ok=True)
    target = records / f"seed-{seed}.json"
    summary = json.loads(Path(summary_file).read_text())
    atomic_write_json(target, {**summary, "trained_by": trained_by(summary), "config": config,
                               "config_fingerprint": fingerprint(config)})
    return target


def resolved_config(experiment) -> dict:
    """The experiment as every seed trains it (recipes resolved), seed-independent and
    checkout-independent: no output or file location, paths relative to the checkout."""
    import os

    from pseudolabel.seeds import with_seed

    base = Path(experiment.path).resolve().parent.parent   # experiments/NAME.toml -> the checkout

    def relative(value):
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items() if k not in ("output", "path")}
        if isinstance(value, list):
            return [relative(v) for v in value]
        if isinstance(value, str) and os.path.isabs(value):
            return os.path.relpath(value, base)
        return value

    return relative(with_seed(experiment, 0).model_dump(mode="json"))


def fingerprint(config: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def check_records(records: Path, config: dict, *, record_only: bool) -> None:
    """Records of another config of this experiment are never added to silently: stop with one
    line (with --record-only, which trains nothing, only warn: the report says what they hold)."""
    current = fingerprint(config)
    for path, summary in recorded_files(records).items():
        theirs = summary.get("config_fingerprint")
        if theirs != current:
            what = f"another config (fingerprint {theirs})" if theirs else "a config from before records had fingerprints"
            message = (f"{path}: recorded with {what} of this experiment, not the current one ({current}); "
                       "record this config elsewhere (--records DIR) or move those records aside")
            if not record_only:
                sys.exit(message)
            print(f"warning: {message}", file=sys.stderr)


def trained_by(summary: dict) -> list[dict]:
    """Per run of the summary: the command its provenance.json names, when it started and when its
    metrics were written (a resumed run: the command and start of its last attempt)."""
    from datetime import datetime, timezone

    out = []
    for row in summary["rows"]:
        run = Path(row.get("path") or "/nonexistent")
        provenance, metrics = run / "provenance.json", run / "metrics.json"
        if not (provenance.is_file() and metrics.is_file()):
            continue
        recorded_run = json.loads(provenance.read_text())
        finished = datetime.fromtimestamp(metrics.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        argv = list(recorded_run.get("command") or [])
        if argv and Path(argv[0]).name == "__main__.py":   # python -m pseudolabel
            argv[0] = Path(argv[0]).parent.name
        out.append({"run": row["run"], "command": " ".join(argv),
                    "started": recorded_run.get("started"), "finished": finished,
                    "onednn": (recorded_run.get("environment") or {}).get("TF_ENABLE_ONEDNN_OPTS")})
    return out


def onednn_text(runs: list[dict]) -> str:
    """Which of a seed's runs had TensorFlow's oneDNN kernels on (the package's default since
    2026-12-07; earlier runs did not record it and ran with TensorFlow's own default, off on AVX2)."""
    on = [r["run"] for r in runs if r.get("onednn") == "1"]
    if len(on) == len(runs):
        return "oneDNN on"
    if not on:
        return "oneDNN off" if all(r.get("onednn") == "0" for r in runs) else "oneDNN not set (TensorFlow's default)"
    return f"oneDNN on in {', '.join(on)} only"


def backfill_trained_by(records: Path) -> None:
    """Records made before `trained_by` existed get it while their run directories are still here."""
    from pseudolabel.rundir import atomic_write_json

    for path in sorted(records.glob("seed-*.json")):
        summary = json.loads(path.read_text())
        if "trained_by" not in summary and (found := trained_by(summary)):
            atomic_write_json(path, {**summary, "trained_by": found})


HAND_NOTE = "trained_by.txt"   # beside the records: how seeds recorded before `trained_by` were trained


def trained_by_line(summaries: dict[int, dict], records: Path) -> str:
    """"Trained by: seed 0: `command` (first start - last finish); ...", from the records. Seeds
    recorded without it (their run directories gone) are told by the hand-kept HAND_NOTE, if any."""
    parts, untold = [], []
    for seed in sorted(summaries):
        runs = summaries[seed].get("trained_by") or []
        if not runs:
            untold.append(str(seed))
            continue
        commands = ", ".join(f"`{c}`" for c in dict.fromkeys(r["command"] for r in runs))
        first, last = min(r["started"] or r["finished"] for r in runs), max(r["finished"] for r in runs)
        parts.append(f"seed {seed}: {commands} ({first[:16].replace('T', ' ')} - {last[:16].replace('T', ' ')} UTC, "
                     f"{onednn_text(runs)})")
    if untold:
        note = records / HAND_NOTE
        told = note.read_text().strip() if note.is_file() else "not recorded"
        parts.append(f"seed{'s' if len(untold) > 1 else ''} {', '.join(untold)} (recorded before runs' "
                     f"provenance was kept; from {note.name}): {told}")
    return "Trained by (each run's provenance.json; a resumed run counts from its last start): " + "; ".join(parts)


def recorded_files(records: Path) -> dict[Path, dict]:
    """{record file: comparison summary} of every record in `records`."""
    return {path: json.loads(path.read_text()) for path in sorted(records.glob("seed-*.json"))}


def recorded(records: Path) -> dict[int, dict]:
    """{seed: comparison summary} of every record in `records`."""
    return {int(path.stem.split("-", 1)[1]): summary for path, summary in recorded_files(records).items()}


def class_shares(summaries: dict[int, dict]) -> dict:
    """{"prior": {class: share}, "rounds": {run: {class: [share per seed]}}}: the share of each class
    among a round's pseudo-labels before selection (the teaching model's argmax over the pools)."""
    prior, rounds = None, {}
    for seed in sorted(summaries):
        section = summaries[seed].get("pseudo_labels") or {}
        prior = prior or section.get("labeled_prior")
        for r in section.get("rounds", []):
            for name, share in r["stages"]["before"]["share"].items():
                rounds.setdefault(r["run"], {}).setdefault(name, []).append(share)
    return {"prior": prior, "rounds": rounds}


def goals(result: dict, shares: dict, positive: str | None) -> list[str]:
    """The evidence issue's goals, each met or missed, on the mean over the recorded seeds."""
    rows = {row["run"]: row for row in result["rows"]}
    lines = []
    teacher, probe = rows.get(result["baseline"]), rows.get("baseline_probe")
    if teacher and probe:
        lines.append(f"teacher >= probe (mean): teacher {teacher['roc_auc_mean']:.3f}, probe "
                     f"{probe['roc_auc_mean']:.3f}: **{'met' if teacher['roc_auc_mean'] >= probe['roc_auc_mean'] else 'missed'}**")
    students = [row for row in result["rows"] if row["run"].startswith("round") and not row["baseline"]]
    with_best = [row for row in students if "delta_best_baseline_mean" in row]
    if with_best:
        best = max(with_best, key=lambda row: row["delta_best_baseline_mean"])
        low, high = best["delta_best_baseline_ci"]
        # one seed has no interval: nothing is met on it
        met = best["delta_best_baseline_mean"] >= GAIN_TARGET and low > 0 and len(best["delta_best_baseline"]) > 1
        lines.append(f"best student >= best baseline + {GAIN_TARGET:g}, interval above 0: {best['run']} "
                     f"{best['delta_best_baseline_mean']:+.3f} [{low:+.3f}, {high:+.3f}]: **{'met' if met else 'missed'}**")
    means = [row["roc_auc_mean"] for row in students]
    if len(means) > 1:
        falls = [f"{b['run']} {b['roc_auc_mean']:.3f} < {a['run']} {a['roc_auc_mean']:.3f}"
                 for a, b in zip(students, students[1:]) if b["roc_auc_mean"] < a["roc_auc_mean"]]
        lines.append("no round after the first below the round before (mean): "
                     + (f"**missed** ({'; '.join(falls)})" if falls else "**met**"))
    prior = (shares["prior"] or {}).get(positive) if positive else None
    if prior is not None and shares["rounds"]:
        off = {run: sum(s[positive]) / len(s[positive]) for run, s in shares["rounds"].items()}
        far = {run: v for run, v in off.items() if abs(v - prior) > SHARE_TOLERANCE}
        lines.append(f"every round's '{positive}' share within {SHARE_TOLERANCE:.0%} of the labeled prior "
                     f"({prior:.1%}): " + ("**met**" if not far else
                                          f"**missed** ({', '.join(f'{r} {v:.1%}' for r, v in far.items())})"))
    return lines


def config_line(summaries: dict[int, dict], current: str) -> str:
    """Which config the records were trained with, against the experiment's current one."""
    theirs = {seed: summary.get("config_fingerprint") for seed, summary in summaries.items()}
    if set(theirs.values()) == {current}:
        return f"Config: fingerprint {current} in every record, the experiment's current config (each record holds it)"
    groups: dict = {}
    for seed, fp in sorted(theirs.items()):
        groups.setdefault(fp, []).append(str(seed))
    told = "; ".join(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}: "
                     f"{fp or 'none (recorded before fingerprints)'}" for fp, seeds in groups.items())
    return f"Config: **the records differ from the experiment's current config ({current})**: {told}"


def share_table(shares: dict) -> list[str]:
    if not shares["rounds"]:
        return []
    names = list(next(iter(shares["rounds"].values())))
    prior = shares["prior"] or {}
    lines = ["| round | " + " | ".join(f"{n} share, mean ± sd (prior {prior.get(n, float('nan')):.1%})"
                                        for n in names) + " |", "| --- |" + " --- |" * len(names)]
    for run, per_class in shares["rounds"].items():
        cells = [f"{statistics.mean(v):.1%} ± {(statistics.stdev(v) if len(v) > 1 else 0):.1%}"
                 for v in per_class.values()]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return lines


def section(experiment, result: dict, shares: dict, positive, started_on: str, records: Path, *details: str) -> str:
    from pseudolabel.seeds import seeds_markdown

    # Without its "# Over seeds" heading, and its "## " subheadings one level down: inside
    # BENCHMARKS.md, "## " starts the next section (replace_section relies on it).
    body = seeds_markdown(result).split("\n", 2)[2].replace("\n## ", "\n### ")
    return "\n".join([
        *bench.section_head(f"{SECTION_TITLE}: {experiment.name}", bench.command_line(), started_on,
                            f"Recorded seeds {result['seeds']} (records: {bench.display(records)}/, one "
                            "comparison summary per seed; each seed's chain ran on this machine, possibly in "
                            "another session, with other work beside it)", *(d for d in details if d)),
        body.rstrip("\n"), "",
        "Predicted class share of each round's pseudo-labels (the teaching model's argmax over the pools, "
        "before selection), over the recorded seeds:", "",
        *share_table(shares), "",
        "Goals (mean over the recorded seeds):", "",
        *(f"- {line}" for line in goals(result, shares, positive)), ""])


def main(argv=None) -> None:
    args = parse_args(argv)
    started_on = bench.machine()
    from pseudolabel.config import load_experiment
    from pseudolabel.rounds import run_experiment

    experiment = load_experiment(args.experiment)
    records = args.records / experiment.name
    config = resolved_config(experiment)
    current = fingerprint(config)
    check_records(records, config, record_only=args.record_only)
    for seed in [int(s) for s in args.seeds.split(",")]:
        if (records / f"seed-{seed}.json").exists():
            bench.log(f"seed {seed}: recorded already ({records / f'seed-{seed}.json'})")
            continue
        if finished_summary(experiment, seed) is None and not args.record_only:
            bench.log(f"seed {seed}: running the chain (resumes where an earlier run stopped)")
            run_experiment(experiment, seeds=[seed])
        summary = finished_summary(experiment, seed)
        if summary is None:
            bench.log(f"seed {seed}: not finished, not recorded")
            continue
        bench.log(f"seed {seed}: recorded -> {record_seed(summary, records, seed, config)}")
        report(experiment, args, records, started_on, current)   # after every seed: a cut session keeps it
    if not recorded(records):
        sys.exit(f"{records}: no finished seed recorded yet")
    # Once more from the records, also when no seed was added: the section can be rebuilt (say,
    # after a format change) without training anything.
    report(experiment, args, records, started_on, current)


def report(experiment, args, records: Path, started_on: str, current: str) -> None:
    """seeds.md / seeds.json beside the records and the experiment's section of BENCHMARKS.md."""
    from pseudolabel.seeds import write_seed_report

    backfill_trained_by(records)
    summaries = recorded(records)
    result = write_seed_report(summaries, records)
    text = section(experiment, result, class_shares(summaries), summaries[min(summaries)].get("positive_class"),
                   started_on, records, trained_by_line(summaries, records),
                   config_line(summaries, current))
    if not args.no_report:
        bench.replace_section(args.report, f"{SECTION_TITLE}: {experiment.name}", text)
    print(text)


if __name__ == "__main__":
    main()
