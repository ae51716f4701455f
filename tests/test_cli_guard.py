"""The CLI's top-level guard and bad inputs that must end in one clear line, never a traceback."""

from __future__ import annotations

import errno
import pickle

import click
import pytest
from click.testing import CliRunner
from PIL import Image

from pseudolabel.cli import main


@pytest.fixture
def log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PSEUDOLABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PSEUDOLABEL_DEBUG", raising=False)
    return tmp_path / "cache" / "logs"


def _run_command(monkeypatch, raise_error, *args):
    """Run a command, registered on the `pseudolabel` group for this test, that raises."""
    @click.command("boom")
    def boom():
        raise_error()

    monkeypatch.setitem(main.commands, "boom", boom)
    return CliRunner().invoke(main, ["boom", *args])


def _one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output and "Aborted!" not in result.output
    return lines[0]


def test_an_unexpected_error_is_one_line_with_a_log_of_the_traceback(monkeypatch, log_dir):
    def bug():
        {}["missing key"]

    result = _run_command(monkeypatch, bug)
    assert result.exit_code == 1
    line = _one_line(result)
    assert line.startswith("Error: unexpected KeyError: 'missing key'")
    [log] = list(log_dir.iterdir())
    assert str(log) in line
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in bug" in text and "KeyError" in text


def test_eof_error_is_not_a_bare_aborted(monkeypatch, log_dir):
    def eof():
        raise EOFError("Ran out of input")

    result = _run_command(monkeypatch, eof)
    assert result.exit_code == 1 and "EOFError: Ran out of input" in _one_line(result)


def test_the_projects_errors_stay_one_line_without_a_log(monkeypatch, log_dir, tmp_path):
    from pseudolabel.config import ConfigError
    from pseudolabel.pseudolabels import PseudoLabelError
    from pseudolabel.rundir import LockedError, read_json

    (tmp_path / "metrics.json").write_text('{"roc_auc": 0.')
    cases = {
        "ConfigError": (lambda: (_ for _ in ()).throw(ConfigError("r.toml: train.tta: 'bogus' is not allowed")),
                        "r.toml: train.tta"),
        "PseudoLabelError": (lambda: (_ for _ in ()).throw(PseudoLabelError("t.csv: line 3 is damaged")), "line 3"),
        "LockedError": (lambda: (_ for _ in ()).throw(LockedError("runs/x: in use (pid 7)")), "pid 7"),
        "damaged json": (lambda: read_json(tmp_path / "metrics.json"), "metrics.json: damaged"),
        "missing file": (lambda: open(tmp_path / "nope.csv"), "nope.csv: No such file or directory"),
    }
    for name, (raise_error, expected) in cases.items():
        result = _run_command(monkeypatch, raise_error)
        assert result.exit_code == 1, name
        assert expected in _one_line(result), name
    assert not log_dir.exists()


def test_a_full_disk_names_the_file_and_says_what_to_do(monkeypatch, log_dir, tmp_path):
    from pseudolabel.rundir import atomic_path

    target = tmp_path / "out" / "table.csv"

    def disk_full():
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises: no file name

    result = _run_command(monkeypatch, disk_full)
    line = _one_line(result)
    assert result.exit_code == 1
    assert f"{target}: No space left on device" in line and "disk is full" in line
    assert list(target.parent.iterdir()) == []  # nothing half-written
    assert not log_dir.exists()


def test_debug_lets_the_traceback_through(monkeypatch, log_dir):
    monkeypatch.setenv("PSEUDOLABEL_DEBUG", "1")
    result = _run_command(monkeypatch, lambda: 1 / 0)
    assert isinstance(result.exception, ZeroDivisionError)


def test_subgroup_commands_are_guarded_too(monkeypatch, log_dir):
    from pseudolabel.cli import data as cli_data

    @click.command("boom")
    def boom():
        raise RuntimeError("inside a subgroup")

    monkeypatch.setitem(cli_data.data.commands, "boom", boom)
    result = CliRunner().invoke(main, ["data", "boom"])
    assert result.exit_code == 1 and "unexpected RuntimeError: inside a subgroup" in _one_line(result)


# --------------------------------------------------------------------------- bad inputs


def _model_file(tmp_path):
    from pseudolabel.backbones import create_model
    from pseudolabel.training import save_model

    return save_model(create_model("tiny_cnn", 2, image_size=32, weights=None), tmp_path / "model.keras")


def test_predict_refuses_batch_size_zero(tmp_path):
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    result = CliRunner().invoke(main, ["predict", str(tmp_path), str(img), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output and "0 is not in the range" in result.output
    assert "Traceback" not in result.output


def test_predict_on_an_empty_folder_is_one_line(tmp_path, log_dir):
    model_file = _model_file(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    result = CliRunner().invoke(main, ["predict", str(model_file), str(empty)])
    assert result.exit_code == 1
    line = _one_line(result)
    assert f"no images in {empty}" in line and ".jpg" in line


def test_predict_images_api_refuses_nothing_to_predict(tmp_path):
    import keras

    from pseudolabel.pseudolabels import PseudoLabelError, predict_images

    model = keras.models.load_model(_model_file(tmp_path))
    with pytest.raises(PseudoLabelError, match="no images"):
        predict_images(model, [], class_names=["a", "b"])


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def _pth_files(tmp_path) -> dict:
    from pseudolabel.backbones.torch_legacy import LEGACY_MAGIC

    files = {}
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f)
        pickle.dump(1001, f)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f)
        pickle.dump(_RunsCommand(f"touch {tmp_path / 'pwned'}"), f)
    files["malicious"] = (evil, "refused global")
    (tmp_path / "empty.pth").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.pth", "empty file")
    (tmp_path / "text.pth").write_text("these are not weights\n" * 20)
    files["text"] = (tmp_path / "text.pth", "not a PyTorch state dict")
    return files


def test_a_refused_or_unreadable_pth_is_one_line(tmp_path, log_dir):
    for what, (path, expected) in _pth_files(tmp_path).items():
        result = CliRunner().invoke(main, ["models", "check", "efficientnet_lite0", "--weights", str(path),
                                           "--image-size", "32"])
        assert result.exit_code == 1, (what, result.output)
        error = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(error) == 1 and str(path) in error[0] and expected in error[0], (what, result.output)
        assert "Traceback" not in result.output and "Aborted!" not in result.output
    assert not (tmp_path / "pwned").exists()
    assert not log_dir.exists()


def test_a_refused_pth_is_a_weights_file_error_in_the_api(tmp_path, monkeypatch):
    from pseudolabel.backbones import create_backbone
    from pseudolabel.backbones.weights import WeightsFileError

    monkeypatch.setenv("PSEUDOLABEL_CACHE", str(tmp_path / "cache"))
    for what, (path, expected) in _pth_files(tmp_path).items():
        with pytest.raises(WeightsFileError) as err:
            create_backbone("efficientnet_lite0", image_size=32, weights=str(path))
        assert str(err.value).startswith(f"{path}: cannot load weights") and expected in str(err.value), what
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("content", ["garbage", "empty hdf5"])
def test_a_corrupt_keras_weight_cache_says_which_file_to_delete(tmp_path, monkeypatch, log_dir, content):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cached = tmp_path / "keras" / "models" / "efficientnetb0_notop.h5"
    cached.parent.mkdir(parents=True)
    if content == "garbage":
        cached.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 200)  # an HDF5 signature, then nothing
    else:
        import h5py

        h5py.File(cached, "w").close()
    result = CliRunner().invoke(main, ["models", "check", "efficientnet_b0", "--image-size", "32"])
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, result.output
    assert str(cached) in error[0] and "delete it" in error[0] and "MD5" in error[0]
    assert "Traceback" not in result.output


def test_data_warnings_are_one_warning_line(monkeypatch, log_dir):
    import warnings

    from pseudolabel.data import DataWarning

    others = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *rest, **kw: others.append(str(message)))

    def warn():
        warnings.simplefilter("always")
        warnings.warn(DataWarning("train: skipped 1 unreadable image(s): train/a/broken.jpg"))
        warnings.warn(UserWarning("a library's own warning"))

    result = _run_command(monkeypatch, warn)
    assert result.exit_code == 0
    assert result.stderr == "warning: train: skipped 1 unreadable image(s): train/a/broken.jpg\n"
    assert others == ["a library's own warning"]          # shown as before (here: by the test's handler)
