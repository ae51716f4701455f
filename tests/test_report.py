"""Tests for pseudolabel.report (compare_runs) and the `pseudolabel compare` command."""

import base64
import json

import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel import evaluation as ev
from pseudolabel import report
from pseudolabel.cli.report import compare
from pseudolabel.rundir import RunDir

CLASSES = ["O", "M"]


def make_run(path, separation, *, split_hash="abc123", n=60, backbone="efficientnet_lite0",
             images=None, shuffle_seed=None, label_seed=0):
    """A fake evaluated run directory: provenance, config, metrics.json, test_predictions.csv."""
    rng = np.random.default_rng(label_seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    logit = separation * (2 * y - 1) + rng.normal(0, 1, n) + np.random.default_rng(len(str(path))).normal(0, 0.5, n)
    p1 = 1 / (1 + np.exp(-logit))
    probs = np.stack([1 - p1, p1], axis=1)
    images = list(images or [f"Labeled/{i:03d}.jpg" for i in range(n)])
    if shuffle_seed is not None:  # same test set, rows in another order
        order = np.random.default_rng(shuffle_seed).permutation(n)
        images, y, probs = [images[i] for i in order], y[order], probs[order]
    run = RunDir.create(path, {"role": "teacher", "model": {"backbone": backbone}}, seed=0, split_hash=split_hash)
    run.write_metrics(ev.evaluate_predictions(y, probs, CLASSES, n_resamples=50))
    ev.write_predictions(run.file("test_predictions.csv"), images, y, probs, CLASSES)
    return run.path


@pytest.fixture
def runs(tmp_path):
    teacher = make_run(tmp_path / "runs" / "teacher", 0.5, backbone="efficientnet_lite0")
    student = make_run(tmp_path / "runs" / "student_r1", 2.0, backbone="efficientnet_lite1", shuffle_seed=3)
    return teacher, student


def test_compare_runs_writes_all_outputs(runs, tmp_path):
    out = tmp_path / "compare"
    result = report.compare_runs(runs, out, n_resamples=300)
    assert sorted(p.name for p in out.iterdir()) == sorted(report.OUTPUT_FILES)  # no temp files left
    assert result["baseline"] == "teacher"
    assert result["split_hash"] == "abc123"
    assert result["n_test_images"] == 60
    teacher, student = result["rows"]
    assert teacher["baseline"] and teacher["delta_auc"] is None
    assert student["model"] == "efficientnet_lite1"
    assert student["delta_auc"] == pytest.approx(student["roc_auc"] - teacher["roc_auc"])
    assert student["delta_auc"] > 0
    assert student["delta_auc_ci"][0] <= student["delta_auc"] <= student["delta_auc_ci"][1]
    assert 0 <= student["p_value"] <= 1
    assert json.loads((out / "compare.json").read_text())["rows"][1]["run"] == "student_r1"


def test_compare_aligns_rows_by_image(runs, tmp_path):
    # The student's CSV lists the images in another order; its AUC must match its own metrics.json.
    result = report.compare_runs(runs, tmp_path / "out", n_resamples=100)
    for row in result["rows"]:
        assert row["roc_auc"] == pytest.approx(row["reported_roc_auc"])


def test_markdown_and_html_reports(runs, tmp_path):
    out = tmp_path / "compare"
    report.compare_runs(runs, out, n_resamples=100)
    md = (out / "compare.md").read_text()
    assert "| run | model | test ROC AUC [95% CI] | accuracy | ΔAUC vs baseline [95% CI] | p | n test |" in md
    assert "| teacher | efficientnet_lite0 |" in md and "baseline" in md
    assert "abc123" in md
    html = (out / "compare.html").read_text()
    assert "<table>" in html and "student_r1" in html
    embedded = html.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(embedded) == (out / "roc.png").read_bytes()


def test_named_baseline_comes_first(runs, tmp_path):
    teacher, student = runs
    result = report.compare_runs([teacher, student], tmp_path / "out", baseline=student, n_resamples=100)
    assert [r["run"] for r in result["rows"]] == ["student_r1", "teacher"]
    assert result["rows"][1]["delta_auc"] < 0


def test_refuses_different_split_hashes(runs, tmp_path):
    other = make_run(tmp_path / "runs" / "other", 1.0, split_hash="zzz999")
    with pytest.raises(report.ReportError, match="different splits"):
        report.compare_runs([runs[0], other], tmp_path / "out", n_resamples=100)
    assert not (tmp_path / "out").exists()


def test_refuses_different_test_images(runs, tmp_path):
    images = [f"Labeled/{i:03d}.jpg" for i in range(59)] + ["Labeled/elsewhere.jpg"]
    other = make_run(tmp_path / "runs" / "other", 1.0, images=images)
    with pytest.raises(report.ReportError, match="different images"):
        report.compare_runs([runs[0], other], tmp_path / "out", n_resamples=100)


def test_refuses_missing_predictions(runs, tmp_path):
    (runs[1] / "test_predictions.csv").unlink()
    with pytest.raises(report.ReportError, match="no test_predictions.csv"):
        report.compare_runs(runs, tmp_path / "out", n_resamples=100)


def test_runs_with_the_same_name_are_told_apart(tmp_path):
    a = make_run(tmp_path / "exp_a" / "teacher", 0.5)
    b = make_run(tmp_path / "exp_b" / "teacher", 1.0)
    result = report.compare_runs([a, b], tmp_path / "out", n_resamples=100)
    assert [r["run"] for r in result["rows"]] == ["exp_a/teacher", "exp_b/teacher"]


def test_model_label_from_config():
    assert report.model_label({"backbone": "b0"}, "dir") == "b0"
    assert report.model_label({"model": {"backbone": "b1"}}, "dir") == "b1"
    assert report.model_label({}, "dir") == "dir"


def test_cli_compare_prints_the_table(runs, tmp_path):
    out = tmp_path / "cli_out"
    result = CliRunner().invoke(compare, [str(runs[0]), str(runs[1]), "--out", str(out), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert "| teacher |" in result.output and "| student_r1 |" in result.output
    assert (out / "compare.html").exists()


def test_cli_compare_default_out_is_beside_the_runs(runs):
    result = CliRunner().invoke(compare, [str(p) for p in runs] + ["--resamples", "100"])
    assert result.exit_code == 0, result.output
    assert (runs[0].parent / "compare" / "compare.md").exists()


def test_cli_compare_reports_refusal_cleanly(runs, tmp_path):
    other = make_run(tmp_path / "runs" / "other", 1.0, split_hash="zzz999")
    result = CliRunner().invoke(compare, [str(runs[0]), str(other), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "different splits" in result.output and "Traceback" not in result.output


def test_cli_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from pseudolabel.cli.report import compare; "
            "from click.testing import CliRunner; r = CliRunner().invoke(compare, ['--help']); "
            "assert r.exit_code == 0 and 'RUN_DIR' in r.output; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compare_is_registered_in_the_main_command():
    cli = pytest.importorskip("pseudolabel.cli", reason="other CLI modules not importable yet")
    assert "compare" in cli.main.commands


def test_small_differences_keep_significant_digits():
    assert report.format_difference(-0.0004, [-0.0011, 0.0012]) == "-0.0004 [-0.0011, +0.0012]"
    assert report.format_difference(0.058, [0.01, 0.11]) == "+0.058 [+0.010, +0.110]"
    assert report.format_difference(0.0) == "+0.000"
    assert report.format_difference(2e-9, [-1e-8, 1e-8]) == "+0.000000 [-0.000000, +0.000000]"  # capped


def test_markdown_shows_a_tiny_difference_readably(runs, tmp_path):
    result = report.compare_runs(runs, tmp_path / "c", n_resamples=100)
    result["rows"][1].update(delta_auc=-0.0004, delta_auc_ci=[-0.0011, 0.0012])
    assert "-0.0004 [-0.0011, +0.0012]" in report.markdown_table(result)


def test_results_table_is_aligned_and_names_every_model(runs, tmp_path):
    result = report.compare_runs(runs, tmp_path / "c", n_resamples=100)
    lines = report.format_results_table(result).splitlines()
    assert len(lines) == 4  # header, rule, two models
    teacher, student = lines[2], lines[3]
    assert teacher.startswith("teacher ") and "baseline" in teacher
    row = result["rows"][1]
    assert student.startswith("student_r1 ") and report.format_difference(row["delta_auc"], row["delta_auc_ci"]) in student
    column = lines[0].index("ΔAUC vs teacher")
    assert teacher.index("baseline") == column and student.index(f"{row['delta_auc']:+.3f}") == column


def test_results_table_names_rounds_and_summarises_seeds(tmp_path):
    summaries = []
    for seed, separation in enumerate([1.0, 1.5, 2.0]):
        teacher = make_run(tmp_path / f"s{seed}" / "round0_teacher", 0.5, label_seed=seed)
        student = make_run(tmp_path / f"s{seed}" / "round1_efficientnet_lite0", separation, label_seed=seed)
        summaries.append(report.compare_runs([teacher, student], tmp_path / f"s{seed}" / "report", n_resamples=100))
    table = report.format_results_table(summaries)
    assert "teacher, efficientnet_lite0" in table and "student round 1, efficientnet_lite0" in table
    deltas = np.array([s["rows"][1]["delta_auc"] for s in summaries])
    student_line = table.splitlines()[3]
    assert f"{deltas.mean():+.3f} ± {deltas.std(ddof=1):.3f}" in student_line
    assert f"{(deltas > 0).sum()}/3" in student_line
    assert " 3 " in student_line  # seeds
    assert report.format_results_table(summaries[:1]) == report.format_results_table(summaries[0])


def test_cli_compare_json_prints_the_summary(runs, tmp_path):
    result = CliRunner().invoke(compare, [str(runs[0]), str(runs[1]), "--out", str(tmp_path / "j"),
                                          "--resamples", "100", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["baseline"] == "teacher" and [r["run"] for r in summary["rows"]] == ["teacher", "student_r1"]
    assert summary == json.loads((tmp_path / "j" / "compare.json").read_text())
