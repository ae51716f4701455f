"""Noisy Student rounds for one experiment: teacher -> label -> student -> (student teaches) -> ...

The output directory holds one run directory per model and one pseudo-label table per round:

    OUTPUT/pools.json, pools.csv           which pools, how many images each kept / excluded / skipped
    OUTPUT/pool_truth.csv                  [data] layout = "folders" with labels_per_class: the held-back
                                           pool images' true labels (image,label), kept aside, measure
                                           every round's pseudo-labels (pseudo_quality.json)
    OUTPUT/round0_teacher/                 the supervised teacher (a run directory)
    OUTPUT/round<i>_<algorithm>_<backbone>/ a student recipe with an online algorithm (fixmatch, ...):
                                           trained from the labeled data and the pools, labeling them
                                           itself; it takes no teacher and teaches no round
                                           (`student_teaches` does not apply to it)
    OUTPUT/round1_<backbone>/              the student of round 1 (a run directory), holding
        pseudo_labels.csv                  the previous model's labels for the pools it trained on
        pseudo_labels.origin.json          which model and pools that table was made from
        pseudo_quality.json                with pool truth (`[[pools]] truth`, `pool_truth=`): how right
                                           the table's and the selected pseudo-labels were (report only)
    ...
    OUTPUT/report/                         compare.md / compare.html / roc.png over all models

Before any work, every run's recorded config is checked against the experiment (`lifecycle`): a
student's config includes its teacher's config and the pools, so a change anywhere refuses with
one line naming it, and `restart=True` starts over the changed run and those after it (their
teacher changed), redoing nothing else. Then a finished run only reports, an unfinished one
resumes from its backup, and a table made from the same model and pools is reused.

Under a multi-worker strategy every worker runs the whole experiment: the models train in sync,
and each worker pseudo-labels the pools itself (label very large pools with `pseudolabel label
--shard` instead). Non-chief workers keep their files in `<run dir>/worker-<i>`; only the chief
writes the report.
"""

from __future__ import annotations

import time
from pathlib import Path

from pseudolabel.config import Experiment, PoolConfig, ProbeConfig
from pseudolabel.rundir import RunLock, atomic_write_json, read_json

ORIGIN_JSON = "pseudo_labels.origin.json"


def run_experiment(experiment: Experiment, *, extra_pools: tuple[PoolConfig, ...] = (), strategy=None,
                   restart: bool = False, rounds: int | None = None, seeds=None, pool_truth=(),
                   labeling: dict | None = None) -> dict | None:
    """Run (or resume) the teacher and the first `rounds` student rounds (None: all) of
    `experiment` (from `config.load_experiment`); every model trains under `strategy` (a
    `tf.distribute.Strategy` or a name; None: "auto"). `seeds` (default: the experiment's
    `seeds`): one whole chain per seed in OUTPUT/seed-<s>/, then OUTPUT/report/seeds.md over them
    (`pseudolabel.seeds`). `pool_truth`: truth CSVs of pool images besides the pools' own `truth`
    (`data.truth`), read only to measure every round's pseudo-labels (pseudo_quality.json).
    `labeling`: how the rounds' pools are labeled, `label_pools`' engine options (`engine`,
    `address`; default: the local engine). Returns the report's summary, or {seed: summary,
    "seeds": aggregate} with seeds (None on a non-chief worker, which writes no report)."""
    from pseudolabel import distribute
    from pseudolabel.seeds import with_seed, write_seed_report

    seeds = list(seeds if seeds is not None else experiment.seeds)
    options = dict(extra_pools=extra_pools, strategy=distribute.resolve_strategy(strategy), restart=restart,
                   rounds=rounds, pool_truth=tuple(pool_truth), labeling=dict(labeling or {}))
    if not seeds:
        return run_chain(experiment, **options)
    summaries = {}
    with experiment_lock(Path(experiment.output), options["strategy"]):
        for seed in seeds:
            print(f"== seed {seed} of {seeds}")
            summaries[seed] = run_chain(with_seed(experiment, seed), **options)
    if not distribute.is_chief(options["strategy"]):
        return None
    aggregate = write_seed_report(summaries, Path(experiment.output) / "report")
    print(f"over seeds {seeds}: {Path(experiment.output) / 'report' / 'seeds.md'}")
    return {**summaries, "seeds": aggregate}


def run_chain(experiment: Experiment, *, extra_pools=(), strategy=None, restart: bool = False,
              rounds: int | None = None, pool_truth=(), labeling: dict | None = None) -> dict | None:
    """One teacher -> students chain of `experiment` (see `run_experiment`)."""
    from pseudolabel import distribute

    started = time.perf_counter()
    strategy = distribute.resolve_strategy(strategy)
    task, pool_configs, runs, truth = check_chain(experiment, extra_pools=extra_pools, strategy=strategy,
                                                  restart=restart, rounds=rounds, pool_truth=pool_truth)
    with experiment_lock(Path(experiment.output), strategy):
        return run_rounds(experiment, runs, task, pool_configs, strategy, started, truth, labeling or {})


def check_chain(experiment: Experiment, *, extra_pools=(), strategy, restart: bool = False,
                rounds: int | None = None, pool_truth=()) -> tuple:
    """(task, pool configs, planned runs, pool truth) of one chain, every run's state checked: a run of another
    config or split refuses here, before any work (unless restart)."""
    from pseudolabel.data import load_task

    if experiment.teacher_recipe is None:
        from pseudolabel.config import ConfigError

        raise ConfigError(f"{experiment.path}: no [teacher] recipe: an experiment needs one to run")
    task = load_task(experiment.data.as_task_config())
    pool_configs = [*experiment.pools, *extra_pools]
    from pseudolabel.data.folders import TRUTH_FILE

    # a bad truth file fails before any work
    truth = pool_truth_of(pool_configs, pool_truth, task, Path(experiment.output) / TRUTH_FILE)
    runs = plan_runs(experiment, task, Path(experiment.output), pool_configs, strategy=strategy, restart=restart,
                     rounds=rounds)
    for run in runs:
        run.status()   # refuses a changed run before any work (unless restart)
    return task, pool_configs, runs, truth


def pool_truth_of(pool_configs, extra_files, task, held_back_file: Path) -> tuple[list[str], dict[str, int]]:
    """(truth files, {image: class index}) of the pools' `truth`, the `extra_files` and, in the
    folders layout, the train folder's held-back labels (kept aside in `held_back_file` by `run_rounds`)."""
    from pseudolabel.data import read_truth, truth_key

    files = list(dict.fromkeys([*(p.truth for p in pool_configs if p.truth), *map(str, extra_files)]))
    truth = read_truth(files, task.class_map.names) if files else {}
    if task.held_back:
        index = {str(name): i for i, name in enumerate(task.class_map.names)}
        truth.update({truth_key(image): index[label] for image, label in task.held_back})
        files.append(str(held_back_file))
    return files, truth


def experiment_lock(out: Path, strategy):
    """One process per experiment output: its lock, held by the chief (the other workers of a
    multi-worker run share the output by design and lock their own run directories)."""
    import contextlib

    from pseudolabel import distribute

    return RunLock.for_directory(out) if distribute.is_chief(strategy) else contextlib.nullcontext()


def run_rounds(experiment: Experiment, runs: list, task, pool_configs, strategy, started: float,
               truth=((), {}), labeling: dict | None = None) -> dict | None:
    from pseudolabel import distribute
    from pseudolabel.data import prepare_pools
    from pseudolabel.data.folders import TRUTH_FILE
    from pseudolabel.report import compare_runs

    from pseudolabel.online_student import OnlineStudentRun
    from pseudolabel.probe import SelfTrainingRun
    from pseudolabel.students import LabelsOnlyStudentRun, StudentRun

    out = Path(experiment.output)
    if task.held_back and distribute.is_chief(strategy):
        write_held_back_truth(task, out / TRUTH_FILE)
    pools = prepare_pools([p.model_dump() for p in pool_configs], task.labeled.paths, out) if runs[1:] else []
    for run in runs:
        if isinstance(run, (SelfTrainingRun, OnlineStudentRun)):
            run.pool_paths = [image for pool in pools for image in pool.images]
        if isinstance(run, OnlineStudentRun):
            run.truth = truth[1]   # measures its pseudo-labels per epoch; never trained on
        if isinstance(run, LabelsOnlyStudentRun):
            run.pool_size = sum(len(pool.images) for pool in pools)   # a count: its epochs' length
        if isinstance(run, StudentRun):
            state = run.status()
            if state in ("changed", "damaged"):
                with RunLock.for_directory(run.path):
                    run.start_over(state)   # before labeling: the table in its directory is stale too
            if state != "finished":
                label_once(run.teacher, pools, task, run.table, experiment.pseudo, run.origin, **(labeling or {}))
        run.run()
        if isinstance(run, StudentRun) and distribute.is_chief(strategy):
            measure_round(run.path, *truth)
    if not distribute.is_chief(strategy):
        return None
    summary = compare_runs([run.path for run in runs], out / "report", margin=experiment.model_selection.margin)
    print(f"experiment '{experiment.name}': {len(runs)} models in {time.perf_counter() - started:.0f} s; "
          f"report: {out / 'report' / 'compare.md'}")
    return summary


def write_held_back_truth(task, path: Path) -> None:
    """The labels of the train folder's held-back images (the folders layout's pool), kept aside:
    `image,label` with absolute image paths and class names, as `data import-folders` writes it."""
    from pseudolabel.data.folders import truth_csv
    from pseudolabel.rundir import atomic_write_text

    text = truth_csv(task.held_back)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    print(f"held-back labels of {len(task.held_back)} pool images (never trained on): {path}")


def plan_runs(experiment: Experiment, task, out: Path, pool_configs, *, strategy, restart: bool,
              rounds: int | None) -> list:
    """The teacher's run, the baselines on its backbone's features, and one student run per round,
    each knowing what it is made from."""
    from pseudolabel.students import StudentRun
    from pseudolabel.teacher import TeacherRun

    options = dict(strategy=strategy, restart=restart)
    teacher = TeacherRun(experiment.teacher_recipe, task, out / "round0_teacher", **options)
    baselines = plan_baselines(experiment, task, out, pool_configs, **options)
    runs = [teacher, *baselines]
    first = {"self_training": "self_training", "labels_only": "labels_only_student"}.get(experiment.students.first_teacher)
    if first:   # a baseline labels round 1's pools
        teacher = next(run for run in baselines if run.kind == first)
    recipes = experiment.student_recipes if rounds is None else experiment.student_recipes[:rounds]
    for i, recipe in enumerate(recipes, start=1):
        if recipe.algorithm.online:   # labels the pools itself: no teacher, no table, teaches no one
            from pseudolabel.online_student import OnlineStudentRun

            runs.append(OnlineStudentRun(recipe, task, out / f"round{i}_{recipe.algorithm.name}_{recipe.model.backbone}",
                                         pools=pool_configs, **options))
            continue
        round_dir = out / f"round{i}_{recipe.model.backbone}"
        # What the table is made from; part of the student's config, so a changed teacher (or a
        # teacher's teacher...) or pool list makes the student a changed run too.
        origin = {"teacher": teacher.resolved_config(), "pools": [p.model_dump(mode="json") for p in pool_configs]}
        student = StudentRun(recipe, task, round_dir, pseudo=experiment.pseudo, origin=origin, **options)
        student.teacher = teacher   # the run whose model labels this round's pools
        runs.append(student)
        if experiment.students.student_teaches:
            teacher = student
    return runs


def plan_baselines(experiment: Experiment, task, out: Path, pool_configs, *, strategy, restart: bool) -> list:
    """The linear probe, the probe self-trained on the pools and (optionally) label spreading
    (`[baselines]`), on the features of the teacher's backbone, and (optionally) the first student
    recipe on the labels alone: what every semi-supervised gain is stated against too."""
    from pseudolabel.config import LabelSpreadingConfig, SelfTrainingConfig
    from pseudolabel.probe import LabelSpreadingRun, ProbeRun, SelfTrainingRun

    settings = dict(model=experiment.teacher_recipe.model, seed=experiment.teacher_recipe.train.seed,
                    cv=probe_folds(task))
    options = dict(strategy=strategy, restart=restart)   # the strategy says where this worker writes
    origin = [p.model_dump(mode="json") for p in pool_configs]
    baselines = []
    if experiment.baselines.probe:
        baselines.append(ProbeRun(ProbeConfig(**settings), task, out / "baseline_probe", **options))
    if experiment.baselines.self_training:
        teaches = experiment.students.first_teacher == "self_training"
        baselines.append(SelfTrainingRun(SelfTrainingConfig(**settings), task, out / "baseline_self_training",
                                         origin=origin, exports_model=teaches, **options))
    if experiment.baselines.label_spreading:
        baselines.append(LabelSpreadingRun(LabelSpreadingConfig(**settings), task, out / "baseline_label_spreading",
                                           origin=origin, **options))
    if experiment.baselines.labels_only_student:
        baselines.append(labels_only_baseline(experiment, task, out, origin, **options))
    return baselines


def labels_only_baseline(experiment: Experiment, task, out: Path, pools: list, *, strategy, restart: bool):
    """`[baselines] labels_only_student`: the first Noisy Student recipe trained on the labels alone
    (`students.LabelsOnlyStudentRun`), in OUTPUT/baseline_labels_only_<backbone>."""
    from pseudolabel.config import ConfigError
    from pseudolabel.students import LabelsOnlyStudentRun

    recipe = next((r for r in experiment.student_recipes if not r.algorithm.online), None)
    if recipe is None:
        raise ConfigError(f"{experiment.path}: [baselines] labels_only_student = true needs a Noisy Student "
                          "recipe in [students] recipes (an online algorithm's recipe has no labels-only form)")
    return LabelsOnlyStudentRun(recipe, task, out / f"baseline_labels_only_{recipe.model.backbone}", pools=pools,
                                strategy=strategy, restart=restart)


def probe_folds(task, folds: int = ProbeConfig.model_fields["cv"].default) -> int:
    """The baselines' cross-validation folds: `folds`, fewer when the smallest class of the train
    split has fewer images (StratifiedKFold needs that many per class), never below 2."""
    from pseudolabel.probe import cv_folds

    return cv_folds(task.split.class_counts()["train"].values(), folds)


def label_once(teacher, pools: list, task, table: Path, pseudo, origin: dict, **engine) -> Path:
    """The round's pseudo-label table by the `teacher` run's model; reused when it was made from
    the same model and pools. `engine`: `label_pools`' engine options (`engine`, `address`)."""
    from pseudolabel.pseudolabels import label_pools, load_classifier

    from pseudolabel.pseudolabels import table_problems

    origin_file = table.parent / ORIGIN_JSON
    if not table_problems(table) and origin_file.exists() and read_json(origin_file) == _json(origin):
        print(f"pseudo-labels: finished earlier ({table})")
        return table
    model, model_file, _ = load_classifier(teacher.path, [str(c) for c in task.class_map.names])
    label_pools(model, pools, image_size=teacher.image_size, batch_size=pseudo.batch_size,
                tta=pseudo.tta, class_names=task.class_map.names, out_path=table, model_file=model_file, **engine)
    atomic_write_json(origin_file, origin)
    return table


def measure_round(run_dir: Path, truth_files, truth: dict) -> None:
    """The round's pseudo-label quality against the truth (pseudo_quality.json, for the report
    only); without truth, a quality file of an earlier truth is removed so no report shows it."""
    from pseudolabel.pseudolabels.quality import QUALITY_JSON, write_round_quality

    if not truth_files:
        (run_dir / QUALITY_JSON).unlink(missing_ok=True)
        return
    quality = write_round_quality(run_dir, truth, truth_files)
    parts = [f"accuracy {q['accuracy']:.3f} over {q['n']} {what}" for what, q in
             (("pool images with truth", quality["all"]), ("selected ones", quality["selected"])) if q["n"]]
    print(f"pseudo-label quality ({run_dir.name}): {', '.join(parts) or 'no pool image of this round has a truth'}")


def _json(obj):
    import json

    return json.loads(json.dumps(obj))
