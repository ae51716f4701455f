"""Pseudo-label quality where the pool's truth is known: the truth files, the metrics, the report,
and that the truth never reaches training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli import main
from pseudolabel.config import load_experiment
from pseudolabel.data import DataError, read_truth, truth_key
from pseudolabel.demo import write_demo
from pseudolabel.pseudolabels import PseudoLabelTable
from pseudolabel.pseudolabels.quality import (
    QUALITY_JSON,
    expected_calibration_error,
    label_metrics,
    pseudo_label_quality,
)
from pseudolabel.rounds import run_experiment

NAMES = ["old", "modern"]


# --------------------------------------------------------------------------- truth files


def test_truth_paths_are_absolute_or_relative_to_the_csv_and_files_join(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.csv").write_text(f"image,label\n{tmp_path}/pool/a.jpg,modern\npool/b.jpg,old\n")
    (tmp_path / "u.csv").write_text("label,image,extra\nmodern,pool/a.jpg,x\n")   # same image, same class: fine
    truth = read_truth([tmp_path / "sub" / "t.csv", tmp_path / "u.csv"], NAMES)
    assert truth == {truth_key(tmp_path / "pool" / "a.jpg"): 1, truth_key(tmp_path / "sub" / "pool" / "b.jpg"): 0}


@pytest.mark.parametrize("text, problem", [
    ("image,label\na.jpg,modern\nb.jpg,kitchen\nc.jpg,garage\n", r"t.csv: line 3: unknown class 'kitchen' \(classes: "
                                                                  r"old, modern\); 1 more row"),
    ("image,class\na.jpg,modern\n", r"t.csv: missing column\(s\) label"),
    ("", r"t.csv: empty file"),
    ("image,label\na.jpg,modern\na.jpg,old\n", r"t.csv: line 3: a.jpg is 'old' here but 'modern' in .*t.csv line 2"),
])
def test_bad_truth_files_are_one_line_naming_the_file(tmp_path, text, problem):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DataError, match=problem) as error:
        read_truth([tmp_path / "t.csv"], NAMES)
    assert "\n" not in str(error.value)


def test_unreadable_truth_files_are_one_line(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"image,label\n\xff\xfe\x00a.jpg,old\n")
    with pytest.raises(DataError, match="t.csv: not UTF-8"):
        read_truth([tmp_path / "t.csv"], NAMES)
    with pytest.raises(DataError, match="nothing.csv: no such file"):
        read_truth([tmp_path / "nothing.csv"], NAMES)


# --------------------------------------------------------------------------- metrics


def test_expected_calibration_error_by_hand():
    # bin (0.6, 0.667]: conf 0.62, 0.65 -> accuracy 1/2, mean 0.635; bin (0.933, 1]: 0.95, 0.99 -> 1, 0.97
    correct = np.array([True, False, True, True])
    confidence = np.array([0.62, 0.65, 0.95, 0.99])
    expected = 0.5 * abs(0.5 - 0.635) + 0.5 * abs(1.0 - 0.97)
    assert expected_calibration_error(correct, confidence) == pytest.approx(expected)
    assert expected_calibration_error([True] * 3, [1.0, 1.0, 1.0]) == 0.0
    assert expected_calibration_error([False], [0.0]) == 0.0       # the first bin includes 0


def test_label_metrics_precision_recall_and_an_unpredicted_class():
    metrics = label_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], [0.9, 0.6, 0.8, 0.7, 0.5], ["a", "b", "c"])
    assert metrics["n"] == 5 and metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "support": 2, "predicted": 2}
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3) and metrics["per_class"]["b"]["recall"] == 1.0
    assert metrics["per_class"]["c"] == {"precision": None, "recall": 0.0, "support": 1, "predicted": 0}
    assert metrics["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert label_metrics([], [], [], ["a", "b"])["accuracy"] is None


def _table(probs) -> PseudoLabelTable:
    n = len(probs)
    return PseudoLabelTable([f"/pool/{i}.jpg" for i in range(n)], ["pool"] * n, ["0" * 64] * n,
                            np.asarray(probs, np.float32), NAMES)


def test_quality_of_all_rows_and_of_the_selected_ones_counted_once():
    table = _table([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.45, 0.55]])
    truth = {"/pool/0.jpg": 0, "/pool/1.jpg": 1, "/pool/2.jpg": 1, "/pool/3.jpg": 0}   # 4 has none
    # selected: 0 once, 2 three times (balancing repeats), 4 once (no truth)
    paths = ["/pool/0.jpg", "/pool/2.jpg", "/pool/2.jpg", "/pool/2.jpg", "/pool/4.jpg"]
    targets = table.probs[[0, 2, 2, 2, 4]]
    quality = pseudo_label_quality(table, paths, targets, truth)
    assert quality["all"]["n"] == 4 and quality["all"]["accuracy"] == pytest.approx(0.5)   # 0, 2 right; 1, 3 wrong
    assert quality["table_rows_without_truth"] == 1
    assert quality["selected"]["n"] == 2 and quality["selected"]["accuracy"] == 1.0
    assert quality["selected"]["rows"] == 4 and quality["selected"]["accuracy_rows"] == 1.0
    assert quality["selected_images"] == 3 and quality["selected_images_without_truth"] == 1
    assert quality["all"]["per_class"]["modern"]["recall"] == pytest.approx(0.5)
    # the selected pseudo-label is the target's argmax (here a target that disagrees with the table)
    flipped = pseudo_label_quality(table, ["/pool/0.jpg"], np.array([[0.2, 0.8]]), truth)
    assert flipped["selected"]["accuracy"] == 0.0 and flipped["selected"]["mean_confidence"] == pytest.approx(0.8)


# --------------------------------------------------------------------------- end to end


def _digest(run_dir: Path) -> dict:
    """What training made: the table, the rows trained on, the predictions (bytes), the weights (arrays)."""
    import h5py

    names = ("pseudo_labels.csv", "pseudo_labels_selected.csv", "test_predictions.csv", "val_predictions.csv")
    digest = {name: (run_dir / name).read_bytes() for name in names if (run_dir / name).exists()}
    arrays = []   # every weight array in file order (the HDF5 bytes also hold names and times)
    with h5py.File(run_dir / "best.weights.h5", "r") as f:
        f.visititems(lambda name, item: arrays.append(item[()].tobytes()) if isinstance(item, h5py.Dataset) else None)
    digest["weights"] = arrays
    return digest


def _without_truth(experiment, output: Path):
    return experiment.model_copy(update={"output": str(output),
                                         "pools": [p.model_copy(update={"truth": None}) for p in experiment.pools]})


def test_the_truth_reaches_the_report_and_never_training(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=30, epochs=1)
    experiment = load_experiment(experiment_file)
    assert experiment.pools[0].truth == str(tmp_path / "demo" / "data" / "pool_truth.csv")
    summary = run_experiment(experiment)
    out = Path(experiment.output)
    student = out / "round1_tiny_cnn"
    quality = json.loads((student / QUALITY_JSON).read_text())
    assert quality["all"]["n"] == 30 and 0 <= quality["all"]["accuracy"] <= 1
    assert quality["selected"]["n"] == quality["selected_images"] > 0
    for run in out.glob("*/config.json"):
        assert "pool_truth.csv" not in run.read_text() and '"truth"' not in run.read_text()
    section = summary["pseudo_labels"]
    assert section["rounds"][0]["quality"]["all"]["accuracy"] == quality["all"]["accuracy"]
    assert section["labeled_prior"] == {"old": 0.5, "modern": 0.5}
    md = (out / "report" / "compare.md").read_text()
    assert "## Pseudo-label quality" in md and f"{quality['all']['accuracy']:.3f}" in md
    assert "labeled train prior" in md and "removes nothing" in md   # the demo's threshold 0.3 with two classes
    assert "Pseudo-labels per round" in (out / "report" / "compare.html").read_text()

    # The same experiment without truth, from scratch elsewhere: the very same table, rows and model.
    plain = _without_truth(experiment, tmp_path / "plain")
    run_experiment(plain)
    assert _digest(Path(plain.output) / "round1_tiny_cnn") == _digest(student)
    assert _digest(Path(plain.output) / "round0_teacher") == _digest(out / "round0_teacher")
    assert not (Path(plain.output) / "round1_tiny_cnn" / QUALITY_JSON).exists()

    # Removing the truth from the finished experiment changes no run; the quality file goes.
    models = {p: p.stat().st_mtime_ns for p in out.rglob("model.keras")}
    run_experiment(_without_truth(experiment, out))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.keras")} == models
    assert not (student / QUALITY_JSON).exists()

    # ...and `run --pool-truth` brings it back, still redoing nothing.
    truth = tmp_path / "demo" / "data" / "pool_truth.csv"
    text = re.sub(r"^truth = .*$", "", experiment_file.read_text(), flags=re.M)
    (tmp_path / "demo" / "no_truth.toml").write_text(text)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "demo" / "no_truth.toml"), "--pool-truth", str(truth),
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert "pseudo-label quality (round1_tiny_cnn): accuracy" in result.output
    assert json.loads((student / QUALITY_JSON).read_text())["all"] == quality["all"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.keras")} == models


def test_a_bad_truth_file_fails_before_any_training(tmp_path):
    experiment_file = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=10, epochs=1)
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\nx.jpg,garage\n")
    result = CliRunner().invoke(main, ["run", str(experiment_file), "--pool-truth", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: line 2: unknown class 'garage'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "demo" / "runs" / "round0_teacher").exists()
