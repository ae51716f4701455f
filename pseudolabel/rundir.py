"""Run directories: atomic artifact writes, manifests, exclusive locks, provenance.

Every number a run reports must be traceable: a run directory holds the resolved config, the
split hash, the seed, package versions and the metrics. Artifacts are written to a temporary file
in the same directory and renamed into place, so an interrupted run never leaves a half-written
file under the final name. A file can still be damaged afterwards (a full disk, a copy cut short,
an edit): a finished output lists the sha256 and size of each artifact in a manifest, written
last, and counts as finished only while `verify_manifest` finds nothing wrong.

One process at a time per run directory or output file: `RunLock` (an `fcntl.flock` on a lock
file holding the owner's pid) refuses a second one at once. A process killed with SIGKILL leaves
the hidden temporary files of `atomic_path`; `clean_stale_temporaries` removes them, and is safe
only while holding the lock (otherwise it could delete another process's file being written).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)

_PACKAGES = (
    "pseudolabel", "tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn",
    "albumentations", "Pillow", "ImageHash",
)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, else removed.

    Use for writers that want a file name (Keras `model.save`, matplotlib `savefig`, csv writers).
    The temporary name keeps the suffix, since some writers choose the format by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # a full disk fails in write(), which names no file
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Exact bytes, no newline translation (a split's hash is over these bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


class RunDirError(Exception):
    """A run directory or output that cannot be used as asked (the CLI shows it as one line)."""


class DamagedFileError(RunDirError, ValueError):
    """An artifact that exists but is truncated, garbage or not what its manifest records."""


class LockedError(RunDirError):
    """Another process holds the run directory or output."""


def read_json(path: str | Path) -> Any:
    """The JSON content of `path`; a truncated or garbage file is a one-line DamagedFileError."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedFileError(f"{path}: damaged (not UTF-8 text, so not JSON); delete or restore it") from None
    except json.JSONDecodeError as e:
        where = "empty" if not e.doc.strip() else f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        raise DamagedFileError(f"{path}: damaged ({where}; truncated?); delete or restore it") from None


# --------------------------------------------------------------------------- manifests

MANIFEST = "manifest.json"
_MANIFEST_FORMAT = 1


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(directory: str | Path, names, *, manifest: str = MANIFEST, meta: dict | None = None) -> Path:
    """Record the sha256 and size of each of `names` (files in `directory`) in `directory/manifest`.

    Call it last, when every artifact is written: the manifest is written atomically, so its
    presence means the output finished. `meta` (JSON-ready) is stored as is, for the caller's
    own checks (e.g. the config the run was made with). A missing artifact is FileNotFoundError.
    """
    directory = Path(directory)
    files = {}
    for name in names:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: cannot record in {manifest}: no such file")
        files[str(name)] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    record = {"format": _MANIFEST_FORMAT, "files": files, "meta": meta or {},
              "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return atomic_write_json(directory / manifest, record)


def read_manifest(directory: str | Path, *, manifest: str = MANIFEST) -> dict:
    """The manifest's record ({"files": {name: {"size", "sha256"}}, "meta": ...}); DamagedFileError
    when it is unreadable or not a manifest, FileNotFoundError when there is none."""
    path = Path(directory) / manifest
    record = read_json(path)
    files = record.get("files") if isinstance(record, dict) else None
    if (not isinstance(files, dict) or record.get("format") != _MANIFEST_FORMAT
            or not all(isinstance(v, dict) and {"size", "sha256"} <= set(v) for v in files.values())):
        raise DamagedFileError(f"{path}: damaged (not a manifest of format {_MANIFEST_FORMAT}); delete or restore it")
    return record


def verify_manifest(directory: str | Path, *, manifest: str = MANIFEST) -> list[str]:
    """One line per problem of the output in `directory` (empty: every listed artifact verifies).

    Problems: no manifest (the output never finished), a manifest that cannot be read, and per
    listed file: missing, another size, another sha256 (size first: cheap, and a cut file is shorter).
    """
    directory = Path(directory)
    try:
        record = read_manifest(directory, manifest=manifest)
    except FileNotFoundError:
        return [f"{directory / manifest}: missing (the output did not finish)"]
    except DamagedFileError as e:
        return [str(e)]
    problems = []
    for name, expected in record["files"].items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing (listed in {manifest})")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{path}: damaged: {path.stat().st_size} bytes, {manifest} records {expected['size']} "
                            "(truncated or changed)")
        elif file_sha256(path) != expected["sha256"]:
            problems.append(f"{path}: damaged: its sha256 differs from the one {manifest} records (changed)")
    return problems


def require_manifest(directory: str | Path, *, manifest: str = MANIFEST) -> dict:
    """The manifest's record when everything verifies, else DamagedFileError with the first problem."""
    problems = verify_manifest(directory, manifest=manifest)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise DamagedFileError(problems[0] + more)
    return read_manifest(directory, manifest=manifest)


# --------------------------------------------------------------------------- locks


class RunLock:
    """An exclusive lock on a run directory or output file, held by one process at a time.

    `RunLock.for_directory(d)` locks `d/.lock` (making `d`), `RunLock.for_file(f)` locks
    `.<name>.lock` beside `f`; `RunLock(lock_file)` locks that file. Another process is refused at
    once with a LockedError naming the path and the holder's pid, which the holder writes into the
    lock file. Within the holding process the lock is re-entrant (a command that locks its output
    can call a function that locks it too). The kernel releases the lock when the holder exits,
    however it ends (even SIGKILL), so a stale lock file never blocks anybody.
    """

    _held: dict[str, list] = {}  # lock file (real path) -> [descriptor, depth], this process's locks

    def __init__(self, lock_file: str | Path, *, target: str | Path | None = None):
        self.path = Path(lock_file)
        self.target = Path(target) if target is not None else self.path
        self._key: str | None = None

    @classmethod
    def for_directory(cls, directory: str | Path) -> "RunLock":
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / ".lock", target=directory)

    @classmethod
    def for_file(cls, path: str | Path) -> "RunLock":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.with_name(f".{path.name}.lock"), target=path)

    @property
    def held(self) -> bool:
        return self._key is not None

    def acquire(self) -> "RunLock":
        if self._key is not None:
            raise RuntimeError(f"{self.target}: this RunLock is already acquired")
        key = os.path.realpath(self.path)
        if key in self._held:
            self._held[key][1] += 1
        else:
            self._held[key] = [_lock_file(self.path, self.target), 1]
        self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        entry = self._held[self._key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self._key]
            os.close(entry[0])  # closing the descriptor drops the flock
        self._key = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_file(lock_file: Path, target: Path) -> int:
    """A descriptor of `lock_file` holding its flock, with this process's pid written in."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise LockedError(f"{target}: in use by another process ({_holder(lock_file)}); "
                          "wait for it to finish or stop it") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {platform.node()}\n".encode())
    return fd


def _holder(lock_file: Path) -> str:
    try:
        pid, _, host = lock_file.read_text().strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid.isdigit():
        return "pid unknown"  # the holder has locked but not yet written its pid
    return f"pid {pid}" + (f" on {host}" if host and host != platform.node() else "")


# --------------------------------------------------------------------------- stale temporaries

# atomic_path: .<stem>.<mkstemp random>.tmp<suffix>; training.save_weights:
# .<name>.<random>.tmp.weights.h5; copies renamed into place: .<name>.tmp
_ANY_TEMPORARY = re.compile(r"\..+\.tmp(\.[^/]*)?")


def _temporary_patterns(name: str) -> list[re.Pattern]:
    path = Path(name)
    stem, suffix, full = re.escape(path.stem), re.escape(path.suffix), re.escape(path.name)
    return [re.compile(rf"\.{stem}\.[A-Za-z0-9_]+\.tmp{suffix}"),
            re.compile(rf"\.{full}\.[A-Za-z0-9_]+\.tmp\.weights\.h5"),
            re.compile(rf"\.{full}\.tmp")]


def clean_stale_temporaries(directory: str | Path, names=None) -> list[Path]:
    """Remove the hidden temporary files an interrupted (SIGKILLed) writer left in `directory`.

    `names`: only the temporaries of these artifacts (for an output file sharing its folder with
    others); default every temporary file of the folder (for a run directory). Not recursive.
    Safe only while holding the lock of that directory or output: another process's temporary
    file may be in the middle of being written. Returns the removed paths.
    """
    directory = Path(directory)
    patterns = [_ANY_TEMPORARY] if names is None else [p for n in names for p in _temporary_patterns(str(n))]
    removed = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.is_symlink() and any(p.fullmatch(path.name) for p in patterns):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# Environment settings that change TensorFlow's numerics or speed, recorded beside the versions.
RECORDED_ENVIRONMENT = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                        "TF_DETERMINISTIC_OPS", "CUDA_VISIBLE_DEVICES")


def recorded_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in RECORDED_ENVIRONMENT if name in os.environ}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class RunDir:
    """A run's directory. `RunDir.create` records provenance once; reopening keeps it (resume).

    Layout: config.json (resolved config), provenance.json (split hash, seed, versions, command,
    start time), metrics.json, plus whatever the run writes (history.csv, model.keras, ...).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path, config: dict, *, seed: int, split_hash: str | None,
               data: dict | None = None) -> "RunDir":
        """Make (or reopen) the directory; provenance.json once: split hash, seed, versions, command,
        and `data` (where the run's images are: root, labels CSV, split, classes)."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        if run.exists("provenance.json"):
            old = read_json(run.file("provenance.json"))
            if old.get("split_hash") != split_hash:
                raise ValueError(
                    f"{run.path}: this run directory was made with split {old.get('split_hash')}, "
                    f"not {split_hash}; use a new run directory"
                )
        else:
            atomic_write_json(run.file("provenance.json"), {
                "split_hash": split_hash,
                "seed": seed,
                "data": data,
                "versions": package_versions(),
                "environment": recorded_environment(),
                "command": sys.argv,
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "host": platform.node(),
                "machine": platform.machine(),
            })
        atomic_write_json(run.file("config.json"), config)
        return run

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return self.file(name).exists()

    @property
    def provenance(self) -> dict:
        return read_json(self.file("provenance.json"))

    @property
    def config(self) -> dict:
        return read_json(self.file("config.json"))

    def write_metrics(self, metrics: dict, name: str = "metrics.json") -> Path:
        return atomic_write_json(self.file(name), metrics)

    # The lifecycle of a run directory, for trainers: lock it, clean what a killed run left, write
    # the artifacts, then `finish`; a later session trusts it only when `problems()` is empty.

    def lock(self) -> RunLock:
        """The directory's exclusive lock (use as a context manager)."""
        return RunLock.for_directory(self.path)

    def clean_stale_temporaries(self) -> list[Path]:
        """Remove what a killed session left; call it holding `lock()`."""
        return clean_stale_temporaries(self.path)

    def finish(self, names, meta: dict | None = None) -> Path:
        """Write the manifest of the finished artifacts `names` (last)."""
        return write_manifest(self.path, names, meta=meta)

    def problems(self) -> list[str]:
        """Why the run cannot count as finished (empty: its manifest verifies)."""
        return verify_manifest(self.path)
