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
    assert len(json.dumps(summary)) > 0

    before = _mtimes(out)
    assert len(before) == 5  # 2 models, 2 metrics, 1 table
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
