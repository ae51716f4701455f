"""The Ray Data labeling engine: the same files as the local engine, byte for byte, on a local Ray.

Ray starts slowly on 2 cores, so one Ray session serves the whole module and the tests are few."""

from __future__ import annotations

import shutil
import sys

import pytest

from pseudolabel.pseudolabels import PseudoLabelError, sidecar, table_files

CLASSES = ["M", "O"]
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def ray_session():
    pytest.importorskip("ray.data")
    from pseudolabel.pseudolabels.ray_engine import connect

    ray = connect(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    import keras

    from pseudolabel.backbones import create_model

    keras.utils.set_random_seed(0)
    model = create_model("tiny_cnn", 2, image_size=IMAGE_SIZE, weights=None, dropout=0.5)
    path = tmp_path_factory.mktemp("teacher") / "model.keras"
    model.save(path)
    return model, path


def pool_with_corrupt_file(root):
    from pseudolabel.data import scan_pool

    (root / "Pool" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return scan_pool(root / "Pool")  # not filtered, so the corrupt file reaches labeling


def files_of(table_path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in table_files(table_path)}


def test_ray_writes_the_local_engines_files_byte_for_byte(ray_session, teacher_file, synthetic_root, tmp_path):
    from pseudolabel.pseudolabels import label_pools

    model, model_file = teacher_file
    pool = pool_with_corrupt_file(synthetic_root)
    out = tmp_path / "pseudo.csv"
    settings = dict(image_size=IMAGE_SIZE, batch_size=16, class_names=CLASSES, out_path=out, progress=False)
    label_pools(model, [pool], **settings)
    local = files_of(out)
    shutil.rmtree(tmp_path / "pseudo.csv", ignore_errors=True)
    table = label_pools(model, [pool], engine="ray", model_file=model_file, **settings)
    assert files_of(out) == local  # the table, its skipped list and its summary
    assert len(table) == 40
    skipped = sidecar(out, "skipped").read_text().splitlines()
    assert len(skipped) == 2 and "corrupt.jpg,Pool,unreadable at decode," in skipped[1]


def test_cli_label_engine_ray_in_shards_equals_the_local_engine(ray_session, teacher_file, synthetic_root,
                                                                  tmp_path):
    from click.testing import CliRunner

    from pseudolabel.cli import main
    from pseudolabel.pseudolabels import part_path

    _, model_file = teacher_file
    pool_with_corrupt_file(synthetic_root)
    common = ["label", "--model", str(model_file), "--root", str(synthetic_root),
              "--pool", str(synthetic_root / "Pool"), "--batch-size", "8", "--shard", "0/2"]
    parts = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine / "pseudo.csv"
        result = CliRunner().invoke(main, [*common, "--out", str(out), "--engine", engine])
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output and "INFO" not in result.output
        parts[engine] = {name: data.replace(str(tmp_path / engine).encode(), b"OUT")
                         for name, data in files_of(part_path(out, 0, 2)).items()}
    assert parts["ray"] == parts["local"]
    # The pool scan already finds corrupt.jpg unreadable: listed, not a failed job.
    assert b"corrupt.jpg,Pool,unreadable at scan" in parts["ray"]["pseudo.part-000-of-002.skipped.csv"]


def test_local_ray_workers_run_at_the_drivers_niceness(ray_session):
    """Not Ray's default 15: on a shared machine labeling on Ray would lose to anything else."""
    import os

    @ray_session.remote
    def niceness():
        return os.nice(0)

    assert ray_session.get(niceness.remote()) == os.nice(0)


def test_engine_ray_without_ray_is_one_line(monkeypatch, teacher_file, synthetic_root, tmp_path):
    from click.testing import CliRunner

    from pseudolabel.cli import main
    from pseudolabel.pseudolabels import label_pools
    from pseudolabel.pseudolabels.ray_engine import RAY_MISSING

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    from pseudolabel.data import scan_pool

    with pytest.raises(PseudoLabelError, match="needs Ray"):
        label_pools(teacher_file[0], [scan_pool(synthetic_root / "Pool")], image_size=IMAGE_SIZE,
                    class_names=CLASSES, out_path=tmp_path / "t.csv", engine="ray", progress=False)
    result = CliRunner().invoke(main, ["label", "--model", str(teacher_file[1]), "--root", str(synthetic_root),
                                       "--pool", str(synthetic_root / "Pool"), "--out", str(tmp_path / "c.csv"),
                                       "--engine", "ray"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [f"Error: {RAY_MISSING}"]


# --------------------------------------------------------------------------- training on Ray Train


def test_two_ray_train_workers_update_as_one_device(ray_session, tmp_path):
    """Ray Train's TensorflowTrainer sets TF_CONFIG; the multi-worker path then trains as one device."""
    import numpy as np
    import ray.cloudpickle
    import tensorflow as tf

    import distributed_helpers as helpers
    from pseudolabel.ray_train import run_on_ray_train
    from test_distribute import assert_same_training

    ray.cloudpickle.register_pickle_by_value(helpers)  # the workers cannot import the tests' helpers
    init, results = helpers.train_tiny(tf.distribute.get_strategy())
    helpers.save(tmp_path / "init.npz", init)
    run_on_ray_train(helpers.ray_train_tiny, {"init": str(tmp_path / "init.npz"), "out": str(tmp_path)},
                     workers=2, storage=tmp_path / "ray_train")
    for rank in range(2):  # every worker holds the same, single-device-equal weights
        assert_same_training(tmp_path / f"worker-{rank}.npz", (tmp_path / "init.npz", init, results))
    assert np.load(tmp_path / "worker-0.npz")["replicas/0"] == 2


@pytest.mark.slow  # two TensorFlow workers training the demo's teacher and student in lockstep: minutes
def test_cli_run_on_ray_train_workers_writes_the_chiefs_directories(ray_session, tmp_path):
    from click.testing import CliRunner

    import distributed_helpers as helpers
    from pseudolabel.cli import main

    out = tmp_path / "demo"
    helpers.write_tiny_demo(out)
    result = CliRunner().invoke(main, ["run", str(out / "experiment.toml"), "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    runs = out / "runs"
    assert (runs / "report" / "compare.md").exists() and "round1_tiny_cnn" in result.output
    for name in ("round0_teacher", "round1_tiny_cnn"):
        record = __import__("json").loads((runs / name / "metrics.json").read_text())["distribute"]
        assert record["chief"] is True and record["replicas"] == 2
        assert (runs / name / "worker-1" / "metrics.json").exists()


def test_workers_need_the_ray_engine(tmp_path):
    from click.testing import CliRunner

    import distributed_helpers as helpers
    from pseudolabel.cli import main

    helpers.write_tiny_demo(tmp_path)
    result = CliRunner().invoke(main, ["run", str(tmp_path / "experiment.toml"), "--workers", "2"])
    assert result.exit_code == 2 and "--workers needs --engine ray" in result.output


class _FakeRay:
    """Just what `ray_for_one_labeling` asks of Ray: whether it is up, init, shutdown."""

    def __init__(self, up: bool):
        self.up, self.calls = up, []

    def is_initialized(self):
        return self.up

    def init(self, **options):
        self.up = True
        self.calls.append("init")

    def shutdown(self):
        self.up = False
        self.calls.append("shutdown")


@pytest.mark.parametrize("up_before", [False, True])
def test_one_labeling_shuts_down_only_the_ray_it_started(monkeypatch, up_before):
    """An idle local Ray slows the training that follows on a small machine: a labeling that
    started Ray shuts it down; a Ray the caller had up stays up, untouched."""
    from pseudolabel import quiet
    from pseudolabel.pseudolabels import ray_engine

    fake = _FakeRay(up_before)
    monkeypatch.setattr(ray_engine, "require_ray", lambda: fake)
    monkeypatch.setattr(quiet, "quiet_ray", lambda: None)
    with ray_engine.ray_for_one_labeling() as ray:
        assert ray is fake and fake.up
    assert fake.calls == ([] if up_before else ["init", "shutdown"]) and fake.up == up_before
    with pytest.raises(RuntimeError):   # a labeling that fails shuts it down too
        with ray_engine.ray_for_one_labeling():
            raise RuntimeError("a worker died")
    assert fake.up == up_before
