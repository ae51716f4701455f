"""`[baselines] labels_only_student`: the first student recipe on the labels alone, the control of
"did the pool help, or the student's recipe?"."""

import json
import math
from pathlib import Path

import pytest

from pseudolabel.config import ConfigError, load_experiment
from pseudolabel.data import load_task
from pseudolabel.demo import write_demo
from pseudolabel.report import format_results_table
from pseudolabel.rounds import labels_only_baseline, plan_runs, run_experiment

ON = {"baselines": {"labels_only_student": True, "probe": False, "self_training": False}}


def _experiment(tmp_path, overrides=None, **sizes):
    sizes = {"n_labeled": 40, "n_unlabeled": 30, "n_test": 12, "epochs": 1, **sizes}
    return load_experiment(write_demo(tmp_path / "demo", **sizes), overrides)


def _mtimes(out):
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.name in ("model.keras", "metrics.json", "pseudo_labels.csv")}


def test_it_is_fed_the_labeled_split_alone_for_as_many_steps_as_over_the_pool(tmp_path, monkeypatch):
    import pseudolabel.pipeline as pipeline

    experiment = _experiment(tmp_path, ON)
    task = load_task(experiment.data.as_task_config())
    run = labels_only_baseline(experiment, task, tmp_path / "runs", [p.model_dump(mode="json") for p in experiment.pools],
                               strategy=None, restart=False)
    run.pool_size = 30
    fed, make_dataset = [], pipeline.make_dataset
    monkeypatch.setattr(pipeline, "make_dataset", lambda paths, *a, **k: fed.append(
        ([str(p) for p in paths], k.get("augment") is not None)) or make_dataset(paths, *a, **k))
    metrics = run.run()

    pool = {str(p.resolve()) for p in (tmp_path / "demo" / "data" / "Pool").iterdir()}
    assert fed and not pool & {str(Path(p).resolve()) for paths, _ in fed for p in paths}
    train = {str(p) for p in task.split.subset("train")[0]}
    assert [set(paths) for paths, augmented in fed if augmented] == [train]   # the one noised stream
    recipe = experiment.student_recipes[0].train
    assert metrics["batches"]["steps_per_epoch"] == max(math.ceil(len(train) / recipe.batch_size),
                                                        math.ceil(30 / round(recipe.unlabeled_ratio * recipe.batch_size)))
    assert metrics["n_images"]["pseudo_labeled"] == 0 and metrics["kind"] == "labels_only_student"
    assert not (run.path / "pseudo_labels.csv").exists()


def test_a_fixed_step_budget_holds_for_it_too(tmp_path):
    """train.steps_per_epoch (the algorithms benchmark's equal budget) replaces the pool-sized count."""
    experiment = _experiment(tmp_path, {**ON, "students": {"overrides": {"train": {"steps_per_epoch": 3}}}})
    task = load_task(experiment.data.as_task_config())
    run = labels_only_baseline(experiment, task, tmp_path / "runs", [], strategy=None, restart=False)
    run.pool_size = 30
    assert run.run()["batches"]["steps_per_epoch"] == 3


def test_it_is_reported_beside_the_students_and_resumes(tmp_path):
    experiment = _experiment(tmp_path, ON)
    summary = run_experiment(experiment)
    out = Path(experiment.output)
    assert [row["run"] for row in summary["rows"]] == ["round0_teacher", "baseline_labels_only_tiny_cnn",
                                                       "round1_tiny_cnn"]
    control = json.loads((out / "baseline_labels_only_tiny_cnn" / "config.json").read_text())
    student = json.loads((out / "round1_tiny_cnn" / "config.json").read_text())
    assert {k: control[k] for k in ("model", "train", "noise")} == {k: student[k] for k in ("model", "train", "noise")}

    row = summary["rows"][2]["vs_labels_only"]
    assert row["run"] == "baseline_labels_only_tiny_cnn" and row["delta_auc_ci"][0] <= row["delta_auc"]
    assert "vs_labels_only" not in summary["rows"][0] and "vs_labels_only" not in summary["rows"][1]
    table = format_results_table(summary)
    assert "labels-only student, tiny_cnn" in table and "ΔAUC vs baseline_labels_only_tiny_cnn" in table
    assert "the same recipe on the labels alone" in (out / "report" / "compare.md").read_text()

    before = _mtimes(out)
    run_experiment(experiment)
    assert _mtimes(out) == before   # finished: nothing redone


def test_it_is_off_by_default_and_changes_no_other_run(tmp_path):
    default = _experiment(tmp_path)
    assert default.baselines.labels_only_student is False
    task = load_task(default.data.as_task_config())
    out = tmp_path / "runs"

    def plan(experiment):
        return plan_runs(experiment, task, out, experiment.pools, strategy=None, restart=False, rounds=None)

    off = plan(default)
    assert [run.path.name for run in off] == ["round0_teacher", "baseline_probe", "baseline_self_training",
                                              "round1_tiny_cnn"]
    on = plan(load_experiment(default.path, {"baselines": {"labels_only_student": True}}))
    assert [run.path.name for run in on] == [*[run.path.name for run in off[:3]], "baseline_labels_only_tiny_cnn",
                                             "round1_tiny_cnn"]
    assert [run.resolved_config() for run in on if run.kind != "labels_only_student"] == \
        [run.resolved_config() for run in off]
    assert "augment_magnitude" not in off[0].resolved_config()["train"]   # a teacher's config as recorded before


def test_it_needs_a_noisy_student_recipe(tmp_path):
    recipe = tmp_path / "fixmatch.toml"
    recipe.write_text('algorithm = "fixmatch"\n[model]\nbackbone = "tiny_cnn"\nimage_size = 32\nweights = "none"\n')
    experiment = _experiment(tmp_path, {**ON, "students": {"recipes": [str(recipe)]}})
    with pytest.raises(ConfigError, match="labels_only_student = true needs a Noisy Student recipe"):
        run_experiment(experiment)
    assert not (Path(experiment.output) / "round0_teacher").exists()   # refused before any work


def test_it_can_teach_round_one_when_asked(tmp_path):
    default = _experiment(tmp_path)
    with pytest.raises(ConfigError, match="first_teacher = 'labels_only' needs"):
        load_experiment(default.path, {"students": {"first_teacher": "labels_only"}})
    experiment = load_experiment(default.path, {**ON, "students": {"first_teacher": "labels_only"}})
    task = load_task(experiment.data.as_task_config())
    runs = plan_runs(experiment, task, tmp_path / "runs", experiment.pools, strategy=None, restart=False, rounds=None)
    control, student = runs[1], runs[2]
    assert control.kind == "labels_only_student" and student.teacher is control
    assert student.resolved_config()["pseudo_labels"]["teacher"] == control.resolved_config()   # a changed control: a changed round
