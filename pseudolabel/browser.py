"""Headless Chromium from Python: screenshots and the DOM of a page, for checks and docs.

Uses Debian's `chromium` (or `chromium-browser` / `google-chrome`) on PATH with a throwaway
profile and every background network feature off, so it only loads the page it is given.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-dev-shm-usage")


class BrowserError(RuntimeError):
    """No browser on PATH, or it did not produce what was asked."""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _url(target: str | Path) -> str:
    text = str(target)
    if text.startswith(("http://", "https://", "file://")):
        return text
    return Path(text).resolve().as_uri()


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    browser = find_browser()
    if browser is None:
        raise BrowserError(f"no headless browser found (tried {', '.join(BROWSERS)}); "
                           "install one, e.g. `apt-get install chromium`")
    with tempfile.TemporaryDirectory(prefix="pseudolabel-chromium-") as profile:
        try:
            return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"{browser} did not finish within {timeout:.0f} s") from None


def screenshot(target: str | Path, out: str | Path, *, width: int = 1200, height: int = 1600,
               scale: float = 1.0, timeout: float = 60.0) -> Path:
    """A PNG of `target` (an HTML file or a URL) at `width` x `height` CSS pixels times `scale`."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    done = _run([f"--screenshot={out}", f"--window-size={width},{height}",
                 f"--force-device-scale-factor={scale}", _url(target)], timeout)
    if not out.is_file() or out.stat().st_size == 0:
        raise BrowserError(f"no screenshot written for {target}: {done.stderr.strip()[-300:]}")
    return out


def dump_dom(target: str | Path, *, timeout: float = 60.0) -> str:
    """The page's DOM after its scripts ran, as HTML text."""
    done = _run(["--dump-dom", _url(target)], timeout)
    if done.returncode != 0 or not done.stdout.strip():
        raise BrowserError(f"no DOM from {target}: {done.stderr.strip()[-300:]}")
    return done.stdout
