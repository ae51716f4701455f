"""Quiet output: keep TensorFlow's start-up banners and harmless retracing warnings out of normal runs.

TensorFlow's C++ library writes its banners ("All log messages before absl::InitializeLog() ...",
"oneDNN custom operations are on ...", the CPU feature lines) straight to file descriptor 2 while
`import tensorflow` runs, before its own log settings apply, so TF_CPP_MIN_LOG_LEVEL cannot hide
them. `quiet_tensorflow()` therefore installs an import hook that runs the first `import
tensorflow` with descriptor 2 captured, then writes back every captured line that is not such a
banner (errors still show). It also drops the `tf.function` retracing warning: it comes from
`evaluation.predict` building one compiled function per call (each evaluation), which
costs one trace per call and nothing more. `import pseudolabel` installs both, so the Python API
is as quiet as the CLI; `verbose_tensorflow()` undoes all of it (`pseudolabel -v`).

Ray (the optional `--engine ray`) prints its own start-up lines, INFO lines of every Ray Data
execution, progress bars and its workers' output; `ray_init_options()` and `quiet_ray()` keep
them out of normal runs too (their logs stay in Ray's session folder), and leave them on under `-v`.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# Whether the user chose TensorFlow's C++ log level; if so, `-v` leaves it as they set it.
_USER_LOG_LEVEL = os.environ.get(LOG_LEVEL_VARIABLE)

BANNER_LINE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|^[IW]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] "  # C++ info/warning lines (glog format); E/F stay
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|^\[\d{4}-\d\d-\d\d [\d:,]+ [IW] \d+ \d+\] "  # Ray's C++ info/warning lines (ray.init)
)
RETRACING_WARNING = "triggered tf.function retracing"


def set_library_defaults() -> None:
    """Environment defaults that must be in place before TensorFlow is first imported."""
    os.environ.setdefault(LOG_LEVEL_VARIABLE, "2")


def is_banner(line: str) -> bool:
    """Whether `line` is one of TensorFlow's start-up banner lines."""
    return bool(BANNER_LINE.search(line))


def without_banners(text: str) -> str:
    """`text` with TensorFlow's banner lines removed, every other line kept as it was."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_banner(line))


@contextlib.contextmanager
def banners_filtered():
    """Capture file descriptor 2 (C++ and Python writes alike) and write it back without banners."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = without_banners(captured.read().decode("utf-8", errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader's `exec_module` inside `banners_filtered()`."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its own loader: only this one execution is wrapped.
        module.__loader__ = module.__spec__.loader = self.loader
        with banners_filtered():
            self.loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders and wraps its loader; used once, then removed."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        _remove_hook()
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


class _DropRetracingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return RETRACING_WARNING not in record.getMessage()


_FINDER = _QuietTensorFlowFinder()
_FILTER = _DropRetracingWarning()


def _remove_hook() -> None:
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def quiet_tensorflow() -> None:
    """Hide TensorFlow's banners at its first import (if still to come) and its retracing warnings."""
    _VERBOSE[0] = False
    set_library_defaults()
    if "tensorflow" not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    logger = logging.getLogger("tensorflow")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


_VERBOSE = [False]


def is_verbose() -> bool:
    """Whether `verbose_tensorflow()` was called (`pseudolabel -v`)."""
    return _VERBOSE[0]


def ray_init_options() -> dict:
    """Keyword arguments for `ray.init` that keep its output quiet unless verbose."""
    import logging

    if is_verbose():
        return {}
    # The C++ core writes warnings (e.g. about actor constructor arguments) straight to stderr.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    return {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}


def quiet_ray() -> None:
    """After `ray.init`: no Ray Data progress bars or execution INFO lines unless verbose."""
    import logging

    if is_verbose():
        return
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def verbose_tensorflow() -> None:
    """Show everything: no hook, no filter, and C++ info logs unless the user set their own level."""
    _VERBOSE[0] = True
    _remove_hook()
    logging.getLogger("tensorflow").removeFilter(_FILTER)
    if _USER_LOG_LEVEL is None:
        os.environ[LOG_LEVEL_VARIABLE] = "0"
