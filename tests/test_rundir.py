import json

import pytest

from pseudolabel.rundir import RunDir, atomic_path, atomic_write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_path_keeps_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras"
        tmp.write_text("x")
    assert (tmp_path / "model.keras").read_text() == "x"


def test_run_dir_records_provenance_once_and_refuses_another_split(tmp_path):
    run = RunDir.create(tmp_path / "run", {"a": 1}, seed=3, split_hash="abc")
    prov = run.provenance
    assert prov["seed"] == 3 and prov["split_hash"] == "abc"
    assert "tensorflow-cpu" in prov["versions"] or "tensorflow" in prov["versions"]
    assert run.config == {"a": 1}
    again = RunDir.create(tmp_path / "run", {"a": 2}, seed=3, split_hash="abc")  # resume
    assert again.provenance["started"] == prov["started"]
    with pytest.raises(ValueError, match="made with split abc"):
        RunDir.create(tmp_path / "run", {"a": 1}, seed=3, split_hash="other")


def test_json_handles_numpy(tmp_path):
    import numpy as np

    atomic_write_json(tmp_path / "m.json", {"x": np.float32(0.5), "v": np.arange(3)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"v": [0, 1, 2], "x": 0.5}


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    atomic_write_json(tmp_path / "m.json", {})
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask
