"""`pseudolabel data import-folders`: folder-per-class data -> labels, split, experiment that load."""

import csv
import re
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pseudolabel.cli import main
from pseudolabel.config import ConfigError, load_experiment
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


def assert_counts_under_class_names(output: str, names: list[str]) -> None:
    """The split table's counts end where their column's header ends, class names with spaces
    and longer than the numbers included."""
    lines = output.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["part", "images"])
    ends = [header.index(" images") + len(" images")] + [header.index(f" {n}") + len(n) + 1 for n in names]
    for part in ("train", "val", "test"):
        row = next(line for line in lines if line.split()[:1] == [part])
        assert [m.end() for m in re.finditer(r"\d+", row)] == ends, (header, row)


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
    assert_counts_under_class_names(result.output, CLASSES)
    load_task(load_experiment(out / "experiment.toml").data.as_task_config())

    again = CliRunner().invoke(main, ["data", "import-folders", str(train), "--test-dir", str(test),
                                      "--labels-per-class", "5", "--out", str(out)])
    assert again.exit_code == 1 and "different import" in again.output and "Traceback" not in again.output
    forced = CliRunner().invoke(main, ["data", "import-folders", str(train), "--test-dir", str(test),
                                       "--labels-per-class", "5", "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output

    too_many = CliRunner().invoke(main, ["data", "import-folders", str(train), "--labels-per-class", "50",
                                         "--out", str(tmp_path / "o2")])
    assert too_many.exit_code == 1 and "too few for 50 labels per class" in too_many.output
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


# --------------------------------------------------------------------------- [data] layout = "folders"


def _folder_experiment(path: Path, data: str, pools: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'output = "runs"\n[data]\nlayout = "folders"\n{data}\n{pools}')
    return path


@pytest.mark.parametrize("options, data", [
    (dict(test_dir="TEST", labels_per_class=5, val_size=0.2),
     'train = "../train"\ntest = "../test"\nlabels_per_class = 5\nval_size = 0.2'),
    (dict(test_size=0.25, val_size=0.25, seed=3), 'train = "../train"\ntest_size = 0.25\nval_size = 0.25\nseed = 3'),
    (dict(test_per_class=3, val_per_class=2, labels_per_class=6, seed=1),
     'train = "../train"\ntest_per_class = 3\nval_per_class = 2\nlabels_per_class = 6\nseed = 1'),
])
def test_folders_layout_is_the_split_import_folders_writes(folders, tmp_path, options, data):
    train, test = folders
    options = {k: (test if v == "TEST" else v) for k, v in options.items()}
    imported = import_folders(train, tmp_path / "imported", **options)
    experiment = load_experiment(_folder_experiment(tmp_path / "exp" / "e.toml", data))  # paths relative to it
    task = load_task(experiment.data.as_task_config())
    written = load_task(load_experiment(imported.experiment).data.as_task_config())
    assert task.split.hash == written.split.hash and task.split.items == written.split.items
    assert list(task.class_map.names) == CLASSES and task.split.class_map.positive_index is None
    assert sorted(task.held_back) == sorted((r["image"], r["label"]) for r in _rows(imported.truth)) \
        if imported.truth else task.held_back == []
    assert [(p.name, p.path) for p in experiment.pools] == [(p["name"], p["path"]) for p in imported.pools]
    assert task.describe()["layout"] == "folders" and task.describe()["train"] == str(train)


def test_folders_layout_split_is_fixed_by_files_and_keys(folders, tmp_path):
    train, _ = folders
    data = 'train = "{}"\nlabels_per_class = 6\ntest_per_class = 3\nseed = {}'
    hashes = lambda seed: load_task(load_experiment(_folder_experiment(  # noqa: E731
        tmp_path / "e.toml", data.format(train, seed))).data.as_task_config()).split.hash
    first = hashes(0)
    assert hashes(0) == first                     # read again: the same split
    assert hashes(1) != first                     # another seed
    Image.fromarray(synthetic_image(0, np.random.default_rng(9), 24)).save(train / "bathroom" / "new.png")
    assert hashes(0) != first                     # another file


def test_folders_layout_skips_unreadable_images_with_one_warning(folders, tmp_path):
    from pseudolabel.data import DataWarning

    train, test = folders
    exp = _folder_experiment(tmp_path / "e.toml", f'train = "{train}"\ntest = "{test}"')
    with pytest.warns(DataWarning, match=r"skipped 1 unreadable image\(s\): .*kitchen/broken.jpg"):
        task = load_task(load_experiment(exp).data.as_task_config())
    assert not any("broken" in image for image, _, _ in task.split.items)
    assert load_experiment(exp).pools == []       # no labels_per_class: no held-back pool


def test_folders_layout_class_names_order_the_classes_and_must_be_the_folders(folders, tmp_path):
    train, test = folders
    names = ["long living room", "bathroom", "kitchen"]
    exp = _folder_experiment(tmp_path / "e.toml", f'train = "{train}"\ntest = "{test}"\n'
                             f'[data.classes]\nnames = {json.dumps(names)}')
    task = load_task(load_experiment(exp).data.as_task_config())
    assert list(task.class_map.names) == names
    paths, labels = task.split.subset("test")
    assert all(p.relative_to(test).parts[0] == names[k] for p, k in zip(paths, labels))
    exp.write_text(exp.read_text().replace('"kitchen"', '"garage"'))
    with pytest.raises(DataError, match=r"the classes are its folders .* must be exactly those"):
        load_task(load_experiment(exp).data.as_task_config())


@pytest.mark.parametrize("data, message", [
    ('train = "t"\nroot = "."', r'data: root: not with layout = "folders"'),
    ('test = "t"', r'data: train: required with layout = "folders"'),
    ('train = "t"\ntest = "u"\ntest_size = 0.2', r"data: test and test_size: give one of them"),
    ('train = "t"\ntest_size = 0.2\ntest_per_class = 3', r"data: test_size and test_per_class: give one of them"),
    ('train = "t"\nval_per_class = 5\nlabels_per_class = 5', r"val_per_class \(5\) must be below labels_per_class"),
    ('train = "t"\ntest_size = 1.5', r"data.test_size: should be less than 1"),
    ('train = "t"\nlabels_per_class = "12"', r"data.labels_per_class: should be a valid integer"),
    ('train = "t"\n[data.classes]\nnames = ["a", "b"]\nmap = {x = "a", y = "b"}', r"data: classes: .* only names"),
    ('train = "t"\nclasses = "house_rooms"', r"data: classes: .* only names"),
])
def test_folders_layout_keys_are_checked_when_read(tmp_path, data, message):
    exp = _folder_experiment(tmp_path / "e.toml", data)
    with pytest.raises(ConfigError) as caught:
        load_experiment(exp)
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"{exp}: ") and re.search(message, line), line


def test_folder_keys_in_the_csv_layout_are_refused(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text('[data]\nroot = "."\nsplit = "s.csv"\nlabels_per_class = 5\n')
    with pytest.raises(ConfigError, match=r'data: labels_per_class: only with layout = "folders"'):
        load_experiment(exp)


def test_commands_take_a_folders_experiment_for_their_data(folders, tmp_path):
    from pseudolabel.cli.common import data_config

    train, test = folders
    exp = _folder_experiment(tmp_path / "e.toml", f'train = "{train}"\ntest = "{test}"')
    assert data_config(experiment=str(exp)).layout == "folders"    # no --root needed


def test_folders_layout_runs_teacher_and_student_on_the_held_back_pool_and_keeps_its_truth(tmp_path):
    """An experiment naming two folders (train per class, test per class) and nothing else: run."""
    train = make_folders(tmp_path / "train", 12)
    test = make_folders(tmp_path / "test", 4, seed=1)
    (tmp_path / "t.toml").write_text(TINY_TEACHER)
    (tmp_path / "s.toml").write_text(TINY_STUDENT)
    exp = _folder_experiment(tmp_path / "e.toml", 'train = "train"\ntest = "test"\nlabels_per_class = 8',
                             '[teacher]\nrecipe = "t.toml"\n[students]\nrecipes = ["s.toml"]\n'
                             '[baselines]\nprobe = false\nself_training = false\n')
    result = CliRunner().invoke(main, ["run", str(exp), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{\n"):])
    assert [row["run"] for row in summary["rows"]] == ["round0_teacher", "round1_tiny_cnn"]
    assert summary["n_test_images"] == 12 and summary["class_names"] == CLASSES
    truth = _rows(tmp_path / "runs" / "pool_truth.csv")
    assert len(truth) == 3 * (12 - 8) and all(Path(r["image"]).relative_to(train).parts[0] == r["label"] for r in truth)
    quality = json.loads((Path(summary["rows"][1]["path"]) / "pseudo_quality.json").read_text())
    assert quality["all"]["n"] == len(truth)                     # every held-back image, measured by its label
    student = json.loads((Path(summary["rows"][1]["path"]) / "metrics.json").read_text())
    assert student["pseudo_labels"]["per_pool"] == {"train_unlabeled": student["n_images"]["pseudo_labeled"]}
    assert student["n_images"]["train"] + student["n_images"]["val"] == 3 * 8
