"""End to end: an experiment runs every round, writes the report, and resumes without redoing work."""

import json

from click.testing import CliRunner

from pseudolabel.cli import main
from pseudolabel.config import load_experiment
from pseudolabel.demo import write_demo
from pseudolabel.rounds import run_experiment


def _mtimes(out):
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns
            for p in out.rglob("*") if p.name in ("model.keras", "pseudo_labels.csv", "metrics.json")}


def test_experiment_runs_all_rounds_then_resumes_without_redoing_them(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=30, epochs=2)
    experiment = load_experiment(experiment_file)
    summary = run_experiment(experiment)

    out = tmp_path / "demo" / "runs"
    for name in ("round0_teacher", "round1_tiny_cnn"):
        assert (out / name / "metrics.json").exists() and (out / name / "model.keras").exists()
    assert (out / "round1_tiny_cnn" / "pseudo_labels.csv").exists()
    pools = json.loads((out / "pools.json").read_text())["pools"]
    assert [p["name"] for p in pools] == ["synthetic"] and pools[0]["counts"]["kept"] == 30
    assert (out / "report" / "compare.md").exists() and (out / "report" / "roc.png").exists()
    assert [row["run"] for row in summary["rows"]] == ["round0_teacher", "baseline_probe", "baseline_self_training",
                                                       "round1_tiny_cnn"]
    self_training = json.loads((out / "baseline_self_training" / "metrics.json").read_text())["self_training"]
    assert self_training["pool_images"] == 30 and self_training["threshold"] in (0.7, 0.8, 0.9, 0.95)

    before = _mtimes(out)
    assert len(before) == 7  # 2 models, 4 metrics (teacher, 2 baselines, student), 1 table
    run_experiment(experiment)
    assert _mtimes(out) == before  # nothing finished was redone


def test_half_written_round_is_redone(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=30, epochs=1)
    experiment = load_experiment(experiment_file)
    run_experiment(experiment)
    student = tmp_path / "demo" / "runs" / "round1_tiny_cnn"
    (student / "metrics.json").unlink()  # as if the run died before its last write
    teacher_model = (tmp_path / "demo" / "runs" / "round0_teacher" / "model.keras").stat().st_mtime_ns
    run_experiment(experiment)
    assert (student / "metrics.json").exists()
    assert (tmp_path / "demo" / "runs" / "round0_teacher" / "model.keras").stat().st_mtime_ns == teacher_model


def test_run_command_adds_a_pool(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=20, epochs=1)
    extra = tmp_path / "demo" / "data" / "Pool"  # the same folder again under another name
    result = CliRunner().invoke(main, ["run", str(experiment_file), "--pool", str(extra),
                                       "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    pools = json.loads((tmp_path / "out" / "pools.json").read_text())["pools"]
    assert [p["name"] for p in pools] == ["synthetic", "Pool"]
    # the same files under a second pool are not labeled twice
    assert pools[1]["counts"]["kept"] == 0 and pools[1]["counts"]["excluded_in_earlier_pool"] == 20


def _two_round_demo(tmp_path):
    """The demo with a second student round (the same recipe, copied)."""
    import re

    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=20, epochs=1)
    recipes = tmp_path / "demo" / "recipes"
    (recipes / "student2.toml").write_text((recipes / "student.toml").read_text())
    text, n = re.subn(r'^recipes = \[(.*)\]$', lambda m: f'recipes = [{m.group(1)}, "{recipes / "student2.toml"}"]',
                      experiment_file.read_text(), flags=re.M)
    assert n == 1
    experiment_file.write_text(text)
    assert len(load_experiment(experiment_file).student_recipes) == 2
    return experiment_file


def test_a_changed_student_is_refused_naming_the_change_and_restart_redoes_it_and_what_follows(tmp_path):
    experiment_file = _two_round_demo(tmp_path)
    run_experiment(load_experiment(experiment_file))
    out = tmp_path / "demo" / "runs"
    rounds = ["round0_teacher", "round1_tiny_cnn", "round2_tiny_cnn"]
    stamps = {name: (out / name / "model.keras").stat().st_mtime_ns for name in rounds}

    student = tmp_path / "demo" / "recipes" / "student.toml"
    student.write_text(student.read_text().replace("randaugment_magnitude = 5", "randaugment_magnitude = 7"))
    result = CliRunner().invoke(main, ["run", str(experiment_file)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "round1_tiny_cnn: was started with another config (changed: noise.randaugment_magnitude: 5.0 -> 7.0)" \
        in result.output and "--restart" in result.output
    assert {name: (out / name / "model.keras").stat().st_mtime_ns for name in rounds} == stamps  # nothing redone

    result = CliRunner().invoke(main, ["run", str(experiment_file), "--restart"])
    assert result.exit_code == 0, result.output
    after = {name: (out / name / "model.keras").stat().st_mtime_ns for name in rounds}
    assert after["round0_teacher"] == stamps["round0_teacher"]          # the teacher did not change
    assert after["round1_tiny_cnn"] != stamps["round1_tiny_cnn"]        # the changed student: redone
    assert after["round2_tiny_cnn"] != stamps["round2_tiny_cnn"]        # its own teacher changed: redone
    config = json.loads((out / "round1_tiny_cnn" / "config.json").read_text())
    assert config["noise"]["randaugment_magnitude"] == 7.0


def test_rounds_option_runs_only_the_first_rounds(tmp_path):
    experiment_file = _two_round_demo(tmp_path)
    result = CliRunner().invoke(main, ["run", str(experiment_file), "--rounds", "1"])
    assert result.exit_code == 0, result.output
    table = result.output.strip().split("\n\n")[-1].splitlines()   # the results table ends the output
    assert table[0].split()[:2] == ["run", "model"]
    assert [line.split()[0] for line in table[2:]] == ["round0_teacher", "baseline_probe", "baseline_self_training",
                                                       "round1_tiny_cnn"]
    out = tmp_path / "demo" / "runs"
    assert (out / "round1_tiny_cnn" / "metrics.json").exists() and not (out / "round2_tiny_cnn").exists()


def test_a_wrong_recipe_value_fails_before_any_work(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=20, n_unlabeled=4, epochs=1)
    student = tmp_path / "demo" / "recipes" / "student.toml"
    student.write_text(student.read_text().replace("[train]", '[train]\ntta = "bogus"'))
    result = CliRunner().invoke(main, ["run", str(experiment_file)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (f"Error: {student}: train.tta: should be 'none', 'flip' or 'ten_crop', "
                                     "got 'bogus'")
    assert not (tmp_path / "demo" / "runs").exists()   # no run directory made


def test_an_empty_pool_is_one_line_before_the_teacher_trains(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=4, epochs=1)
    for image in (tmp_path / "demo" / "data" / "Pool").iterdir():
        image.unlink()
    result = CliRunner().invoke(main, ["run", str(experiment_file)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no image left to pseudo-label (0 found" in result.output
    assert not (tmp_path / "demo" / "runs" / "round0_teacher").exists()


def test_a_second_run_on_one_output_is_refused_naming_the_first(tmp_path):
    import subprocess
    import sys

    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=4, epochs=1)
    out = tmp_path / "demo" / "runs"
    hold = ("import sys, time\nfrom pseudolabel.rundir import RunLock\n"
            "with RunLock.for_directory(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    first = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(main, ["run", str(experiment_file)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"{out}: in use by another process (pid {first.pid})" in result.output
        assert not (out / "round0_teacher").exists()
    finally:
        first.kill()
        first.wait()


def test_seeds_run_one_chain_each_and_aggregate_them(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=20, epochs=1)
    result = CliRunner().invoke(main, ["run", str(experiment_file), "--seeds", "3,5"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo" / "runs"
    per_seed = {s: json.loads((out / f"seed-{s}" / "report" / "compare.json").read_text()) for s in (3, 5)}
    for s in (3, 5):
        assert json.loads((out / f"seed-{s}" / "round1_tiny_cnn" / "config.json").read_text())["train"]["seed"] == s
        assert json.loads((out / f"seed-{s}" / "round0_teacher" / "provenance.json").read_text())["seed"] == s
    summary = json.loads((out / "report" / "seeds.json").read_text())
    assert summary["seeds"] == [3, 5] and [r["run"] for r in summary["rows"]][::3] == ["round0_teacher",
                                                                                      "round1_tiny_cnn"]
    student = summary["rows"][3]
    deltas = [next(r for r in per_seed[s]["rows"] if r["run"] == "round1_tiny_cnn")["delta_auc"] for s in (3, 5)]
    assert student["delta_auc"] == deltas and student["wins"] == sum(d > 0 for d in deltas)
    assert abs(student["delta_auc_mean"] - sum(deltas) / 2) < 1e-12
    assert student["delta_auc_ci"][0] <= student["delta_auc_mean"] <= student["delta_auc_ci"][1]
    best = [max(r["roc_auc"] for r in per_seed[s]["rows"] if r["run"].startswith("baseline_")) for s in (3, 5)]
    assert student["delta_best_baseline"] == [a - b for a, b in zip(student["roc_auc"], best)]
    assert "delta_best_baseline" not in summary["rows"][1]   # the baselines are not compared with themselves
    assert "ahead on" in (out / "report" / "seeds.md").read_text()
    before = (out / "seed-3" / "round1_tiny_cnn" / "model.keras").stat().st_mtime_ns
    assert CliRunner().invoke(main, ["run", str(experiment_file), "--seeds", "3,5"]).exit_code == 0
    assert (out / "seed-3" / "round1_tiny_cnn" / "model.keras").stat().st_mtime_ns == before   # resumed: not redone


def test_seeds_option_refuses_what_is_not_a_list_of_seeds(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=20, n_unlabeled=4, epochs=1)
    for bad in ("a,b", "1,1", "-1"):
        result = CliRunner().invoke(main, ["run", str(experiment_file), "--seeds", bad])
        assert result.exit_code == 2 and "--seeds" in result.output, result.output


def test_the_self_trained_feature_classifier_can_label_round_one(tmp_path):
    """students.first_teacher = "self_training": round 1's pseudo-labels come from the probe
    self-trained on the pools (exported as backbone + head), equal to its own predictions."""
    import numpy as np

    from pseudolabel.probe import fit_self_training
    from pseudolabel.pseudolabels import read_pseudo_labels

    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=30, epochs=1)
    experiment = load_experiment(experiment_file, {"students": {"first_teacher": "self_training"}})
    run_experiment(experiment)
    out = tmp_path / "demo" / "runs"
    origin = json.loads((out / "round1_tiny_cnn" / "pseudo_labels.origin.json").read_text())
    assert origin["teacher"]["classifier"].startswith("SelfTrainingClassifier") and origin["teacher"]["exports_model"]

    metrics = json.loads((out / "baseline_self_training" / "metrics.json").read_text())["self_training"]
    with np.load(out / "baseline_self_training" / "features.npz") as npz:
        classifier = fit_self_training(npz["train_x"], npz["train_y"], npz["pool_x"], C=metrics["C"],
                                       threshold=metrics["threshold"], seed=0)
        expected = classifier.predict_proba(npz["pool_x"])
    table = read_pseudo_labels(out / "round1_tiny_cnn" / "pseudo_labels.csv")
    np.testing.assert_allclose(table.probs, expected, atol=1e-4)


def test_first_teacher_self_training_needs_that_baseline(tmp_path):
    from pseudolabel.config import ConfigError
    import pytest

    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=30, epochs=1)
    with pytest.raises(ConfigError, match="first_teacher = 'self_training' needs"):
        load_experiment(experiment_file, {"students": {"first_teacher": "self_training"},
                                          "baselines": {"self_training": False}})


def test_label_spreading_baseline_runs_on_the_same_features_when_asked(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=30, epochs=1)
    experiment = load_experiment(experiment_file, {"baselines": {"label_spreading": True}})
    summary = run_experiment(experiment, rounds=0)
    assert [row["run"] for row in summary["rows"]] == ["round0_teacher", "baseline_probe", "baseline_self_training",
                                                       "baseline_label_spreading"]
    metrics = json.loads((tmp_path / "demo" / "runs" / "baseline_label_spreading" / "metrics.json").read_text())
    chosen = metrics["label_spreading"]
    assert chosen["pool_images"] == 30 and chosen["n_neighbors"] in (5, 10, 20)
    assert set(chosen["cv_roc_auc_by_n_neighbors"]) == {"5", "10", "20"}   # JSON keys
