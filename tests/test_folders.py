"""`pseudolabel data import-folders`: folder-per-class data -> labels, split, experiment that load."""

import csv
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pseudolabel.cli import main
from pseudolabel.config import load_experiment
from pseudolabel.data import DataError, load_task
from pseudolabel.data.folders import class_folders, import_folders
from pseudolabel.synthetic import synthetic_image

CLASSES = ["bathroom", "kitchen", "long living room"]


def make_folders(root: Path, per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        folder = root / name / ("nested" if k == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(synthetic_image(k % 2, rng, 24)).save(folder / f"{name[:3]}_{i}.png")
    return root


@pytest.fixture
def folders(tmp_path):
    train = make_folders(tmp_path / "train", 12)
    test = make_folders(tmp_path / "test", 4, seed=1)
    (train / "kitchen" / "broken.jpg").write_bytes(b"not an image")
    (train / "kitchen" / "notes.txt").write_text("not an image either, and no image extension")
    (train / ".hidden").mkdir()
    return train, test


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_test_folder_becomes_the_test_split_exactly(folders, tmp_path):
    train, test = folders
    result = import_folders(train, tmp_path / "out", test_dir=test, val_size=0.25)
    experiment = load_experiment(result.experiment)
    task = load_task(experiment.data.as_task_config())
    assert list(task.class_map.names) == CLASSES
    test_paths, _ = task.split.subset("test")
    assert sorted(map(str, test_paths)) == sorted(str(p) for p in test.rglob("*.png"))
    train_paths = task.split.subset("train")[0] + task.split.subset("val")[0]
    assert sorted(map(str, train_paths)) == sorted(str(p) for p in train.rglob("*.png"))  # not broken.jpg
    assert task.split.class_counts()["val"] == {name: 3 for name in CLASSES}
    assert result.skipped == [(str(train / "kitchen" / "broken.jpg"), result.skipped[0][1])]
    assert experiment.teacher.recipe.endswith("recipes/teacher.toml")
    assert experiment.teacher_recipe.model.backbone == "efficientnet_lite0"
    assert len(experiment.student_recipes) == 1 and experiment.pools == []


def test_without_test_folder_the_split_is_stratified_and_seeded(folders, tmp_path):
    train, _ = folders
    a = import_folders(train, tmp_path / "a", test_size=0.25, val_size=0.25, seed=3)
    import_folders(train, tmp_path / "b", test_size=0.25, val_size=0.25, seed=3)
    assert (tmp_path / "a" / "split.csv").read_text() == (tmp_path / "b" / "split.csv").read_text()
    counts = a.split.class_counts()
    assert counts["test"] == {"bathroom": 3, "kitchen": 3, "long living room": 3}
    c = import_folders(train, tmp_path / "c", test_size=0.25, val_size=0.25, seed=4)
    assert c.split.hash != a.split.hash


def test_labels_per_class_keeps_n_and_sends_the_rest_to_a_pool_with_truth(folders, tmp_path):
    train, test = folders
    extra = make_folders(tmp_path / "extra", 2, seed=5)
    result = import_folders(train, tmp_path / "out", test_dir=test, labels_per_class=5, val_size=0.2, pools=[extra])
    experiment = load_experiment(result.experiment)
    task = load_task(experiment.data.as_task_config())
    counts = task.split.class_counts()
    assert {n: counts["train"][n] + counts["val"][n] for n in CLASSES} == {n: 5 for n in CLASSES}
    assert [p.path for p in experiment.pools] == [str(train), str(extra.resolve())]
    text = result.experiment.read_text()
    assert f'truth = "{tmp_path / "out" / "pool_truth.csv"}"' in text
    assert [p.truth for p in experiment.pools] == [str(tmp_path / "out" / "pool_truth.csv"), None]
    truth = _rows(tmp_path / "out" / "pool_truth.csv")
    assert len(truth) == 3 * (12 - 5)
    labeled = {str(p) for p in task.labeled.paths}
    assert all(row["image"] not in labeled and Path(row["image"]).exists() for row in truth)
    assert all(Path(row["image"]).relative_to(train).parts[0] == row["label"] for row in truth)


def test_cli_import_then_files_load_and_errors_are_one_line(folders, tmp_path):
    train, test = folders
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["data", "import-folders", str(train), "--test-dir", str(test),
                                       "--labels-per-class", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "broken.jpg" in result.output and f"pseudolabel run {out / 'experiment.toml'}" in result.output
    assert "long living room" in result.output
    load_task(load_experiment(out / "experiment.toml").data.as_task_config())

    again = CliRunner().invoke(main, ["data", "import-folders", str(train), "--test-dir", str(test),
                                      "--labels-per-class", "5", "--out", str(out)])
    assert again.exit_code == 1 and "different import" in again.output and "Traceback" not in again.output
    forced = CliRunner().invoke(main, ["data", "import-folders", str(train), "--test-dir", str(test),
                                       "--labels-per-class", "5", "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output

    too_many = CliRunner().invoke(main, ["data", "import-folders", str(train), "--labels-per-class", "50",
                                         "--out", str(tmp_path / "o2")])
    assert too_many.exit_code == 1 and "fewer than --labels-per-class 50" in too_many.output
    assert not (tmp_path / "o2").exists()  # nothing half-written


def test_class_folders_errors(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="at least 2"):
        class_folders(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images: empty, only"):
        class_folders(tmp_path)


def test_test_folder_with_other_classes_is_refused(folders, tmp_path):
    train, test = folders
    (test / "garage").mkdir()
    Image.fromarray(synthetic_image(0, np.random.default_rng(0), 24)).save(test / "garage" / "g.png")
    with pytest.raises(DataError, match="differ from those of"):
        import_folders(train, tmp_path / "out", test_dir=test)


TINY_TEACHER = """[model]
backbone = "tiny_cnn"
image_size = 24
weights = "none"
[train]
batch_size = 8
phase1_epochs = 3
"""

TINY_STUDENT = """[model]
backbone = "tiny_cnn"
image_size = 24
weights = "none"
[train]
batch_size = 8
epochs = 1
"""


def test_two_folders_of_images_give_a_teacher_student_comparison_with_import_and_run_alone(tmp_path):
    """A user's own train and test folders (three classes here): import-folders, then run, no script."""
    train = make_folders(tmp_path / "train", 12)
    test = make_folders(tmp_path / "test", 4, seed=1)
    (tmp_path / "t.toml").write_text(TINY_TEACHER)
    (tmp_path / "s.toml").write_text(TINY_STUDENT)
    out = tmp_path / "project"
    result = CliRunner().invoke(main, ["data", "import-folders", str(train), "--test-dir", str(test),
                                       "--labels-per-class", "8", "--out", str(out),
                                       "--teacher-recipe", str(tmp_path / "t.toml"),
                                       "--student-recipe", str(tmp_path / "s.toml")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["run", str(out / "experiment.toml"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{\n"):])
    assert [row["run"] for row in summary["rows"]][::3] == ["round0_teacher", "round1_tiny_cnn"]
    assert summary["auc"] == "macro one-vs-rest ROC AUC" and summary["class_names"] == CLASSES
    assert summary["n_test_images"] == 12                       # the test folder, as it is
    student = json.loads((Path(summary["rows"][3]["path"]) / "metrics.json").read_text())
    assert student["n_images"]["pseudo_labeled"] > 0           # the held-back train images were the pool
