"""Quiet output: no TensorFlow banners or retracing warnings unless `pseudolabel -v`."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pseudolabel import quiet

REPO = Path(__file__).resolve().parents[1]

BANNERS = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796166855.360816   14384 port.cc:153] oneDNN custom operations are on. You may see ...
I0000 00:00:1796166855.531025   14384 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
"""
OTHER = "E0000 00:00:1796166855.531025   14384 op.cc:1] a real error\nTraceback: something else\n"


def test_without_banners_drops_only_the_banner_lines():
    assert quiet.without_banners(BANNERS) == ""
    assert quiet.without_banners(BANNERS + OTHER) == OTHER
    assert quiet.without_banners("oneDNN is a library\n") == "oneDNN is a library\n"


def test_banners_filtered_writes_back_what_is_not_a_banner(capfd):
    with quiet.banners_filtered():
        os.write(2, BANNERS.encode())
        os.write(2, OTHER.encode())
    assert capfd.readouterr().err == OTHER


def test_retracing_warning_filtered_until_verbose(caplog):
    logger = logging.getLogger("tensorflow")
    message = "5 out of the last 11 calls to <function f> triggered tf.function retracing. Tracing is expensive"
    try:
        quiet.quiet_tensorflow()
        with caplog.at_level(logging.WARNING, logger="tensorflow"):
            logger.warning(message)
            logger.warning("some other warning")
        assert [r.getMessage() for r in caplog.records] == ["some other warning"]
        caplog.clear()
        quiet.verbose_tensorflow()
        with caplog.at_level(logging.WARNING, logger="tensorflow"):
            logger.warning(message)
        assert [r.getMessage() for r in caplog.records] == [message]
    finally:
        quiet.verbose_tensorflow()


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != quiet.LOG_LEVEL_VARIABLE}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "pseudolabel", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("verbose", [False, True])
def test_cli_command_importing_tensorflow_shows_banners_only_with_verbose(verbose):
    result = _cli(*(["-v"] if verbose else []), "models", "check", "tiny_cnn", "--weights", "none")
    assert result.returncode == 0, result.stderr
    assert "one forward pass" in result.stdout  # TensorFlow did run
    banner_lines = [line for line in result.stderr.splitlines() if quiet.is_banner(line)]
    if verbose:
        assert any("oneDNN" in line or "InitializeLog" in line for line in banner_lines), result.stderr
    else:
        assert banner_lines == [], result.stderr
        assert "oneDNN" not in result.stderr and "InitializeLog" not in result.stderr


@pytest.mark.parametrize("user_setting, on", [(None, True), ("0", False)])
def test_the_package_turns_onednn_on_before_tensorflow_unless_the_user_chose_and_prints_no_banner(user_setting, on):
    """TensorFlow leaves oneDNN off on AVX2 CPUs; the package's default turns it on, a user's
    TF_ENABLE_ONEDNN_OPTS=0 keeps it off, and the Python API prints no banner either way (the
    oneDNN banner ignores TF_CPP_MIN_LOG_LEVEL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", quiet.LOG_LEVEL_VARIABLE)}
    env["PYTHONPATH"] = str(REPO)
    if user_setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_setting
    code = ("import pseudolabel, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(on)
    assert not [line for line in result.stderr.splitlines() if quiet.is_banner(line)], result.stderr
