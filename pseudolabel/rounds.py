"""Noisy Student rounds for one experiment: teacher -> label -> student -> (student teaches) -> ...

The output directory holds one run directory per model and one pseudo-label table per round:

    OUTPUT/pools.json, pools.csv           which pools, how many images each kept / excluded / skipped
    OUTPUT/round0_teacher/                 the supervised teacher (a run directory)
    OUTPUT/round1_<backbone>/              the student of round 1 (a run directory), holding
        pseudo_labels.csv                  the previous model's labels for the pools it trained on
    ...
    OUTPUT/report/                         compare.md / compare.html / roc.png over all models

Resuming is at round granularity: a model whose `metrics.json` exists is finished (it is written
last, atomically) and a table that exists is complete (written atomically), so rerunning the same
experiment redoes nothing that finished and continues what did not (training resumes from its
backup inside the run directory).

Under a multi-worker strategy every worker runs the whole experiment: the models train in sync,
and each worker pseudo-labels the pools itself (label very large pools with `pseudolabel label
--shard` instead). Non-chief workers keep their files in `<run dir>/worker-<i>`
(`distribute.worker_dir`); only the chief writes the report.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from pseudolabel.config import load_recipe


def run_experiment(experiment: dict, *, extra_pools: tuple[dict, ...] = (), strategy=None) -> dict | None:
    """Run (or resume) every round of `experiment` (from `config.load_experiment`); every model
    trains under `strategy` (a `tf.distribute.Strategy` or a name; None: "auto"). Returns the
    report's summary (None on a non-chief worker, which writes no report)."""
    from pseudolabel import distribute
    from pseudolabel.data import load_task, prepare_pools
    from pseudolabel.report import compare_runs
    from pseudolabel.students import train_student
    from pseudolabel.training import train_teacher

    started = time.perf_counter()
    strategy = distribute.resolve_strategy(strategy)
    mine = functools.partial(distribute.worker_dir, strategy=strategy)  # where this worker's files are
    out = Path(experiment["output"])
    out.mkdir(parents=True, exist_ok=True)
    task = load_task(experiment["data"])
    pools = prepare_pools([*experiment["pools"], *extra_pools], task.labeled.paths, out)

    teacher_dir = out / "round0_teacher"
    teacher_recipe = load_recipe(experiment["teacher"]["recipe"], "teacher", experiment["teacher"]["overrides"])
    train_teacher(teacher_recipe, task, teacher_dir, strategy=strategy)  # a finished run only reports
    run_dirs = [teacher_dir]

    teacher_model = mine(teacher_dir) / "model.keras"
    for i, recipe_path in enumerate(experiment["students"]["recipes"], start=1):
        recipe = load_recipe(recipe_path, "student", experiment["students"]["overrides"])
        round_dir = out / f"round{i}_{recipe['model']['backbone']}"
        table = label_once(teacher_model, pools, task, mine(round_dir) / "pseudo_labels.csv", experiment["pseudo"])
        train_student(recipe, task, table, round_dir, pseudo_cfg=experiment["pseudo"], strategy=strategy)
        run_dirs.append(round_dir)
        if experiment["students"]["student_teaches"]:
            teacher_model = mine(round_dir) / "model.keras"

    if not distribute.is_chief(strategy):
        return None
    summary = compare_runs(run_dirs, out / "report")
    print(f"experiment '{experiment['name']}': {len(run_dirs)} models in {time.perf_counter() - started:.0f} s; "
          f"report: {out / 'report' / 'compare.md'}")
    return summary


def label_once(model_path: Path, pools: list, task, table: Path, pseudo_cfg: dict) -> Path:
    import keras

    from pseudolabel.pseudolabels import label_pools

    if table.exists():
        print(f"pseudo-labels: finished earlier ({table})")
        return table
    model = keras.models.load_model(model_path)
    label_pools(model, pools, image_size=int(model.input_shape[1]), batch_size=pseudo_cfg["batch_size"],
                tta=pseudo_cfg["tta"], class_names=task.class_map.names, out_path=table)
    return table
