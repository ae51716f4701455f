"""Model selection by validation (`pseudolabel.model_selection`) and how it reaches the reports."""

import numpy as np
import pytest

from pseudolabel import evaluation as ev
from pseudolabel import report, seeds
from pseudolabel.model_selection import aggregate_selection, choose_by_validation, rank_agreement
from pseudolabel.rundir import RunDir


def row(run, val, test, baseline=False):
    return {"run": run, "val_roc_auc": val, "roc_auc": test, "baseline": baseline}


def test_the_teacher_is_kept_unless_a_model_beats_it_on_val_by_the_margin():
    rows = [row("teacher", 0.80, 0.70, True), row("student", 0.81, 0.90), row("probe", 0.60, 0.95)]
    kept = choose_by_validation(rows, margin=0.02)
    assert kept["chosen"] == "teacher" and "by >= 0.02" in kept["why"]
    assert kept["chosen_test_roc_auc"] == 0.70 and kept["test_best"] == "probe" and not kept["picked_test_best"]
    switched = choose_by_validation(rows, margin=0.005)
    assert switched["chosen"] == "student" and switched["chosen_test_roc_auc"] == 0.90
    ranks = {r["run"]: (r["val_rank"], r["test_rank"]) for r in switched["ranks"]}
    assert ranks == {"teacher": (2, 3), "student": (1, 2), "probe": (3, 1)}


def test_rank_agreement_is_kendalls_tau():
    assert rank_agreement([0.1, 0.2, 0.3], [0.5, 0.6, 0.7]) == pytest.approx(1.0)
    assert rank_agreement([0.1, 0.2, 0.3], [0.7, 0.6, 0.5]) == pytest.approx(-1.0)
    assert rank_agreement([0.5], [0.5]) is None


def test_runs_without_validation_scores_are_not_chosen_from():
    assert choose_by_validation([row("teacher", None, 0.7, True), row("s", 0.9, 0.8)])["chosen"] is None


def test_over_seeds_the_picked_models_test_auc_is_paired_with_the_teacher():
    picks = {0: choose_by_validation([row("teacher", 0.8, 0.70, True), row("student", 0.9, 0.75)]),
             1: choose_by_validation([row("teacher", 0.8, 0.72, True), row("student", 0.79, 0.80)])}
    result = aggregate_selection(picks, {0: 0.70, 1: 0.72})
    assert result["picks"] == {"student": 1, "teacher": 1}
    assert result["chosen_test_roc_auc"] == [0.75, 0.72]
    assert result["delta_teacher"] == pytest.approx([0.05, 0.0])
    assert result["picked_test_best"] == 1   # seed 0 picked the test's best, seed 1 did not


def make_run(path, separation, val_separation, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 2

    def probs(sep):
        p1 = 1 / (1 + np.exp(-(sep * (2 * y - 1) + rng.normal(0, 1, 60))))
        return np.stack([1 - p1, p1], axis=1)

    run = RunDir.create(path, {"model": {"backbone": "tiny_cnn"}}, seed=0, split_hash="h")
    metrics = ev.evaluate_predictions(y, probs(separation), ["a", "b"], n_resamples=50)
    metrics["val"] = ev.evaluate_predictions(y, probs(val_separation), ["a", "b"], n_resamples=50)
    run.write_metrics(metrics)
    ev.write_predictions(run.file("test_predictions.csv"), [f"{i}.png" for i in range(60)], y, probs(separation),
                         ["a", "b"])
    return path


def test_compare_and_seed_reports_say_what_validation_picks(tmp_path):
    summaries = {}
    for seed in (0, 1):
        # The student is better on test but validation prefers the teacher on seed 1.
        teacher = make_run(tmp_path / f"s{seed}" / "round0_teacher", 0.3, 1.0, seed)
        student = make_run(tmp_path / f"s{seed}" / "round1_tiny_cnn", 2.0, 3.0 if seed == 0 else 0.2, seed)
        summaries[seed] = report.compare_runs([teacher, student], tmp_path / f"s{seed}" / "report", n_resamples=100)
    assert summaries[0]["selection"]["chosen"] == "round1_tiny_cnn"
    assert summaries[1]["selection"]["chosen"] == "round0_teacher"
    md = (tmp_path / "s1" / "report" / "compare.md").read_text()
    assert "## Model selection by validation" in md and "Validation picks round0_teacher" in md
    result = seeds.write_seed_report(summaries, tmp_path / "report")
    assert result["selection"]["picks"] == {"round1_tiny_cnn": 1, "round0_teacher": 1}
    text = (tmp_path / "report" / "seeds.md").read_text()
    assert "## Choosing by validation" in text and "round1_tiny_cnn 1x" in text
