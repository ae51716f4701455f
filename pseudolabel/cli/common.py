"""Options shared by the commands that train or evaluate on a labeled task, and the guard that
turns every error a command raises into one line (`GuardedGroup`, used by `pseudolabel.cli.main`)."""

from __future__ import annotations

import errno
import functools
import tomllib
from pathlib import Path

import click


def data_options(func):
    """--experiment / --root / --labels / --split / --classes."""
    options = [
        click.option("--experiment", type=click.Path(exists=True, dir_okay=False),
                     help="Experiment TOML to take the data settings from; the flags below override it."),
        click.option("--root", "--data", "root", type=click.Path(exists=True, file_okay=False),
                     help="Data root: image paths in the labels CSV and split are relative to it."),
        click.option("--labels", type=click.Path(dir_okay=False),
                     help="Labels CSV (image,label). Without --experiment: ROOT/labels.csv if not given."),
        click.option("--split", type=click.Path(dir_okay=False),
                     help="Fixed train/val/test split CSV (from `pseudolabel data split`)."),
        click.option("--classes", default=None,
                     help="Class map: 'house_rooms' (Modern vs not-Modern, N merged into O) or "
                          "'identity' (one class per raw label). Default: the experiment's, else identity."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def data_config(experiment=None, root=None, labels=None, split=None, classes=None):
    """The experiment's `[data]` table (a `config.DataConfig`) with the command-line flags applied;
    relative flag paths are relative to the current directory."""
    from pathlib import Path

    from pseudolabel.config import DataConfig, load_experiment, validate

    values = load_experiment(experiment).data.model_dump(exclude_none=True) if experiment else {}
    if root:
        values["root"] = str(Path(root).resolve())
        if not labels and not experiment:
            values["labels"] = str(Path(root, "labels.csv").resolve())
    for key, value in (("labels", labels), ("split", split)):
        if value:
            values[key] = str(Path(value).resolve())
    if classes:
        values["classes"] = classes
    if not values.get("root") and values.get("layout") != "folders":
        raise click.UsageError("give --root (the data folder) or --experiment")
    return validate(DataConfig, values, source="the command line (--experiment/--root/--labels/--split/--classes)")


def data_warnings_as_lines() -> None:
    """Show the project's DataWarnings (unreadable images skipped, labels joining a split...) as
    one `warning: ...` line on stderr instead of Python's `file:line: DataWarning:` form with a
    source line; every other warning as before. Matched by name: importing `pseudolabel.data`
    here would slow down every command's start."""
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__name__ == "DataWarning" and category.__module__ == "pseudolabel.data.errors":
            click.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def pseudo_config(experiment, flags: dict | None = None):
    """The experiment's `[pseudo]` (or the defaults) with the command-line flags applied, validated."""
    from pseudolabel.config import PseudoConfig, load_experiment, validate

    pseudo = load_experiment(experiment).pseudo if experiment else PseudoConfig()
    return validate(PseudoConfig, {**pseudo.model_dump(), **(flags or {})}, source="the command line")


def overrides_option(example: str):
    """--set KEY=VALUE (repeatable): a recipe value overridden, checked like the file (`parse_overrides`)."""
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help=f"Override a recipe value, e.g. {example} (values are TOML: numbers, true/false, "
                             "\"strings\"; bare words are strings). Repeatable.")


def restart_option(func):
    """--restart: start over a run whose recorded config or split differs (else such a run is refused)."""
    return click.option(
        "--restart", is_flag=True,
        help="Start over any run whose output holds a run of another config or split (without it, "
             "such a run is refused with a line naming the change). Unchanged runs are not redone.",
    )(func)


def engine_options(func):
    """--engine / --address: where pool images are labeled (pseudolabels.label_pools' engines)."""
    func = click.option(
        "--address", default=None, metavar="ADDR",
        help="With --engine ray: the Ray cluster to join (e.g. 10.0.0.1:6379, ray://head:10001 or auto); "
             "default: start a local Ray on this machine.",
    )(func)
    return click.option(
        "--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
        help="local: this machine labels (threads decode, one process predicts). ray: Ray Data (decoding in "
             "Ray tasks, actors each holding the model), on a local Ray or the cluster at --address; the "
             "same table, byte for byte. Needs the `ray` extra (pip install -e \".[ray]\").",
    )(func)


def strategy_option(func):
    """--strategy: the tf.distribute strategy the models train under (pseudolabel.distribute)."""
    from pseudolabel.distribute import STRATEGIES

    choices = "; ".join(f"{name}: {help}" for name, (_, help) in STRATEGIES.items())
    return click.option(
        "--strategy", type=click.Choice(list(STRATEGIES)), default="auto", show_default=True,
        help=f"Where training runs ({choices}). The recipe's train.batch_size is per replica (global batch = "
             "batch_size x replicas) and learning rates are multiplied by the replicas unless "
             "train.scale_lr = false.",
    )(func)


# The project's own errors, by the module that defines them: an error of a class can only have been
# raised if its module was imported, so the guard looks only in those (importing the others, e.g.
# scipy through evaluation, would cost seconds on every config error).
EXPECTED_ERRORS = (
    ("pseudolabel.config.loading", "ConfigError"), ("pseudolabel.data.errors", "DataError"),
    ("pseudolabel.images", "ImageError"), ("pseudolabel.rundir", "RunDirError"),
    ("pseudolabel.evaluation.metrics", "EvaluationError"), ("pseudolabel.report", "ReportError"),
    ("pseudolabel.backbones.weights", "WeightsFileError"), ("pseudolabel.backbones.weights", "WeightsUnavailableError"),
    ("pseudolabel.backbones.torch_legacy", "TorchFormatError"),
    ("pseudolabel.backbones.torch_legacy", "UnsafePickleError"), ("pseudolabel.curve", "CurveError"),
)


def expected_errors() -> tuple[type[BaseException], ...]:
    """The project's own errors: bad input, bad config, a damaged or busy file, unavailable
    weights. Their messages are written for the user: shown as they are, no traceback, no log."""
    import sys

    return tuple(getattr(sys.modules[module], name) for module, name in EXPECTED_ERRORS if module in sys.modules)


def os_error_message(error: OSError) -> str:
    """`<file>: <what the system said>`, with what to do about a full disk."""
    where = error.filename if error.filename is not None else None
    text = f"{where}: {error.strerror}" if where is not None and error.strerror else str(error)
    if error.errno == errno.ENOSPC or "No space left on device" in text:
        text += " (the disk is full: free some space and run the command again; nothing was half-written)"
    return text


def write_error_log(error: BaseException) -> Path | None:
    """The full traceback of `error` (with the command line and versions) in a new log file under
    $PSEUDOLABEL_CACHE/logs (default: the system temp folder); None when no log can be written."""
    import datetime as dt
    import os
    import platform
    import sys
    import tempfile
    import traceback

    from pseudolabel import __version__

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = (f"pseudolabel {__version__}, Python {platform.python_version()}, {stamp}\n"
            f"command: {' '.join(sys.argv)}\n\n" + "".join(traceback.format_exception(error)))
    folders = [Path(os.environ["PSEUDOLABEL_CACHE"]) / "logs"] if os.environ.get("PSEUDOLABEL_CACHE") else []
    folders.append(Path(tempfile.gettempdir()) / "pseudolabel-logs")
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"error-{stamp}-{os.getpid()}.log"
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def one_line_error(error: Exception) -> click.ClickException:
    """What the user sees for an error a command raised: the project's own errors and OSErrors
    (missing file, permission, disk full) as their message; anything else, which is a bug, as one
    line with the path of a log holding the traceback."""
    if isinstance(error, expected_errors()):
        return click.ClickException(str(error))
    if isinstance(error, OSError):
        return click.ClickException(os_error_message(error))
    log = write_error_log(error)
    first = (str(error).strip().splitlines() or [""])[0][:300]
    where = f"the full traceback is in {log}" if log else "no log could be written"
    return click.ClickException(f"unexpected {type(error).__name__}{': ' + first if first else ''} "
                                f"(a bug: {where}; PSEUDOLABEL_DEBUG=1 shows it here)")


class GuardedGroup(click.Group):
    """A click group whose commands (and subgroups' commands) never end in a bare traceback:
    every exception they raise becomes `one_line_error` (exit code 1). click's own exceptions
    (usage errors, --help, exit) pass; PSEUDOLABEL_DEBUG=1 lets everything through unchanged."""

    def invoke(self, ctx):
        import os

        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            # EOFError too: click would print a bare "Aborted!" for it.
            if os.environ.get("PSEUDOLABEL_DEBUG", "").strip() not in ("", "0"):
                raise
            raise one_line_error(error) from None


def fail_cleanly(func):
    """Turn the project's own errors (bad data, bad config, damaged files) into a one-line message,
    exit code 1, for a command used outside the `pseudolabel` group (which guards every command)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (*expected_errors(), OSError) as e:
            raise one_line_error(e) from None

    return wrapper


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 0,1,2` -> [0, 1, 2] (None: not given); distinct whole numbers >= 0, else a usage error."""
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected whole numbers separated by commas, got {text!r}", param_hint="--seeds")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"expected distinct seeds >= 0, got {text!r}", param_hint="--seeds")
    return seeds


def parse_overrides(items) -> dict:
    """`("train.phase1_epochs=3", "model.backbone=tiny_cnn")` -> nested dict for `config.merge`.

    Values are read as TOML (`3`, `1e-4`, `true`, `"x"`, `[1, 2]`); anything that is not valid
    TOML is taken as a bare string, so `model.backbone=tiny_cnn` needs no quotes.
    """
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise click.BadParameter(f"{key}: '{part}' is set to a value and used as a table", param_hint="--set")
        if isinstance(node.get(leaf), dict) and not isinstance(value, dict):
            # the other order of the same clash (`algorithm.threshold=0.9 algorithm=flexmatch`): refused, not lost
            raise click.BadParameter(f"{key}: set to a value and used as a table (set {key}.KEY=VALUE instead)",
                                     param_hint="--set")
        node[leaf] = value
    return out
