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
