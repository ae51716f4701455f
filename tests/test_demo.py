"""`pseudolabel demo`: its files, its refusal to mix demos in one folder, and (slow) its point."""

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pseudolabel.cli import main
from pseudolabel.config import load_experiment
from pseudolabel.data import load_task
from pseudolabel.demo import DemoError, write_demo

SMALL = dict(n_labeled=16, n_unlabeled=10, n_test=12, epochs=1)


def _mtimes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_demo_experiment_uses_absolute_paths_and_loads(tmp_path):
    experiment = write_demo(tmp_path / "d", **SMALL)
    raw = tomllib.loads(experiment.read_text())
    paths = [raw["output"], raw["data"]["root"], raw["data"]["labels"], raw["data"]["split"],
             raw["pools"][0]["path"], raw["teacher"]["recipe"], *raw["students"]["recipes"]]
    assert all(Path(p).is_absolute() for p in paths)  # the same under either rule for relative paths
    task = load_task(load_experiment(experiment).data.as_task_config())
    assert task.split.sizes()["test"] == 12 and task.split.sizes()["train"] + task.split.sizes()["val"] == 16
    assert sorted(p.name for p in (tmp_path / "d" / "data" / "Pool").iterdir()) == sorted(
        f"img_{i}.jpg" for i in range(1, 11))


def test_same_demo_again_rewrites_nothing(tmp_path):
    write_demo(tmp_path / "d", **SMALL)
    before = _mtimes(tmp_path / "d")
    write_demo(tmp_path / "d", **SMALL)
    assert _mtimes(tmp_path / "d") == before


def test_a_different_demo_in_the_same_folder_is_refused_before_writing(tmp_path):
    write_demo(tmp_path / "d", **SMALL)
    before = _mtimes(tmp_path / "d")
    with pytest.raises(DemoError, match="n_labeled 16 -> 50"):
        write_demo(tmp_path / "d", **{**SMALL, "n_labeled": 50})
    assert _mtimes(tmp_path / "d") == before

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("not a demo")
    with pytest.raises(DemoError, match="holds no demo"):
        write_demo(tmp_path / "other", **SMALL)


def test_cli_demo_over_a_different_demo_says_so_in_one_line(tmp_path):
    write_demo(tmp_path / "d", n_labeled=60, n_unlabeled=10, n_test=12, epochs=1)
    settings = json.loads((tmp_path / "d" / "demo.json").read_text())
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "--labeled", "50",
                                       "--unlabeled", "10", "--test", "12", "--epochs", "1"])
    assert result.exit_code == 1
    assert "holds a different demo" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert json.loads((tmp_path / "d" / "demo.json").read_text()) == settings


def test_demo_is_its_own_command():
    from pseudolabel.cli import demo as demo_cli
    from pseudolabel.cli import run as run_cli

    assert main.commands["demo"] is demo_cli.demo
    assert "demo" not in [c.name for c in run_cli.commands]


def test_the_demo_command_trains_the_labels_only_control_which_labels_the_pool(tmp_path):
    experiment = load_experiment(write_demo(tmp_path / "d", **SMALL, control=True))
    assert experiment.baselines.labels_only_student and experiment.students.first_teacher == "labels_only"
    assert not load_experiment(write_demo(tmp_path / "e", **SMALL)).baselines.labels_only_student


# The whole default demo: about 2 minutes alone on 2 cores (since the augmentation fix of
# 2026-12-03; it took 9), so it runs with the suite.
def test_default_demo_student_beats_teacher(tmp_path, capsys):
    from pseudolabel.demo import run_demo

    summary = run_demo(tmp_path / "demo")
    rows = {row["run"]: row for row in summary["rows"]}
    teacher, control, student = rows["round0_teacher"], rows["baseline_labels_only_tiny_cnn"], rows["round1_tiny_cnn"]
    assert teacher["baseline"] and student["delta_auc_ci"][0] > 0   # paired gain over the teacher, its interval above 0
    # Not asserted: the student ahead of the labels-only control. Measured on seeds 0-2 it is not
    # (-0.004, -0.051, +0.016; README "Quick start: the demo").
    assert student["vs_labels_only"]["run"] == control["run"]
    table = capsys.readouterr().out
    assert "teacher, tiny_cnn" in table and "labels-only student, tiny_cnn" in table
    assert "student round 1, tiny_cnn" in table
