"""Screenshot an HTML file or a URL in headless Chromium (Debian's `chromium` package).

    python scripts/screenshot.py runs/report/visual.html docs/report.png --width 1200 --height 1600
    python scripts/screenshot.py http://127.0.0.1:8000/ docs/serve.png --scale 0.5

`--scale` shrinks the page (Chromium's device scale factor), so a long page fits a small PNG;
`--colors 256` stores it as a palette PNG (a fraction of the size, for docs/).
Exits 2 with one line when chromium is not installed or makes no screenshot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pseudolabel.browser import BrowserError, screenshot  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="an HTML file or an http(s):// URL")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--scale", type=float, default=1.0, help="device scale factor (0.5 = half size)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for chromium")
    parser.add_argument("--colors", type=int, default=None, help="quantize to this many colours (palette PNG)")
    args = parser.parse_args(argv)
    try:
        path = screenshot(args.target, args.out, width=args.width, height=args.height, scale=args.scale,
                          timeout=args.timeout)
    except BrowserError as err:
        print(f"screenshot: {err}", file=sys.stderr)
        return 2
    if args.colors:
        from PIL import Image

        with Image.open(path) as shot:
            small = shot.convert("RGB").quantize(colors=args.colors, dither=Image.Dither.NONE)
        small.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
