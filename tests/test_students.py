"""Noisy Student: the train step (losses, weights, batch ratio) and train_student end to end."""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pseudolabel.backbones import create_model
from pseudolabel.config import PseudoConfig, StudentRecipe
from pseudolabel.noisy_student import NoisyStudent
from pseudolabel.students import batch_plan, pseudo_cache

SIZE = 16


def tiny(seed=0, dropout=0.0, drop_connect_rate=0.0):
    keras.utils.set_random_seed(seed)
    return create_model("tiny_cnn", 2, image_size=SIZE, weights=None, dropout=dropout,
                        drop_connect_rate=drop_connect_rate)


def toy_batches(n, seed):
    """Images whose class is their brightness; one-hot targets."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 120, (n, SIZE, SIZE, 3)) + 120 * y[:, None, None, None]
    return x.astype(np.float32), np.eye(2, dtype=np.float32)[y]


def step(model, labeled, unlabeled):
    """One train_step outside fit (the optimizer builds itself on first use)."""
    return {k: float(v) for k, v in model.train_step((labeled, unlabeled)).items()}


# --------------------------------------------------------------------------- the train step


def test_loss_decreases_and_all_losses_are_reported():
    x_l, y_l = toy_batches(64, 0)
    x_u, y_u = toy_batches(128, 1)
    model = NoisyStudent(tiny(), unlabeled_weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices((x_l, y_l)).batch(16),
                                tf.data.Dataset.from_tensor_slices((x_u, 0.9 * y_u + 0.05)).batch(32))).repeat()
    history = model.fit(data, steps_per_epoch=4, epochs=6, verbose=0, shuffle=False).history
    assert {"loss", "labeled_loss", "unlabeled_loss", "accuracy"} <= set(history)
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["labeled_loss"][-1] < history["labeled_loss"][0]
    assert history["unlabeled_loss"][-1] < history["unlabeled_loss"][0]
    # loss = labeled + 1.0 * unlabeled (epoch means of the per-step values)
    np.testing.assert_allclose(history["loss"], np.add(history["labeled_loss"], history["unlabeled_loss"]), rtol=1e-4)


def test_unlabeled_weight_zero_ignores_the_pseudo_batch():
    """With weight 0 the update does not depend on the pseudo-labeled batch at all."""
    x_l, y_l = toy_batches(8, 0)
    batches = [toy_batches(8, seed) for seed in (1, 2)]
    updated = []
    for weight in (0.0, 0.0, 0.5, 0.5):
        x_u, y_u = batches[len(updated) % 2]
        model = NoisyStudent(tiny(seed=3), unlabeled_weight=weight)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        logs = step(model, (x_l, y_l), (x_u, y_u))
        if weight == 0:
            assert logs["unlabeled_loss"] == 0.0 and logs["loss"] == pytest.approx(logs["labeled_loss"])
        updated.append([w.numpy() for w in model.student.trainable_weights])
    same = all(np.array_equal(a, b) for a, b in zip(updated[0], updated[1]))
    differs = any(not np.allclose(a, b) for a, b in zip(updated[2], updated[3]))
    assert same, "weight 0: different pseudo batches gave different updates"
    assert differs, "weight 0.5: the pseudo batch should matter"


def test_class_weights_weight_the_labeled_loss():
    x_l, y_l = toy_batches(8, 0)
    x_u, y_u = toy_batches(8, 1)
    student = tiny(seed=4)
    weights = np.array([1.0, 3.0], np.float32)
    model = NoisyStudent(student, unlabeled_weight=0.0, class_weight=weights)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = step(model, (x_l, y_l), (x_u, y_u))
    probs = student(x_l, training=True).numpy()  # no dropout: same as inside the step
    ce = -np.sum(y_l * np.log(np.clip(probs, 1e-7, 1)), axis=1)
    assert logs["labeled_loss"] == pytest.approx(float(np.mean(ce * (y_l @ weights))), rel=1e-4)


def test_pseudo_batch_is_ratio_times_the_labeled_batch(monkeypatch):
    plan = batch_plan(n_labeled=30, n_pseudo=100, batch_size=8, ratio=3.0)
    assert plan["unlabeled_batch"] == 24
    assert plan["steps_per_epoch"] == max(-(-30 // 8), -(-100 // 24)) == 5
    assert batch_plan(100, 10, 8, 0.5)["unlabeled_batch"] == 4
    assert batch_plan(100, 10, 8, 0.5)["steps_per_epoch"] == 13  # the labeled set is the larger
    assert batch_plan(100, 10, 8, 0.5, steps=3)["steps_per_epoch"] == 3  # train.steps_per_epoch: a fixed budget
    assert batch_plan(5, 5, 2, 0.1)["unlabeled_batch"] == 1
    # Inside the step: the concatenated forward pass holds b + round(ratio * b) images.
    seen = []
    student = tiny()
    model = NoisyStudent(student)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    real_call = student.call

    def spy(inputs, *args, **kwargs):
        seen.append(int(inputs.shape[0]))
        return real_call(inputs, *args, **kwargs)

    monkeypatch.setattr(student, "call", spy)
    x_l, y_l = toy_batches(8, 0)
    x_u, y_u = toy_batches(24, 1)
    step(model, (x_l, y_l), (x_u, y_u))
    assert seen == [32]


def test_pseudo_cache_memory_or_disk(tmp_path):
    assert pseudo_cache(100, 32, budget_mb=1, run_dir=tmp_path) == "memory"  # 0.3 MB
    assert pseudo_cache(10_000, 224, budget_mb=1024, run_dir=tmp_path) == tmp_path / "cache" / "pseudo"


def test_wrapper_saves_and_reloads():
    x, _ = toy_batches(4, 0)
    model = NoisyStudent(tiny(), unlabeled_weight=2.0, class_weight=[1.0, 2.0])
    restored = NoisyStudent.from_config(json.loads(json.dumps(model.get_config())))
    assert restored.unlabeled_weight == 2.0 and restored.class_weight == [1.0, 2.0]
    np.testing.assert_allclose(model(x), model.student(x, training=False))


# --------------------------------------------------------------------------- train_student


def make_task(root):
    from pseudolabel.data import ClassMap, Task, make_split, read_labels_csv

    class_map = ClassMap(["M", "O"], {"M": "M", "O": "O"}, positive="M")
    labeled = read_labels_csv(root / "labels.csv", class_map=class_map)
    split = make_split(labeled, class_map, test_size=0.25, val_size=0.2, seed=0, hash_distance=None)
    return Task(root, class_map, split, labeled)


def student_recipe(**train):
    return StudentRecipe.model_validate({
        "model": {"backbone": "tiny_cnn", "image_size": SIZE, "weights": "none", "dropout": 0.2},
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "patience": 5, "unlabeled_ratio": 2.0, **train},
        "noise": {"randaugment_magnitude": 5},
    })


ALL_ROWS = PseudoConfig(threshold=0.0)


@pytest.fixture
def labeled_run(synthetic_root, tmp_path):
    """A task, a teacher model file and its pseudo-label table over root/Pool."""
    from pseudolabel.data import scan_pool
    from pseudolabel.pseudolabels import label_pools
    from pseudolabel.training import save_model

    task = make_task(synthetic_root)
    teacher = tiny(seed=1)
    teacher_file = save_model(teacher, tmp_path / "teacher" / "model.keras")
    table = label_pools(teacher, [scan_pool(synthetic_root / "Pool")], image_size=SIZE, batch_size=16,
                        class_names=["M", "O"], out_path=tmp_path / "pseudo.csv", progress=False)
    return task, teacher_file, tmp_path / "pseudo.csv", table


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_student_end_to_end(labeled_run, tmp_path):
    from pseudolabel.students import train_student

    task, teacher_file, table_path, table = labeled_run
    teacher_hash = sha(teacher_file)
    run_dir = tmp_path / "student"
    metrics = train_student(student_recipe(), task, table_path, run_dir, pseudo=ALL_ROWS, verbose=0)

    assert sha(teacher_file) == teacher_hash  # the teacher is never touched
    for name in ("config.json", "provenance.json", "metrics.json", "model.keras", "history.csv",
                 "test_predictions.csv", "val_predictions.csv", "pseudo_labels_report.json",
                 "pseudo_labels_selected.csv", "best.weights.h5"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists()
    assert metrics["kind"] == "student" and 0.0 <= metrics["roc_auc"] <= 1.0
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["split_hash"] == task.split.hash
    config = json.loads((run_dir / "config.json").read_text())
    assert config["pseudo"]["threshold"] == 0.0 and config["train"]["unlabeled_ratio"] == 2.0
    assert config["pseudo_labels"] == {"table_sha256": sha(table_path)}
    assert metrics["pseudo_labels"]["per_pool"] == {"Pool": metrics["n_images"]["pseudo_labeled"]}
    assert metrics["batches"]["unlabeled_batch"] == 16
    report = json.loads((run_dir / "pseudo_labels_report.json").read_text())
    counts = report["selected"]["per_class"]
    assert len(set(counts.values())) == 1  # balanced
    assert report["before"]["n"] == len(table) == 40
    # model.keras is the plain student (a functional classifier), not the wrapper.
    student = keras.models.load_model(run_dir / "model.keras")
    assert not isinstance(student, NoisyStudent) and student.name == "tiny_cnn_classifier"
    assert {"labeled_loss", "unlabeled_loss", "val_loss"} <= set((run_dir / "history.csv").read_text().splitlines()[0].split(","))
    # A second call reports the finished run without training.
    assert train_student(student_recipe(), task, table_path, run_dir, pseudo=ALL_ROWS) == metrics


class Kill(Exception):
    pass


def test_killed_student_resumes_from_its_backup(labeled_run, tmp_path):
    from pseudolabel.students import train_student

    task, _, table_path, _ = labeled_run
    run_dir = tmp_path / "student"
    recipe = student_recipe(epochs=3)

    class KillAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Kill()

    with pytest.raises(Kill):
        train_student(recipe, task, table_path, run_dir, pseudo=ALL_ROWS, verbose=0, callbacks=[KillAfterSecondEpoch()])
    assert (run_dir / "backup").exists() and not (run_dir / "metrics.json").exists()
    assert not (run_dir / "model.keras").exists()

    metrics = train_student(recipe, task, table_path, run_dir, pseudo=ALL_ROWS, verbose=0)
    assert metrics["resumed_at_epoch"] == 2 and metrics["epochs"] == 3
    epochs = [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]
    assert not (run_dir / "backup").exists()


def test_no_pseudo_labels_left_is_a_clear_error(labeled_run, tmp_path):
    from pseudolabel.pseudolabels import PseudoLabelError
    from pseudolabel.students import train_student

    task, _, table_path, _ = labeled_run
    with pytest.raises(PseudoLabelError, match="lower the threshold"):
        train_student(student_recipe(), task, table_path, tmp_path / "s", pseudo=PseudoConfig(threshold=1.0))


# --------------------------------------------------------------------------- the `student` command


STUDENT_TOML = """
[model]
backbone = "tiny_cnn"
image_size = 16
weights = "none"
dropout = 0.2

[train]
batch_size = 8
epochs = 3
lr = 1e-3

[noise]
randaugment_magnitude = 5
"""


def test_cli_student(labeled_run, synthetic_root, tmp_path):
    from click.testing import CliRunner

    from pseudolabel.cli import main

    _, teacher_file, table_path, _ = labeled_run
    recipe = tmp_path / "student.toml"
    recipe.write_text(STUDENT_TOML)
    out = tmp_path / "cli_student"
    result = CliRunner().invoke(main, [
        "student", "--recipe", str(recipe), "--pseudo", str(table_path), "--root", str(synthetic_root),
        "--out", str(out), "--threshold", "0", "--mode", "hard", "--ratio", "2", "--set", "train.epochs=1",
        "--set", "train.pseudo_cache_mb=0",  # force the on-disk cache of decoded pseudo-labeled images
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and config["train"]["unlabeled_ratio"] == 2
    assert config["pseudo"]["mode"] == "hard" and config["pseudo"]["threshold"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unlabeled_weight"] == 2.0 and "test ROC AUC" in result.output
    assert metrics["pseudo_cache"] == str(out / "cache" / "pseudo")
    assert not (out / "cache").exists()  # removed once the run finished


def test_set_trainable_freezes_only_backbone_batchnorm():
    from pseudolabel.students import set_trainable

    model = tiny()
    set_trainable(model, freeze_bn=True)
    backbone, head = model.get_layer("backbone"), model.get_layer("head")
    for layer in backbone.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable != is_bn or not layer.weights, layer.name
    assert head.get_layer("head_bn").trainable
    set_trainable(model, freeze_bn=False)
    assert all(layer.trainable for layer in backbone.layers)


def test_set_trainable_top_blocks_only():
    from pseudolabel.backbones import block_names
    from pseudolabel.config import ConfigError, validate
    from pseudolabel.students import set_trainable

    model = tiny()
    backbone = model.get_layer("backbone")
    top = block_names(backbone)[-1]
    set_trainable(model, freeze_bn=False, unfreeze_blocks=1)
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable and all(name.startswith((top, "top")) for name in trainable)
    assert not any(isinstance(backbone.get_layer(n), keras.layers.BatchNormalization) for n in trainable)
    # 0 blocks is refused when the recipe is read, before any model is built
    with pytest.raises(ConfigError, match="r.toml: train.unfreeze_blocks: should be 'all' or greater than or equal to 1"):
        validate(StudentRecipe, {"train": {"unfreeze_blocks": 0}}, source="r.toml")


def test_cli_student_reports_an_empty_selection_cleanly(labeled_run, synthetic_root, tmp_path):
    from click.testing import CliRunner

    from pseudolabel.cli import main

    _, _, table_path, _ = labeled_run
    recipe = tmp_path / "student.toml"
    recipe.write_text(STUDENT_TOML)
    result = CliRunner().invoke(main, ["student", "--recipe", str(recipe), "--pseudo", str(table_path), "--root",
                                       str(synthetic_root), "--out", str(tmp_path / "s"), "--threshold", "1"])
    assert result.exit_code == 1 and "lower the threshold" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "s").exists()
