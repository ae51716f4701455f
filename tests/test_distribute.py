"""tf.distribute training (pseudolabel.distribute): strategies, the scaling rule, worker files, and
the same update on two replicas as on one device (MirroredStrategy over two logical CPUs, and a
real two-process MultiWorkerMirroredStrategy on loopback ports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import distributed_helpers as helpers
from pseudolabel import distribute
from pseudolabel.distribute import DistributeError

HELPER = Path(helpers.__file__)
WORKER_TIMEOUT_S = 240  # a hung collective must fail the test, not hang the suite
# Two replicas sum their halves of each global batch in another order than one device does; on
# 3 SGD steps that moves weights by up to ~0.2, the two differ by ~2e-6 (measured).
ATOL = RTOL = 1e-5


def fake_strategy(replicas=1, task_type=None, task_id=0, cluster=None):
    resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                     cluster_spec=lambda: types.SimpleNamespace(as_dict=lambda: cluster or {}))
    return types.SimpleNamespace(num_replicas_in_sync=replicas, cluster_resolver=resolver if task_type else None)


# --------------------------------------------------------------------------- strategies


def test_strategies_are_registered_and_auto_is_one_device_on_a_cpu():
    import tensorflow as tf

    assert list(distribute.STRATEGIES) == ["auto", "one-device", "mirrored", "multi-worker"]
    assert distribute.get_strategy("auto") is tf.distribute.get_strategy()  # no GPU: the default strategy
    one = distribute.get_strategy("one-device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy) and distribute.num_replicas(one) == 1
    assert distribute.resolve_strategy(one) is one and distribute.num_replicas(None) == 1
    with pytest.raises(DistributeError, match="unknown strategy 'ring'.*auto, one-device, mirrored, multi-worker"):
        distribute.get_strategy("ring")


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "non-empty \"worker\" list"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}}', "needs a \"task\""),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "index must be 0..1"),
])
def test_multi_worker_explains_a_missing_or_malformed_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(DistributeError, match=message):
        distribute.get_strategy("multi-worker")  # fails before TensorFlow tries to connect


def test_cli_strategy_choice_and_a_missing_tf_config_fail_cleanly(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pseudolabel.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    recipe = tmp_path / "r.toml"
    recipe.write_text("")
    result = CliRunner().invoke(main, ["teach", "--recipe", str(recipe), "--root", str(tmp_path), "--out",
                                       str(tmp_path / "t"), "--strategy", "multi-worker"])
    assert result.exit_code == 1 and "TF_CONFIG" in result.output and "Traceback" not in result.output
    help_text = CliRunner().invoke(main, ["student", "--help"]).output
    assert "--strategy" in help_text and "per replica" in help_text


# --------------------------------------------------------------------------- scaling rule


def test_batch_is_per_replica_and_learning_rates_scale_linearly():
    four = fake_strategy(replicas=4)
    assert distribute.global_batch_size(8, four) == 32
    assert distribute.scaled_learning_rate(1e-3, four) == pytest.approx(4e-3)
    assert distribute.scaled_learning_rate(1e-3, four, scale=False) == pytest.approx(1e-3)
    train = {"batch_size": 16, "phase1_lr": 1e-3, "phase2_lr": 1e-5, "scale_lr": True, "seed": 3}
    scaled = distribute.scaled_train_config(train, four, ("phase1_lr", "phase2_lr"))
    assert scaled == {**train, "batch_size": 64, "phase1_lr": pytest.approx(4e-3), "phase2_lr": pytest.approx(4e-5)}
    assert distribute.scaled_train_config({**train, "scale_lr": False}, four, ("phase1_lr",))["phase1_lr"] == 1e-3
    assert distribute.scaled_train_config(train, fake_strategy(1), ("phase1_lr",)) == {**train}


def test_student_batches_are_per_replica():
    from pseudolabel.students import batch_plan

    plan = batch_plan(n_labeled=30, n_pseudo=100, batch_size=8, ratio=3.0, replicas=2)
    # Each replica gets 8 labeled + 24 pseudo-labeled images, as one device would with replicas=1.
    assert (plan["labeled_batch"], plan["unlabeled_batch"], plan["replicas"]) == (16, 48, 2)
    assert plan["steps_per_epoch"] == max(-(-30 // 16), -(-100 // 48)) == 3


def test_recipes_default_to_scaled_rates_and_automatic_precision():
    from pseudolabel.config import StudentRecipe, TeacherRecipe

    for defaults in (TeacherRecipe(), StudentRecipe()):
        assert defaults.train.scale_lr is True and defaults.train.mixed_precision == "auto"


# --------------------------------------------------------------------------- mixed precision


def test_mixed_precision_is_off_on_a_cpu_and_the_output_stays_float32():
    import keras

    from pseudolabel.training import build_model

    assert distribute.mixed_precision_policy("auto") == "float32"  # no GPU here
    assert distribute.mixed_precision_policy("mixed_float16") == "mixed_float16"
    with pytest.raises(DistributeError, match="mixed_precision"):
        distribute.mixed_precision_policy("fp16")
    model = build_model(helpers.recipe(mixed_precision="mixed_float16"), 2)
    assert keras.config.dtype_policy().name == "float32"  # the global policy comes back
    assert model.get_layer("backbone").dtype_policy.name == "mixed_float16"
    probs = model(np.zeros((2, helpers.SIZE, helpers.SIZE, 3), np.float32))
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"  # the head's output layer stays float32


# --------------------------------------------------------------------------- multi-worker files


def test_only_the_chief_writes_the_run_directory_given(tmp_path):
    cluster = {"worker": ["a:1", "b:2"]}
    assert distribute.is_chief(None) and distribute.worker_dir(tmp_path, None) == tmp_path
    assert distribute.worker_dir(tmp_path, fake_strategy(2, "worker", 0, cluster)) == tmp_path
    assert distribute.worker_dir(tmp_path, fake_strategy(2, "worker", 1, cluster)) == tmp_path / "worker-1"
    with_chief = {"chief": ["c:0"], **cluster}
    assert distribute.worker_dir(tmp_path, fake_strategy(3, "worker", 0, with_chief)) == tmp_path / "worker-0"
    assert distribute.is_chief(fake_strategy(3, "chief", 0, with_chief))


# --------------------------------------------------------------------------- same update on two replicas


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The single-device run (this process) and the initial weights every other run starts from."""
    import tensorflow as tf

    init, results = helpers.train_tiny(tf.distribute.get_strategy())
    path = tmp_path_factory.mktemp("distribute") / "init.npz"
    helpers.save(path, init)
    return path, init, results


def run_workers(commands: list[list[str]], envs: list[dict]) -> None:
    """Run the processes side by side; all must succeed within WORKER_TIMEOUT_S (then they are killed)."""
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, env in zip(commands, envs)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=WORKER_TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"distributed workers did not finish within {WORKER_TIMEOUT_S} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]


def worker_env(tf_config: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def helper_command(strategy: str, *args) -> list[str]:
    return [sys.executable, str(HELPER), "--strategy", strategy, *map(str, args)]


def worker_configs(n: int) -> list[dict]:
    """TF_CONFIG of `n` workers on free loopback ports."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in helpers.free_ports(n)]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(n)]


def assert_same_training(out: Path, one_device) -> None:
    _, init, expected = one_device
    got = helpers.load(out)
    assert int(got["replicas"][0]) == 2
    for name in ("teacher", "student", "features"):
        for e, g in zip(expected[name], got[name], strict=True):
            np.testing.assert_allclose(g, e, atol=ATOL, rtol=RTOL, err_msg=name)
    # The runs did train: the weights moved far more than the tolerance.
    moved = max(float(np.abs(e - i).max()) for e, i in zip(expected["student"], init["student"]))
    assert moved > 1000 * ATOL


def test_mirrored_on_two_cpus_updates_as_one_device_and_runs_an_experiment(one_device, tmp_path):
    init, _, _ = one_device
    out = tmp_path / "mirrored.npz"
    run_workers([helper_command("mirrored", "--logical-cpus", 2, "--init", init, "--out", out,
                                "--experiment", tmp_path / "demo")], [worker_env()])
    assert_same_training(out, one_device)
    # The whole experiment trained its teacher and student on two replicas, per-replica batches.
    runs = tmp_path / "demo" / "runs"
    # The demo's recipes: teacher batch 8, student batch 16 per replica.
    for name, global_batch in (("round0_teacher", 16), ("round1_tiny_cnn", 32)):
        record = json.loads((runs / name / "metrics.json").read_text())["distribute"]
        assert record == {"strategy": "MirroredStrategy", "replicas": 2, "global_batch_size": global_batch,
                          "lr_scale": 2, "dtype_policy": "float32"}
    assert (runs / "report" / "compare.md").exists()


def test_online_algorithms_on_two_cpus_update_and_move_thresholds_as_one_device(tmp_path):
    """FixMatch / FlexMatch / FreeMatch on two replicas: the same weights, thresholds, EMA and
    recorded pseudo-labels as on one device (the thresholds see the all-gathered global batch)."""
    import tensorflow as tf

    init, expected = helpers.train_online(tf.distribute.get_strategy())
    helpers.save(tmp_path / "init.npz", init)
    out = tmp_path / "online.npz"
    run_workers([helper_command("mirrored", "--logical-cpus", 2, "--online-init", tmp_path / "init.npz",
                                "--online-out", out)], [worker_env()])
    got = helpers.load(out)
    assert int(got["replicas"][0]) == 2
    for name, _ in helpers.ONLINE:
        for e, g in zip(expected[name], got[name], strict=True):
            np.testing.assert_allclose(g, e, atol=ATOL, rtol=RTOL, err_msg=name)
        thresholds, labels = expected[name][len(init[name])], expected[name][-1]
        assert (labels >= 0).any(), name          # some pseudo-labels passed (and were recorded)
        if name != "fixmatch":                     # adaptive: moved from where they start
            assert not np.allclose(thresholds, {"flexmatch": 0.0, "freematch": 0.5}[name]), name


def test_two_workers_update_as_one_device(one_device, tmp_path):
    init, _, _ = one_device
    outs = [tmp_path / f"worker{i}.npz" for i in range(2)]
    run_workers([helper_command("multi-worker", "--init", init, "--out", out) for out in outs],
                [worker_env(config) for config in worker_configs(2)])
    for out in outs:  # every worker holds the same, single-device-equal weights
        assert_same_training(out, one_device)


@pytest.mark.slow  # two TensorFlow processes training two models in lockstep: minutes on 2 cores
def test_two_workers_run_an_experiment_and_only_the_chief_writes_its_directories(tmp_path):
    out = tmp_path / "demo"
    helpers.write_tiny_demo(out)  # once: the workers would race writing the same files
    run_workers([helper_command("multi-worker", "--experiment", out)] * 2,
                [worker_env(config) for config in worker_configs(2)])
    runs = out / "runs"
    assert (runs / "report" / "compare.md").exists() and not (runs / "worker-1").exists()
    for name in ("round0_teacher", "round1_tiny_cnn"):
        chief, other = runs / name, runs / name / "worker-1"
        assert json.loads((chief / "metrics.json").read_text())["distribute"]["chief"] is True
        assert json.loads((other / "metrics.json").read_text())["distribute"]["task_index"] == 1
        # Trained in lockstep: both workers hold the same model, so they predict the same.
        assert (chief / "test_predictions.csv").read_text() == (other / "test_predictions.csv").read_text()
