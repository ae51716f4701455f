"""Tests for pseudolabel.visual_report (visual.html), runinfo and thumbnails."""

import base64
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from pseudolabel import evaluation as ev
from pseudolabel import report, runinfo, visual_report
from pseudolabel.browser import dump_dom, find_browser, screenshot
from pseudolabel.pseudolabels import PseudoLabelTable, header, read_pseudo_labels
from pseudolabel.rundir import RunDir
from pseudolabel.synthetic import write_synthetic_dataset
from pseudolabel.thumbnails import ThumbnailCache, thumbnail_jpeg

CLASSES = ["old", "modern"]
JPEG_URI = re.compile(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"')


def write_table(path, images, probs):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header(CLASSES))
        for image, p in zip(images, probs):
            k = int(np.argmax(p))
            writer.writerow([image, "Pool", "0" * 64, *p, p[k], CLASSES[k]])


def make_run(path, test_images, y, p_modern, *, table=None, history=True, root=None):
    """An evaluated run directory; `table` = (pool images, probs) makes it a student round; `root`:
    the data root it records (as every run of the lifecycle does)."""
    data = {"root": str(root), "labels": str(root / "labels.csv")} if root else None
    run = RunDir.create(path, {"model": {"backbone": "tiny_cnn"}}, seed=7, split_hash="h", data=data)
    probs = np.stack([1 - np.asarray(p_modern), p_modern], axis=1)
    ev.write_predictions(run.file("test_predictions.csv"), test_images, y, probs, CLASSES)
    run.write_metrics({"kind": "student" if table else "teacher", "n_images": {"train": 20, "val": 8, "test": len(y)},
                       **ev.evaluate_predictions(y, probs, CLASSES, n_resamples=20)})
    if history:
        run.file("history.csv").write_text("epoch,loss,val_loss\n0,1.0,1.1\n1,0.5,0.7\n")
    if table:
        write_table(run.file("pseudo_labels.csv"), *table)
    return run.path


@pytest.fixture
def experiment_runs(tmp_path):
    """Data root with images, a teacher, two student rounds (one pool label flips), and a probe."""
    root = tmp_path / "data"
    write_synthetic_dataset(root, n_labeled=12, n_unlabeled=6)
    test_images = [f"Labeled/img_{i}.jpg" for i in range(1, 13)] + ["Labeled/gone.jpg"]
    y = np.array([i % 2 for i in range(13)])
    p_teacher = np.where(y == 1, 0.8, 0.2)
    p_teacher[[0, 3]] = 1 - p_teacher[[0, 3]]           # two surely wrong answers
    p_teacher[12] = 0.9                                   # the missing image, wrong (true old)
    pool = [str(root / "Pool" / f"img_{i}.jpg") for i in range(1, 7)]
    round1 = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.05, 0.95], [0.7, 0.3]])
    round2 = round1.copy()
    round2[1] = [0.3, 0.7]                                # img_2 flips old -> modern
    runs = tmp_path / "runs"
    teacher = make_run(runs / "round0_teacher", test_images, y, p_teacher, root=root)
    r1 = make_run(runs / "round1_tiny_cnn", test_images, y, np.where(y == 1, 0.7, 0.3), table=(pool, round1),
                  root=root)
    r2 = make_run(runs / "round2_tiny_cnn", test_images, y, np.where(y == 1, 0.9, 0.1), table=(pool, round2),
                  root=root)
    probe = make_run(runs / "probe", test_images, y, np.where(y == 1, 0.6, 0.4), history=False, root=root)
    return root, [teacher, r1, r2, probe]


def sections(page: str) -> dict:
    parts = re.split(r"<section><h2>(.*?)</h2>", page)
    return dict(zip(parts[1::2], parts[2::2]))


def test_compare_runs_writes_a_self_contained_visual_report(experiment_runs, tmp_path):
    root, runs = experiment_runs
    result = report.compare_runs(runs, tmp_path / "out", n_resamples=100)
    page = (tmp_path / "out" / "visual.html").read_text()
    assert result["files"]["visual.html"] == str(tmp_path / "out" / "visual.html")
    assert "src=\"http" not in page and "src=\"file" not in page   # nothing outside the page
    for encoded in JPEG_URI.findall(page):
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 96
    parts = sections(page)
    assert str(root) in parts["Runs"]                 # the data root the runs recorded
    assert "Flipped since round1_tiny_cnn: 1 image<" in parts["Pseudo-labels per round"]
    assert "old 0.60 &rarr; modern 0.70" in parts["Pseudo-labels per round"]
    assert "The first round: nothing to compare with." in parts["Pseudo-labels per round"]
    assert "No training history" in parts["Training curves"]      # the probe
    assert parts["Training curves"].count("data:image/png;base64") == 3
    errors = parts["Test errors"]
    assert "Misclassified: 3 of 13 test images" in errors          # the teacher
    assert errors.count('class="missing"') == 1                    # gone.jpg: a placeholder
    assert "no test image is misclassified" in errors              # the students


def test_share_and_galleries_follow_the_tables(experiment_runs):
    _, runs = experiment_runs
    views = [visual_report.load_view(r) for r in runs]
    rounds, classes, shares = visual_report.class_shares(views)
    assert rounds == ["round1_tiny_cnn", "round2_tiny_cnn"] and classes == CLASSES
    np.testing.assert_allclose(shares, [[3 / 6, 3 / 6], [2 / 6, 4 / 6]])
    table = views[1].table
    assert visual_report.most_sure(table, 1, 2) == [4, 2]          # modern 0.95, then 0.8
    assert visual_report.most_sure(table, 0, 10) == [0, 5, 1]
    assert visual_report.least_sure(table, 2) == [3, 1]            # 0.55, 0.6
    assert visual_report.flipped(views[2].table, table) == [(1, 1)]
    assert visual_report.rounds_with_tables(views)[1][1] is views[1]


def test_flipped_matches_by_image_not_row(tmp_path):
    a = PseudoLabelTable(["x", "y", "z"], ["p"] * 3, ["0"] * 3, np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), CLASSES)
    b = PseudoLabelTable(["z", "new", "x"], ["p"] * 3, ["0"] * 3, np.array([[0.3, 0.7], [0.9, 0.1], [0.8, 0.2]]), CLASSES)
    assert visual_report.flipped(b, a) == [(0, 2)]   # z flipped; x did not; "new" has no past


def test_confusion_matrix_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    np.testing.assert_array_equal(visual_report.confusion_matrix(y, pred, 3), sk_confusion_matrix(y, pred, labels=[0, 1, 2]))


def test_runs_without_tables_or_images_still_render(tmp_path):
    run = make_run(tmp_path / "teacher", ["nowhere/a.jpg", "nowhere/b.jpg"], np.array([0, 1]), np.array([0.7, 0.6]))
    page = visual_report.render_visual_report([run])
    parts = sections(page)
    assert "No run here has a pseudo-label table" in parts["Pseudo-labels per round"]
    assert "No pseudo-label tables" in parts["Predicted class share of the pools"]
    assert "data root of the test images was not found" in parts["Runs"]
    assert parts["Test errors"].count('class="missing"') == 1     # a.jpg wrong, not found


def test_an_unreadable_table_is_left_out_not_fatal(experiment_runs):
    _, runs = experiment_runs
    (runs[2] / "pseudo_labels.csv").write_text("what,is,this\n1,2,3\n")
    parts = sections(visual_report.render_visual_report(runs))
    assert "round2_tiny_cnn: pseudo_labels.csv left out: " in parts["Runs"]
    assert "round2_tiny_cnn:" not in parts["Pseudo-labels per round"] and "round1_tiny_cnn" in parts["Pseudo-labels per round"]


def test_a_failing_section_becomes_a_note(experiment_runs, monkeypatch):
    _, runs = experiment_runs

    def broken(views):
        raise KeyError("boom")

    monkeypatch.setattr(visual_report, "curves_section", broken)
    with pytest.warns(UserWarning, match="Training curves"):
        page = visual_report.render_visual_report(runs)
    parts = sections(page)
    assert "could not be drawn: KeyError" in parts["Training curves"]
    assert "Misclassified" in parts["Test errors"]


def test_a_run_records_where_its_images_are(tmp_path):
    from pseudolabel.config import load_experiment
    from pseudolabel.data import load_task
    from pseudolabel.demo import write_demo
    from pseudolabel.probe import run_probe

    experiment = load_experiment(write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=4, epochs=1))
    run = tmp_path / "probe"
    run_probe(load_task(experiment.data.as_task_config()), run, backbone="tiny_cnn", image_size=32, weights=None,
              cv=2, verbose=0)
    context = runinfo.run_context(run)
    assert context.image_root == Path(experiment.data.root)
    assert context.labels_csv == Path(experiment.data.labels)
    assert context.classes["names"] == ["old", "modern"]
    assert runinfo.find_image_root([run], explicit=tmp_path) == tmp_path.resolve()
    # A run that recorded no data (an older version): the root only when told.
    lone = make_run(tmp_path / "elsewhere" / "run", ["Labeled/img_1.jpg", "Labeled/img_2.jpg"], np.array([1, 0]),
                    np.array([0.9, 0.2]))
    assert runinfo.find_image_root([lone]) is None and runinfo.run_context(lone).labels_csv is None


def test_thumbnails(tmp_path):
    Image.new("RGB", (300, 150), (200, 10, 10)).save(tmp_path / "wide.png")
    with Image.open(io.BytesIO(thumbnail_jpeg(tmp_path / "wide.png", 96))) as thumb:
        assert thumb.size == (96, 48)                     # aspect ratio kept
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    cache = ThumbnailCache()
    assert cache.uri(tmp_path / "bad.jpg") is None and cache.uri(tmp_path / "missing.jpg") is None
    assert cache.uri(tmp_path / "wide.png").startswith("data:image/jpeg;base64,")


def test_pool_table_written_by_the_helper_reads_back(experiment_runs):
    _, runs = experiment_runs
    assert len(read_pseudo_labels(runs[1] / "pseudo_labels.csv")) == 6


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None, reason="no chromium on PATH")
def test_visual_report_renders_in_chromium(experiment_runs, tmp_path):
    _, runs = experiment_runs
    report.compare_runs(runs, tmp_path / "out", n_resamples=100)
    dom = dump_dom(tmp_path / "out" / "visual.html")
    assert dom.count("<figure") >= 10 and "Test errors" in dom
    png = screenshot(tmp_path / "out" / "visual.html", tmp_path / "shot.png", width=1000, height=1400)
    with Image.open(png) as shot:
        pixels = np.asarray(shot.convert("RGB"))
    assert shot.size == (1000, 1400)
    assert pixels.std() > 10   # not a blank page


def test_compare_cli_image_root_option(tmp_path):
    from click.testing import CliRunner

    from pseudolabel.cli.report import compare

    root = tmp_path / "data"
    write_synthetic_dataset(root, n_labeled=4, n_unlabeled=1)
    images = [f"Labeled/img_{i}.jpg" for i in range(1, 5)]
    run = make_run(tmp_path / "runs" / "teacher", images, np.array([0, 1, 0, 1]), np.array([0.9, 0.8, 0.1, 0.2]))
    for args, found in (([], False), (["--image-root", str(root)], True)):
        out = tmp_path / f"out{len(args)}"
        result = CliRunner().invoke(compare, [str(run), "--out", str(out), "--resamples", "100", *args])
        assert result.exit_code == 0, result.output
        errors = sections((out / "visual.html").read_text())["Test errors"]
        assert errors.count("data:image/jpeg") == (2 if found else 0)   # img_1 and img_4 are wrong
        assert errors.count('class="missing"') == (0 if found else 2)
