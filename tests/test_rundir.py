import json

import os

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
    assert prov["environment"]["TF_ENABLE_ONEDNN_OPTS"] == os.environ["TF_ENABLE_ONEDNN_OPTS"]  # set by the package
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


# --------------------------------------------------------------------------- read_json, manifests

from pseudolabel.rundir import (  # noqa: E402
    DamagedFileError,
    LockedError,
    RunLock,
    clean_stale_temporaries,
    read_json,
    require_manifest,
    verify_manifest,
    write_manifest,
)


@pytest.mark.parametrize("content", [b'{"roc_auc": 0.8, "n": ', b"", b"\x89PNG\x00\xff garbage"])
def test_read_json_of_a_damaged_file_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    with pytest.raises(DamagedFileError) as err:
        read_json(path)
    assert str(path) in str(err.value) and "damaged" in str(err.value)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)  # callers that caught the JSONDecodeError still do


def _finished_output(directory):
    directory.mkdir(exist_ok=True)
    (directory / "model.keras").write_bytes(b"k" * 1000)
    (directory / "metrics.json").write_text('{"roc_auc": 0.8}\n')
    write_manifest(directory, ["model.keras", "metrics.json"], meta={"split_hash": "abc"})
    return directory


def test_manifest_verifies_a_finished_output_and_keeps_meta(tmp_path):
    run = _finished_output(tmp_path / "run")
    assert verify_manifest(run) == []
    record = require_manifest(run)
    assert record["meta"] == {"split_hash": "abc"}
    assert record["files"]["model.keras"]["size"] == 1000


def test_manifest_names_a_missing_truncated_or_changed_artifact(tmp_path):
    run = _finished_output(tmp_path / "run")
    (run / "metrics.json").unlink()
    with open(run / "model.keras", "r+b") as f:
        f.truncate(400)
    problems = verify_manifest(run)
    assert len(problems) == 2
    assert any("model.keras" in p and "400 bytes" in p and "1000" in p for p in problems)
    assert any("metrics.json" in p and "missing" in p for p in problems)
    with pytest.raises(DamagedFileError, match="1 more"):
        require_manifest(run)

    run2 = _finished_output(tmp_path / "run2")
    (run2 / "model.keras").write_bytes(b"x" * 1000)  # same size, other content
    [problem] = verify_manifest(run2)
    assert "model.keras" in problem and "sha256" in problem


def test_manifest_missing_or_damaged_is_a_problem_not_a_crash(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    [problem] = verify_manifest(run)
    assert "manifest.json" in problem and "did not finish" in problem
    _finished_output(run)
    text = (run / "manifest.json").read_text()
    (run / "manifest.json").write_text(text[: len(text) // 2])
    [problem] = verify_manifest(run)
    assert "manifest.json" in problem and "damaged" in problem and "\n" not in problem
    (run / "manifest.json").write_text('{"files": 3}')
    [problem] = verify_manifest(run)
    assert "not a manifest" in problem


def test_manifest_of_one_output_among_several_in_a_folder(tmp_path):
    (tmp_path / "a.csv").write_text("a\n")
    (tmp_path / "b.csv").write_text("b\n")
    write_manifest(tmp_path, ["a.csv"], manifest="a.manifest.json")
    write_manifest(tmp_path, ["b.csv"], manifest="b.manifest.json")
    (tmp_path / "b.csv").write_text("changed\n")
    assert verify_manifest(tmp_path, manifest="a.manifest.json") == []
    assert len(verify_manifest(tmp_path, manifest="b.manifest.json")) == 1
    with pytest.raises(FileNotFoundError, match="c.csv"):
        write_manifest(tmp_path, ["c.csv"])


# --------------------------------------------------------------------------- locks


def _hold_lock(lock_target, is_dir, ready, release):
    lock = RunLock.for_directory(lock_target) if is_dir else RunLock.for_file(lock_target)
    with lock:
        ready.set()
        release.wait(60)


@pytest.mark.parametrize("is_dir", [True, False])
def test_lock_refuses_a_second_process_naming_the_holder_pid(tmp_path, is_dir):
    import multiprocessing

    target = tmp_path / ("run" if is_dir else "pseudo.csv")
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(target, is_dir, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        lock = RunLock.for_directory(target) if is_dir else RunLock.for_file(target)
        with pytest.raises(LockedError) as err:
            lock.acquire()
        message = str(err.value)
        assert f"pid {holder.pid}" in message and str(target) in message and "\n" not in message
        assert not lock.held
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0
    with RunLock.for_directory(target) if is_dir else RunLock.for_file(target) as lock:  # free again
        assert lock.held


def test_lock_is_freed_when_its_holder_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pseudolabel.rundir import RunLock\n"
        f"lock = RunLock.for_directory({str(tmp_path / 'run')!r}).acquire()\n"
        "print('locked', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            RunLock.for_directory(tmp_path / "run").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(60)
    with RunLock.for_directory(tmp_path / "run"):
        pass


def test_lock_is_reentrant_within_its_process_and_released_by_the_outermost(tmp_path):
    import subprocess
    import sys

    def other_process_can_lock():
        code = ("import sys; from pseudolabel.rundir import RunLock, LockedError\n"
                f"try:\n    RunLock.for_file({str(tmp_path / 't.csv')!r}).acquire()\n"
                "except LockedError:\n    sys.exit(3)\n")
        return subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.getcwd()}).returncode == 0

    import os

    outer = RunLock.for_file(tmp_path / "t.csv").acquire()
    with RunLock.for_file(tmp_path / "t.csv") as inner:
        assert inner.held
    assert not other_process_can_lock()  # the outer lock still holds
    outer.release()
    assert other_process_can_lock()


# --------------------------------------------------------------------------- stale temporaries


def _leave_temporary(path, writer):
    """What a SIGKILL in the middle of `writer(tmp)` leaves: the temporary file of atomic_path."""
    class Killed(BaseException):
        pass

    import unittest.mock

    with unittest.mock.patch("pathlib.Path.unlink"):  # the kill: no cleanup runs
        with pytest.raises(Killed):
            with atomic_path(path) as tmp:
                writer(tmp)
                raise Killed


def test_clean_stale_temporaries_removes_what_a_kill_leaves(tmp_path):
    run = tmp_path / "run"
    _finished_output(run)
    _leave_temporary(run / "model.keras", lambda tmp: tmp.write_bytes(b"half"))
    _leave_temporary(run / "history.csv", lambda tmp: tmp.write_text("epoch\n1\n"))
    (run / ".best.weights.h5.ab12cd_x.tmp.weights.h5").write_bytes(b"w")  # training.save_weights
    (run / ".best.weights.h5.tmp").write_bytes(b"w")                       # a copy renamed into place
    (run / ".hidden_user_file").write_text("keep")
    kept_before = {"model.keras", "metrics.json", "manifest.json", ".hidden_user_file"}
    assert len(list(run.iterdir())) == len(kept_before) + 4
    with RunLock.for_directory(run):
        removed = clean_stale_temporaries(run)
    assert len(removed) == 4
    assert {p.name for p in run.iterdir()} == kept_before | {".lock"}
    assert verify_manifest(run) == []


def test_clean_stale_temporaries_of_one_output_spares_its_neighbours(tmp_path):
    _leave_temporary(tmp_path / "a.csv", lambda tmp: tmp.write_text("x"))
    _leave_temporary(tmp_path / "a.skipped.csv", lambda tmp: tmp.write_text("x"))
    _leave_temporary(tmp_path / "b.csv", lambda tmp: tmp.write_text("x"))
    removed = clean_stale_temporaries(tmp_path, names=["a.csv", "a.skipped.csv"])
    assert len(removed) == 2 and all(p.name.startswith((".a.", ".a.skipped.")) for p in removed)
    [left] = list(tmp_path.iterdir())
    assert left.name.startswith(".b.") and left.name.endswith(".tmp.csv")


def test_run_dir_lifecycle_lock_clean_finish_verify(tmp_path):
    run = RunDir.create(tmp_path / "run", {"a": 1}, seed=0, split_hash="abc")
    assert "did not finish" in run.problems()[0]
    with run.lock() as lock:
        assert lock.held
        (run.path / ".model.x1y2z3ab.tmp.keras").write_bytes(b"half")
        assert [p.name for p in run.clean_stale_temporaries()] == [".model.x1y2z3ab.tmp.keras"]
        run.write_metrics({"roc_auc": 0.8})
        run.finish(["config.json", "provenance.json", "metrics.json"], meta={"split_hash": "abc"})
    assert run.problems() == []
    run.write_metrics({"roc_auc": 0.9})  # changed after it finished
    [problem] = run.problems()
    assert "metrics.json" in problem and "damaged" in problem
