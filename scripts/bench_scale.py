"""Pseudo-labeling at scale: time should grow linearly with the pool, peak memory stay flat.

    python scripts/bench_scale.py                          # pools of 1k, 5k, 20k images (7-17 min on 2 cores)
    python scripts/bench_scale.py --quick --out /tmp/bench.md
    python scripts/bench_scale.py --sizes 1000 5000 20000 50000 --cache warm

Each pool size is labeled by `pseudolabels.label_pools` (EfficientNet-Lite0 at 224 px, real
ImageNet weights, untrained head, batch 64, no TTA) in a FRESH Python process, so each size has
its own peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss` of that child) and nothing carries over
between sizes. The child times label_pools alone (files on disk -> written table, read back),
after building the model; it also reports its RSS just before labeling, so the growth during
labeling is visible apart from the model's own memory.

The pool: House Rooms has 5,201 real JPEGs, so the pools are made of re-encoded copies (JPEG
quality 90, 224 px like the originals) of the real images, shuffled with a fixed seed so every
pool prefix mixes the rooms: copy k of an image is the image as is, mirrored, flipped or rotated
(then with a slight brightness change from the fifth copy on). Re-encoded, not hard-linked: every
file is different (bytes, inode, sha256), decodes as costly as a real photo, and one file's page
cache cannot serve another's read. By default (`--cache cold`) the pool's files are evicted from
the OS page cache before every run (`posix_fadvise(DONTNEED)` on those files only; nothing else is
touched), so every size reads from disk as a first labeling run would; `--cache warm` reads them
all once before the run instead. The generated files are kept in `--pool-dir` and reused.

Criteria: linear = every size's time within 10% of the least-squares line time = a + b * n;
flat = the largest size's peak RSS within 10% of the smallest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _bench_common as bc

DEFAULT_POOL_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "pseudolabel_bench_scale"
LINEAR_TOLERANCE = 0.10
FLAT_TOLERANCE = 0.10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=bc.DEFAULT_DATA, help="House Rooms folder (the source images)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], help="pool sizes")
    p.add_argument("--pool-dir", type=Path, default=DEFAULT_POOL_DIR,
                   help="where the generated pool images are written (kept and reused)")
    p.add_argument("--cache", choices=("cold", "warm"), default="cold",
                   help="cold: evict the pool's files from the page cache before each run; warm: read them first")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--remove-pool", action="store_true", help="delete the generated images at the end")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)     # internal: label N images
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)  # internal: child's JSON
    bc.add_report_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [64, 128, 256]
    args.sizes = sorted(set(args.sizes))
    return args


# =========================================================================== the pool


def pool_files(pool_dir: Path, n: int) -> list[Path]:
    return [pool_dir / f"img_{i:06d}.jpg" for i in range(n)]


def make_pool(data: Path, pool_dir: Path, n: int, seed: int = 0) -> float:
    """Write the first `n` generated images (missing ones only); returns the seconds spent."""
    import numpy as np
    from PIL import Image, ImageEnhance

    pool_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for room in bc.ROOMS for p in (data / room).iterdir() if p.suffix.lower() == ".jpg")
    sources = [sources[i] for i in np.random.default_rng(seed).permutation(len(sources))]
    ops = [None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180]
    todo = [(i, f) for i, f in enumerate(pool_files(pool_dir, n)) if not f.exists()]
    if not todo:
        return 0.0
    bc.log(f"writing {len(todo)} pool images into {pool_dir}")
    started = time.perf_counter()

    def write(item):
        i, target = item
        copy, source = divmod(i, len(sources))
        with Image.open(sources[source]) as im:
            im = im.convert("RGB")
            if ops[copy % 4] is not None:
                im = im.transpose(ops[copy % 4])
            if copy >= 4:
                im = ImageEnhance.Brightness(im).enhance(1.0 + 0.02 * (copy // 4))
            tmp = target.with_suffix(".tmp")
            im.save(tmp, format="JPEG", quality=90)
            os.replace(tmp, target)

    with ThreadPoolExecutor(os.cpu_count() or 1) as ex:
        list(ex.map(write, todo))
    return time.perf_counter() - started


def set_cache(files: list[Path], mode: str) -> None:
    """Evict `files` from the page cache (cold) or read them all once (warm)."""
    if mode == "cold":
        os.sync()   # written pages must be clean before they can be dropped
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    else:
        for f in files:
            f.read_bytes()


# =========================================================================== one size, in a child process


def child(args) -> None:
    """Label the first `args.child` pool images; write time and memory figures to `args.result`."""
    import tempfile

    from pseudolabel import data, pseudolabels
    from pseudolabel.backbones import create_model

    n = args.child
    paths = pool_files(args.pool_dir, n)
    class_names = list(data.HOUSE_ROOMS_CLASSES.names)
    model = create_model(args.backbone, len(class_names))
    size = int(model.input_shape[1])
    rss_before = bc.current_rss_mb()
    peak_before = bc.peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        started = time.perf_counter()
        table = pseudolabels.label_pools(model, [data.Pool("scale", args.pool_dir, paths)], image_size=size,
                                         batch_size=args.batch_size, class_names=class_names,
                                         out_path=Path(tmp) / "pseudo.csv", progress=False)
        seconds = time.perf_counter() - started
    result = {"n": n, "rows": len(table), "seconds": seconds, "images_per_s": n / seconds,
              "rss_before_mb": rss_before, "peak_before_mb": peak_before, "peak_rss_mb": bc.peak_rss_mb(),
              "rss_after_mb": bc.current_rss_mb(), "image_size": size}
    args.result.write_text(json.dumps(result))


def run_child(args, n: int) -> dict:
    result = args.pool_dir / f".result_{n}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", str(n), "--result", str(result), "--pool-dir", str(args.pool_dir),
               "--backbone", args.backbone, "--batch-size", str(args.batch_size)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    out = json.loads(result.read_text())
    result.unlink()
    out["process_s"] = time.perf_counter() - started
    return out


# =========================================================================== report


def linear_fit(ns, seconds):
    """Least squares seconds = a + b * n; (a, b, largest relative deviation of a size from the line)."""
    import numpy as np

    ns, seconds = np.asarray(ns, float), np.asarray(seconds, float)
    if len(ns) < 2:
        return float("nan"), float("nan"), float("nan")
    b, a = np.polyfit(ns, seconds, 1)
    return float(a), float(b), float(np.max(np.abs(seconds - (a + b * ns)) / seconds))


def section(args, command, machine_text, results, generate_s, wall_s) -> str:
    a, b, deviation = linear_fit([r["n"] for r in results], [r["seconds"] for r in results])
    small, large = results[0], results[-1]
    growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
    lines = bc.section_head(
        "Pseudo-labeling scale benchmark" + (" (QUICK, not results)" if args.quick else ""), command, machine_text,
        f"Model: {args.backbone} at {small['image_size']} px, ImageNet weights (untrained head), batch "
        f"{args.batch_size}, `label_pools` (no TTA), one fresh process per size",
        f"Pool: re-encoded copies of the {args.data} JPEGs in `{args.pool_dir}` (see the script's docstring); "
        f"page cache: {args.cache} before each run"
        + (f"; writing the pool took {generate_s:.0f} s" if generate_s else "")
        + f"; whole script {wall_s / 60:.1f} min",
    )
    lines += bc.quick_note(args.quick)
    lines += [
        "| pool images | label_pools time | images/s | ms per image | RSS before labeling | peak RSS (process) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r['n']} | {r['seconds']:.1f} s | {r['images_per_s']:.1f} | {1000 * r['seconds'] / r['n']:.2f} "
                     f"| {r['rss_before_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB |")
    lines += [
        "",
        f"- Time: least-squares line {a:.1f} s + {1000 * b:.2f} ms per image; the largest deviation of a size from "
        f"the line is {100 * deviation:.1f}% -- linear within {100 * LINEAR_TOLERANCE:.0f}%: "
        f"**{'met' if deviation <= LINEAR_TOLERANCE else 'missed'}**",
        f"- Peak RSS: {small['peak_rss_mb']:.0f} MB at {small['n']} images, {large['peak_rss_mb']:.0f} MB at "
        f"{large['n']} ({100 * growth:+.1f}%) -- flat within {100 * FLAT_TOLERANCE:.0f}%: "
        f"**{'met' if abs(growth) <= FLAT_TOLERANCE else 'missed'}**",
        "- Peak RSS is the whole process's high-water mark (TensorFlow, the model and its first forward "
        "included); \"RSS before labeling\" is the resident size after the model was built.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.child is not None:
        child(args)
        return
    command, machine_text = bc.command_line(), bc.machine()
    started = time.perf_counter()
    generate_s = make_pool(args.data, args.pool_dir, max(args.sizes))
    results = []
    for n in args.sizes:
        set_cache(pool_files(args.pool_dir, n), args.cache)
        bc.log(f"labeling {n} images in a fresh process (page cache: {args.cache})")
        r = run_child(args, n)
        bc.log(f"  {n} images: {r['seconds']:.1f} s, {r['images_per_s']:.1f} images/s, peak RSS {r['peak_rss_mb']:.0f} MB")
        if r["rows"] != n:
            raise SystemExit(f"the table has {r['rows']} rows for {n} images")
        results.append(r)
    if args.remove_pool:
        for f in args.pool_dir.glob("img_*.jpg"):
            f.unlink()
    text = section(args, command, machine_text, results, generate_s, time.perf_counter() - started)
    bc.publish(args.report, text)


if __name__ == "__main__":
    main()
