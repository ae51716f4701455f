"""The run lifecycle's contracts, on a tiny teacher: finished means verified, one process per run,
a changed split is never reported as finished, a killed session's temporaries are cleaned."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pseudolabel import config, data
from pseudolabel.lifecycle import RunChangedError, config_changes
from pseudolabel.synthetic import write_synthetic_dataset

RECIPE = """
[model]
backbone = "tiny_cnn"
image_size = 32
weights = "none"

[train]
batch_size = 8
phase1_epochs = 2
"""


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle") / "data"
    write_synthetic_dataset(root, n_labeled=32, n_unlabeled=0)
    class_map = data.ClassMap.from_config({"names": ["old", "modern"], "map": {"M": "modern", "O": "old"}})
    labeled = data.read_labels_csv(root / "labels.csv", class_map=class_map)
    split = data.make_split(labeled, class_map, test_size=0.25, val_size=0.25, seed=0, hash_distance=None)
    return data.Task(root, class_map, split, labeled)


@pytest.fixture
def recipe(tmp_path):
    (tmp_path / "t.toml").write_text(RECIPE)
    return config.load_recipe(tmp_path / "t.toml", "teacher")


def test_config_changes_name_each_key_and_treat_missing_keys_as_defaults():
    old = {"train": {"lr": 0.1, "seed": 0}, "path": "/a/r.toml"}
    new = {"train": {"lr": 0.2, "seed": 0, "scale_lr": True}, "path": "/b/r.toml"}
    assert config_changes(old, new, {"train": {"scale_lr": True}}) == ["train.lr: 0.1 -> 0.2"]
    assert config_changes(old, new, {"train": {"scale_lr": False}}) == ["train.lr: 0.1 -> 0.2",
                                                                       "train.scale_lr: False -> True"]


def test_a_damaged_artifact_of_a_finished_run_is_named_and_the_run_redone(tmp_path, task, recipe, capsys):
    import keras

    from pseudolabel.teacher import train_teacher

    run_dir = tmp_path / "run"
    train_teacher(recipe, task, run_dir, verbose=0)
    assert json.loads((run_dir / "manifest.json").read_text())["files"]["model.keras"]["size"] > 0
    model = run_dir / "model.keras"
    model.write_bytes(model.read_bytes()[:1000])   # truncated after the run finished
    capsys.readouterr()
    train_teacher(recipe, task, run_dir, verbose=0)
    out = capsys.readouterr().out
    assert "model.keras" in out and "starting it over" in out and "finished earlier" not in out
    keras.models.load_model(model)   # whole again


def test_a_finished_run_is_not_reported_on_another_split(tmp_path, task, recipe):
    from pseudolabel.teacher import train_teacher

    run_dir = tmp_path / "run"
    train_teacher(recipe, task, run_dir, verbose=0)
    other = data.Task(task.root, task.class_map, data.make_split(task.labeled, task.class_map, test_size=0.25,
                                                                 val_size=0.25, seed=1, hash_distance=None),
                      task.labeled)
    with pytest.raises(RunChangedError, match="was started on split"):
        train_teacher(recipe, other, run_dir, verbose=0)


HOLD_LOCK = """
import sys, time
from pseudolabel.rundir import RunLock
with RunLock.for_directory(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_process_on_a_run_is_refused_naming_the_holder(tmp_path, task, recipe):
    from pseudolabel.rundir import LockedError
    from pseudolabel.teacher import train_teacher

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(LockedError, match=rf"in use by another process \(pid {holder.pid}\)"):
            train_teacher(recipe, task, run_dir, verbose=0)
        assert time.monotonic() - started < 30   # refused at once, not after waiting
        assert not (run_dir / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    train_teacher(recipe, task, run_dir, verbose=0)   # the kernel dropped the lock with its holder


def test_temporaries_of_a_killed_session_are_removed_on_the_next_start(tmp_path, task, recipe):
    from pseudolabel.teacher import train_teacher

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = [run_dir / ".model.k2j3h4.tmp.keras", run_dir / ".best.weights.h5.x9y8.tmp.weights.h5"]
    for path in stale:
        path.write_bytes(b"half written")
    train_teacher(recipe, task, run_dir, verbose=0)
    assert not any(path.exists() for path in stale)


def test_a_split_without_validation_is_refused_in_one_line_before_training(tmp_path, task, recipe):
    from pseudolabel.teacher import train_teacher

    no_val = data.make_split(task.labeled, task.class_map, test_size=0.25, val_size=0.0, seed=0, hash_distance=None)
    with pytest.raises(data.DataError, match="no validation images; the teacher selects its epochs on them"):
        train_teacher(recipe, data.Task(task.root, task.class_map, no_val, task.labeled), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_finished_run_is_not_reported_for_other_classes(tmp_path, task, recipe):
    from pseudolabel.teacher import train_teacher

    run_dir = tmp_path / "run"
    train_teacher(recipe, task, run_dir, verbose=0)
    other = data.ClassMap.from_config({"names": ["old", "modern"], "map": {"M": "modern", "O": "old"},
                                       "positive": "old"})
    with pytest.raises(RunChangedError, match="was started with classes"):
        train_teacher(recipe, data.Task(task.root, other, task.split, task.labeled), run_dir, verbose=0)


def test_a_damaged_feature_cache_is_named_and_computed_again(tmp_path, capsys):
    import numpy as np

    from pseudolabel.features import cached_features

    path = tmp_path / "features.npz"
    features, reused = cached_features(path, {"k": 1}, lambda: {"x": np.ones(3)})
    assert not reused and cached_features(path, {"k": 1}, lambda: {"x": np.zeros(3)})[1]
    path.write_bytes(path.read_bytes()[:40])
    features, reused = cached_features(path, {"k": 1}, lambda: {"x": np.zeros(3)})
    assert not reused and features["x"].sum() == 0
    assert f"{path}: damaged" in capsys.readouterr().out
