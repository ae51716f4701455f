"""Run directories and atomic artifact writes.

Every number a run reports must be traceable: a run directory holds the resolved config, the
split hash, the seed, package versions and the metrics. Artifacts are written to a temporary file
in the same directory and renamed into place, so an interrupted run never leaves a half-written
file under the final name (a resumed run can trust what it finds).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
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
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


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
    def create(cls, path: str | Path, config: dict, *, seed: int, split_hash: str | None) -> "RunDir":
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
                "versions": package_versions(),
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

    def read_metrics(self, name: str = "metrics.json") -> dict:
        return read_json(self.file(name))
