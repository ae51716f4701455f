"""Teacher training and the linear probe, on 32 px synthetic images with the tiny_cnn backbone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pseudolabel import config, data
from pseudolabel.synthetic import write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CLASS_MAP = {"names": ["old", "modern"], "map": {"M": "modern", "O": "old"}, "positive": "modern"}

RECIPE = """
[model]
backbone = "tiny_cnn"
image_size = 32
weights = "none"
dropout = 0.2

[train]
seed = 0
batch_size = 8
phase1_epochs = {phase1}
phase1_lr = 3e-3
phase1_patience = 20
phase2_epochs = {phase2}
phase2_lr = 1e-3
phase2_patience = 20
unfreeze_blocks = 1
feature_views = 2
"""


def make_task(root: Path) -> data.Task:
    class_map = data.ClassMap.from_config(CLASS_MAP)
    labeled = data.read_labels_csv(root / "labels.csv", class_map=class_map)
    split = data.make_split(labeled, class_map, test_size=0.25, val_size=0.2, seed=0, hash_distance=None)
    return data.Task(root, class_map, split, labeled)


def write_recipe(path: Path, phase1: int = 4, phase2: int = 2) -> Path:
    path.write_text(RECIPE.format(phase1=phase1, phase2=phase2))
    return path


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("training") / "data"
    write_synthetic_dataset(root, n_labeled=48, n_unlabeled=0)
    return root


@pytest.fixture(scope="module")
def task(dataset_root):
    return make_task(dataset_root)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, task):
    """One finished teacher (phase 1 + phase 2), shared by the artifact and no-retrain tests."""
    from pseudolabel.teacher import train_teacher

    base = tmp_path_factory.mktemp("teacher")
    recipe = config.load_recipe(write_recipe(base / "teacher.toml"), "teacher")
    run_dir = base / "run"
    metrics = train_teacher(recipe, task, run_dir, verbose=0)
    return run_dir, metrics, recipe


# --------------------------------------------------------------------------- small pieces


def test_class_weights_balanced():
    from pseudolabel.training import class_weights

    labels = np.array([0] * 30 + [1] * 10)
    weights = class_weights(labels, 2, "balanced")
    assert weights == pytest.approx({0: 40 / (2 * 30), 1: 40 / (2 * 10)})
    # Weighted class totals are equal: that is what "balanced" means.
    assert 30 * weights[0] == pytest.approx(10 * weights[1])
    assert class_weights(labels, 2, "none") is None
    # Soft / one-hot rows count for their top class; an absent class gets weight 1.
    rows = np.eye(3)[[0, 0, 1]] * 0.8 + 0.2 / 3
    assert class_weights(rows, 3)[2] == 1.0
    with pytest.raises(ValueError):
        class_weights(labels, 2, "inverse")


def test_standard_callbacks_trim_history_and_resume_best(tmp_path):
    from pseudolabel.callbacks import BestWeightsCheckpoint, ResumableEarlyStopping, standard_callbacks

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_loss\n0,1.0,0.9\n1,0.8,0.5\n2,0.7,0.6\n3,0.6,0.7\n")
    # A backup that resumes at epoch 3: the row of epoch 3 is dropped (it will be redone).
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    callbacks = standard_callbacks(tmp_path, patience=5, start_epoch=1, tensorboard=False)
    assert [line.split(",")[0] for line in history.read_text().splitlines()] == ["epoch", "0", "1", "2"]
    stop = next(c for c in callbacks if isinstance(c, ResumableEarlyStopping))
    best = next(c for c in callbacks if isinstance(c, BestWeightsCheckpoint))
    assert best.best == pytest.approx(0.5)                       # best of the whole run so far
    assert (stop.initial_best, stop.initial_wait) == (pytest.approx(0.5), 1)  # epoch 2 did not improve
    # A fresh start (no backup, start 0) starts a fresh history.
    standard_callbacks(tmp_path, patience=5, backup=False, tensorboard=False)
    assert not history.exists()


def test_head_on_features_predicts_like_full_model(tmp_path, task):
    """Phase 1 fits the head on cached features; the full model (same head object) agrees."""
    import keras

    from pseudolabel import training
    from pseudolabel.backbones import freeze_backbone
    from pseudolabel.features import extract_features, plain_dataset
    from pseudolabel.teacher import TeacherRun

    recipe = config.load_recipe(write_recipe(tmp_path / "t.toml", phase1=3, phase2=0), "teacher")
    keras.utils.set_random_seed(0)
    run = TeacherRun(recipe, task, tmp_path / "run", verbose=0)
    run.path.mkdir()
    model = training.build_model(recipe, 2)
    freeze_backbone(model)
    summary = run.run_phase1(model, recipe.train)
    assert summary["epochs"] == 3 and summary["n_train_features"] == 2 * len(task.split.subset("train")[0])

    val_paths, _ = task.split.subset("val")
    features = extract_features(model.get_layer("backbone"), plain_dataset(val_paths, image_size=32, batch_size=8))
    on_features = model.get_layer("head").predict(features, verbose=0)
    in_model = model.predict(plain_dataset(val_paths, image_size=32, batch_size=8), verbose=0)
    np.testing.assert_allclose(on_features, in_model, atol=1e-5)
    # The cached val features are the ones the model computes now, and a second fit reuses them.
    with np.load(run.file("features.npz")) as npz:
        np.testing.assert_allclose(npz["val_x"], features, atol=1e-5)
    assert not summary["features_reused"]
    assert run.run_phase1(model, recipe.train)["features_reused"]


@pytest.mark.parametrize("num_classes", [2, 3])
def test_head_set_from_the_probe_predicts_what_the_probe_predicts(num_classes):
    """The head's BatchNorm is the probe's scaler and its Dense the logistic regression, exactly,
    even for features whose spread is below BatchNorm's epsilon."""
    from pseudolabel.backbones.factory import create_head
    from pseudolabel.probe import fit_probe, set_head_from_probe

    rng = np.random.default_rng(num_classes)
    y = np.arange(60) % num_classes
    x = rng.normal(size=(60, 6)) * np.array([1.0, 5.0, 0.01, 0.001, 2.0, 1.0]) + y[:, None] * 0.7
    classifier = fit_probe(x, y, cv=3)
    head = create_head(6, num_classes, dropout=0.5)
    set_head_from_probe(head, classifier)
    np.testing.assert_allclose(head.predict(x.astype(np.float32), verbose=0), classifier.predict_proba(x), atol=1e-5)


def _val_probs(run_dir: Path, task) -> np.ndarray:
    import keras

    from pseudolabel.features import plain_dataset

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    return model.predict(plain_dataset(task.split.subset("val")[0], image_size=32, batch_size=8), verbose=0)


def _probe_val_probs(run_dir: Path) -> np.ndarray:
    """What the linear probe, fitted on the run's cached train features, predicts for its val features."""
    from pseudolabel.probe import fit_probe

    with np.load(run_dir / "features.npz") as npz:
        return fit_probe(npz["train_x"], npz["train_y"], seed=0).predict_proba(npz["val_x"])


def test_teacher_initialised_from_the_probe_keeps_it_unless_phase2_beats_it_on_val(tmp_path, task):
    """head_init = "probe": the teacher starts as the probe on its own cached features; a phase 2
    that only makes the model worse (a learning rate that wrecks it) leaves the probe's solution."""
    from pseudolabel.teacher import train_teacher

    path = write_recipe(tmp_path / "t.toml", phase1=0, phase2=2)
    text = path.read_text().replace("phase2_lr = 1e-3", "phase2_lr = 50.0").replace("feature_views = 2", "")
    path.write_text(text + 'head_init = "probe"\nselect = "val_auc"\n')
    recipe = config.load_recipe(path, "teacher")
    metrics = train_teacher(recipe, task, tmp_path / "run", verbose=0)
    assert metrics["phase1"]["best_epoch"] == 0 and metrics["phase1"]["head_init"]["C"] > 0
    history = (tmp_path / "run" / "history.csv").read_text()
    assert "val_auc" in history.splitlines()[0] and len(history.splitlines()) == 3   # header + 2 phase-2 epochs

    np.testing.assert_allclose(_val_probs(tmp_path / "run", task), _probe_val_probs(tmp_path / "run"), atol=1e-4)


@pytest.mark.parametrize("margin, phase2_kept", [(0.0, True), (0.5, False)])
def test_phase2_replaces_the_probe_head_only_by_more_than_the_margin(tmp_path, task, margin, phase2_kept, recwarn):
    """phase2_margin: on this task phase 2 lowers val_loss from the probe's ~0.68 to ~0.29; with no
    margin it wins, with a margin of 0.5 the bar (~0.18) is out of reach and the probe is kept
    (loading it back into the fine-tuned model is silent: its weights carry no optimizer slots)."""
    from pseudolabel.teacher import train_teacher

    path = write_recipe(tmp_path / "t.toml", phase1=0, phase2=3)
    text = path.read_text().replace("feature_views = 2", "")
    path.write_text(text + f'head_init = "probe"\nselect = "val_loss"\nphase2_margin = {margin}\n')
    metrics = train_teacher(config.load_recipe(path, "teacher"), task, tmp_path / "run", verbose=0)
    phase2_losses = [float(r.split(",")[-1]) for r in (tmp_path / "run" / "history.csv").read_text().splitlines()[1:]]
    assert min(phase2_losses) < metrics["phase1"]["best_val_loss"] - 0.3     # phase 2 did improve val

    kept_probe = np.allclose(_val_probs(tmp_path / "run", task), _probe_val_probs(tmp_path / "run"), atol=1e-4)
    assert kept_probe is not phase2_kept
    assert not [w for w in recwarn if "Skipping variable loading" in str(w.message)]


def test_a_teacher_that_is_the_probe_head_alone_finishes_without_curves_and_reports_again(tmp_path, task, capsys):
    """phase1_epochs = phase2_epochs = 0 with head_init = "probe": the probe as a Keras teacher. It
    trains no epoch, so its history is empty: no curves, and a second call reports the finished run."""
    from pseudolabel.teacher import train_teacher
    from pseudolabel.visual_report import curves_png

    path = write_recipe(tmp_path / "t.toml", phase1=0, phase2=0)
    path.write_text(path.read_text().replace("feature_views = 2", "") + 'head_init = "probe"\n')
    recipe = config.load_recipe(path, "teacher")
    metrics = train_teacher(recipe, task, tmp_path / "run", verbose=0)
    assert metrics["epochs"] == {"phase1": 0, "phase2": 0}
    assert not (tmp_path / "run" / "curves.png").exists() and curves_png(tmp_path / "run") is None
    np.testing.assert_allclose(_val_probs(tmp_path / "run", task), _probe_val_probs(tmp_path / "run"), atol=1e-4)
    capsys.readouterr()
    assert train_teacher(recipe, task, tmp_path / "run", verbose=0)["roc_auc"] == metrics["roc_auc"]


def test_phase2_bar_moves_phase1_best_by_the_margin_in_the_direction_of_better():
    from types import SimpleNamespace

    from pseudolabel.teacher import phase2_bar

    assert phase2_bar(0.80, SimpleNamespace(select="val_auc", phase2_margin=0.02)) == pytest.approx(0.82)
    assert phase2_bar(0.50, SimpleNamespace(select="val_loss", phase2_margin=0.05)) == pytest.approx(0.45)
    assert phase2_bar(None, SimpleNamespace(select="val_loss", phase2_margin=0.05)) is None


# --------------------------------------------------------------------------- the teacher


def test_teacher_writes_every_artifact(teacher_run, task):
    import keras

    from pseudolabel.evaluation import read_predictions

    run_dir, metrics, recipe = teacher_run
    for name in ("config.json", "provenance.json", "history.csv", "curves.png", "metrics.json",
                 "test_predictions.csv", "val_predictions.csv", "model.keras", "features.npz"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "backup").exists()            # removed once phase 2 is recorded as done
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))

    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["split_hash"] == task.split.hash
    assert {"keras", "numpy"} <= set(provenance["versions"])
    assert any(name.startswith("tensorflow") for name in provenance["versions"])
    assert json.loads((run_dir / "config.json").read_text())["model"]["backbone"] == "tiny_cnn"

    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["roc_auc"] == metrics["roc_auc"] and 0.0 <= saved["roc_auc"] <= 1.0
    lo, hi = saved["roc_auc_ci"]
    assert lo <= saved["roc_auc"] <= hi
    assert saved["positive_class"] == "modern"
    assert saved["n_images"] == {k: len(task.split.subset(k)[0]) for k in ("train", "val", "test")}
    assert saved["epochs"] == {"phase1": 4, "phase2": 6}
    assert {"features_s", "phase1_fit_s", "phase2_fit_s", "evaluate_s"} <= set(saved["timings"])
    assert "roc_auc" in saved["val"]

    # One history for both phases, epochs continuing.
    epochs = [int(line.split(",")[0]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(6))

    predictions = read_predictions(run_dir / "test_predictions.csv")
    test_paths, test_labels = task.split.subset("test")
    assert predictions.images == [p.relative_to(task.root).as_posix() for p in test_paths]
    np.testing.assert_array_equal(predictions.y_true, test_labels)

    model = keras.models.load_model(run_dir / "model.keras")
    assert model.get_layer("head") is not None and model.input_shape == (None, 32, 32, 3)


def test_finished_teacher_is_not_retrained(teacher_run, task, capsys):
    from pseudolabel.teacher import train_teacher

    run_dir, metrics, recipe = teacher_run
    stamp = (run_dir / "model.keras").stat().st_mtime_ns
    again = train_teacher(recipe, task, run_dir, verbose=0)
    assert again["roc_auc"] == metrics["roc_auc"]
    assert (run_dir / "model.keras").stat().st_mtime_ns == stamp
    assert "finished earlier" in capsys.readouterr().out
    changed = recipe.model_copy(update={"train": recipe.train.model_copy(update={"phase2_epochs": 9})})
    with pytest.raises(config.ConfigError, match="phase2_epochs: 2 -> 9.*--restart"):
        train_teacher(changed, task, run_dir, verbose=0)


def test_unfinished_teacher_continues_only_on_its_split_and_recipe(teacher_run, task):
    from pseudolabel.lifecycle import RunChangedError
    from pseudolabel.teacher import train_teacher

    run_dir, _, recipe = teacher_run
    other = make_task(task.root)
    other.split = data.make_split(task.labeled, task.class_map, test_size=0.25, val_size=0.2, seed=1,
                                  hash_distance=None)
    changed = recipe.model_copy(update={"train": recipe.train.model_copy(update={"phase1_lr": 0.1})})
    (run_dir / "metrics.json").rename(run_dir / "metrics.keep")
    try:
        with pytest.raises(RunChangedError, match="was started on split"):
            train_teacher(recipe, other, run_dir, verbose=0)
        with pytest.raises(RunChangedError, match=r"another config \(changed: train.phase1_lr: 0.003 -> 0.1\)"):
            train_teacher(changed, task, run_dir, verbose=0)
    finally:
        (run_dir / "metrics.keep").rename(run_dir / "metrics.json")


def test_a_run_older_than_a_recipe_key_resumes_when_the_key_is_at_its_default(tmp_path, task):
    from pseudolabel.lifecycle import RunChangedError
    from pseudolabel.teacher import TeacherRun

    recipe = config.load_recipe(write_recipe(tmp_path / "t.toml"), "teacher")
    old = recipe.model_dump(mode="json")
    del old["train"]["scale_lr"], old["train"]["mixed_precision"]  # keys added after this run started
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    assert TeacherRun(recipe, task, tmp_path / "run").status() == "unfinished"
    changed = recipe.model_copy(update={"train": recipe.train.model_copy(update={"scale_lr": False})})
    with pytest.raises(RunChangedError, match=r"changed: train.scale_lr: True -> False"):
        TeacherRun(changed, task, tmp_path / "run").status()


# A teacher in its own process, so the test can SIGKILL it. With SLOW set, every phase-2 epoch ends
# with a pause (after the backup is written) so the kill lands inside phase 2, not after it.
KILLABLE = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import keras
    from pseudolabel import config, teacher
    from test_training import make_task
    from pathlib import Path

    class PauseInPhase2(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if isinstance(self.model, keras.Model) and self.model.name.endswith("classifier"):
                time.sleep(float(os.environ.get("SLOW", "0")))

    recipe = config.load_recipe(sys.argv[2], "teacher")
    started = time.perf_counter()
    teacher.train_teacher(recipe, make_task(Path(sys.argv[1])), sys.argv[3], verbose=2, callbacks=[PauseInPhase2()])
    print(f"teacher process: {{time.perf_counter() - started:.1f}} s after imports")
""")


def _run_teacher_process(script: Path, args: list[str], slow: float):
    env = {**os.environ, "SLOW": str(slow), "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _backed_up_epoch(run_dir: Path) -> int:
    meta = run_dir / "backup" / "training_metadata.json"
    try:
        return json.loads(meta.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


def test_killed_teacher_resumes_phase2(tmp_path, dataset_root):
    phase1, phase2 = 3, 5
    script = tmp_path / "teach.py"
    script.write_text(KILLABLE.format(tests=str(Path(__file__).parent)))
    recipe = write_recipe(tmp_path / "teacher.toml", phase1=phase1, phase2=phase2)
    run_dir = tmp_path / "run"
    args = [str(dataset_root), str(recipe), str(run_dir)]

    first = _run_teacher_process(script, args, slow=1.0)
    deadline = time.monotonic() + 120
    while _backed_up_epoch(run_dir) < phase1 + 1:       # one epoch of phase 2 backed up
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "no phase-2 backup within 120 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    killed_at = _backed_up_epoch(run_dir)
    assert phase1 < killed_at < phase1 + phase2
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "phase2.json").exists()

    second = _run_teacher_process(script, args, slow=0)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    assert "phase 1: done earlier" in output
    assert f"resuming from the backup at epoch {killed_at + 1}" in output
    phase2_record = json.loads((run_dir / "phase2.json").read_text())
    assert phase2_record["resumed_at_epoch"] == killed_at
    assert phase2_record["epochs_this_session"] == phase1 + phase2 - killed_at
    epochs = [int(line.split(",")[0]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(phase1 + phase2))       # continued, no epoch twice, none missing
    assert (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()
    print(output)


# --------------------------------------------------------------------------- the probe


def test_probe_writes_metrics(tmp_path, task):
    from pseudolabel.probe import run_probe

    metrics = run_probe(task, tmp_path / "probe", backbone="tiny_cnn", image_size=32, weights=None, cv=3,
                        verbose=0)
    for name in ("config.json", "provenance.json", "metrics.json", "test_predictions.csv", "features.npz"):
        assert (tmp_path / "probe" / name).is_file(), name
    assert 0.0 <= metrics["roc_auc"] <= 1.0 and len(metrics["roc_auc_ci"]) == 2
    assert metrics["probe"]["fit_on"] == "train" and metrics["probe"]["C"] > 0
    assert metrics["positive_class"] == "modern"
    # Rerun: reported, not refitted; with other settings, refused (naming them) unless restarted.
    again = run_probe(task, tmp_path / "probe", backbone="tiny_cnn", image_size=32, weights=None, cv=3)
    assert again["roc_auc"] == metrics["roc_auc"]
    from pseudolabel.lifecycle import RunChangedError

    with pytest.raises(RunChangedError, match=r"changed: cv: 3 -> 5"):
        run_probe(task, tmp_path / "probe", backbone="tiny_cnn", image_size=32, weights=None)
    assert run_probe(task, tmp_path / "probe", backbone="tiny_cnn", image_size=32, weights=None,
                     restart=True)["probe"]["cv"] == 5


# --------------------------------------------------------------------------- the command line


def test_parse_overrides():
    from pseudolabel.cli.common import parse_overrides

    assert parse_overrides(["train.phase1_epochs=3", "train.phase2_lr=1e-4", "model.backbone=tiny_cnn",
                            "train.tta=\"flip\""]) == {
        "train": {"phase1_epochs": 3, "phase2_lr": 1e-4, "tta": "flip"}, "model": {"backbone": "tiny_cnn"}}


def test_cli_help_lists_teach_and_probe():
    from click.testing import CliRunner

    from pseudolabel.cli import main

    for command in ("teach", "probe"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "--out" in result.output


def test_cli_teach_rejects_unknown_recipe_key(tmp_path, dataset_root):
    from click.testing import CliRunner

    from pseudolabel.cli import main

    recipe = write_recipe(tmp_path / "t.toml")
    result = CliRunner().invoke(main, ["teach", "--recipe", str(recipe), "--root", str(dataset_root),
                                       "--out", str(tmp_path / "run"), "--set", "train.epochz=3"])
    assert result.exit_code == 1
    assert "unknown key 'train.epochz'" in result.output and "Traceback" not in result.output


@pytest.mark.skipif(not hasattr(data, "load_task"), reason="data.load_task not written yet")
def test_cli_teach_and_probe(tmp_path, dataset_root):
    from click.testing import CliRunner

    from pseudolabel.cli import main

    split = tmp_path / "split.csv"
    data.write_split(make_task(dataset_root).split, split)
    common = ["--root", str(dataset_root), "--split", str(split)]
    recipe = write_recipe(tmp_path / "t.toml")
    result = CliRunner().invoke(main, ["teach", "--recipe", str(recipe), *common, "--out", str(tmp_path / "t"),
                                       "--set", "train.phase1_epochs=2", "--set", "train.phase2_epochs=0"])
    assert result.exit_code == 0, result.output
    assert "test ROC AUC" in result.output
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["epochs"]["phase1"] == 2
    result = CliRunner().invoke(main, ["probe", "--backbone", "tiny_cnn", "--image-size", "32", "--weights", "none",
                                       "--cv", "3", *common, "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "metrics.json").exists()


def test_features_of_a_pool_with_an_unreadable_image_come_without_a_keras_warning(tmp_path, dataset_root):
    """A pool's dataset skips unreadable images, so its length is unknown: Keras' predict then
    warns "Your input ran out of data" at its end, library noise in every run with a pool."""
    import warnings

    from pseudolabel.backbones import create_backbone
    from pseudolabel.features import extract_features
    from pseudolabel.pipeline import make_dataset

    paths = sorted((dataset_root / "Labeled").glob("*.jpg"))[:5]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    pool = make_dataset([*paths, tmp_path / "broken.jpg"], image_size=32, batch_size=2, shuffle=False,
                        augment=None, cache=None, repeat=False, on_error="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = extract_features(create_backbone("tiny_cnn", image_size=32, weights=None), pool, verbose=0)
    assert features.shape[0] == 5
    assert not [w for w in caught if "ran out of data" in str(w.message)]


def test_features_print_no_keras_line_in_a_log_file_and_a_progress_bar_on_a_terminal(dataset_root, capfd, monkeypatch):
    """In a log file (stdout not a terminal) a predict call's one Keras line ("3/3 - 0s - 30ms/step")
    names nothing: it is left out; on a terminal the progress bar stays."""
    import sys

    from pseudolabel.backbones import create_backbone
    from pseudolabel.features import extract_features, plain_dataset

    backbone = create_backbone("tiny_cnn", image_size=32, weights=None)
    images = plain_dataset(sorted((dataset_root / "Labeled").glob("*.jpg"))[:6], image_size=32, batch_size=2)
    capfd.readouterr()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert extract_features(backbone, images).shape[0] == 6
    assert "step" not in capfd.readouterr().out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    extract_features(backbone, images)
    assert "3/3" in capfd.readouterr().out
