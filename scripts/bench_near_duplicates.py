"""Near-duplicate guard on the House Rooms pools: what the new guard excludes vs the old one.

Old guard: whole-image pHash within 8 bits (what `data.filter_pool` did before views and
keypoints). New guard: `data.filter_pool` as it is (pHash of mirror and crops, ORB keypoints).

1. Every room folder is a pool, filtered against the 446 labeled images: images excluded per
   pool by each guard, and by which check.
2. Made copies: transforms of labeled images (mirror, 80% crops, 5-degree rotations...) written
   to a scratch pool: how many each guard catches (missed copies are test leakage).
3. A contact sheet of every pair the new guard excludes (labeled image | pool image, with the
   distance) is written for checking by eye; pool images judged distinct by eye are passed back
   with `--distinct NAME` and counted as false positives.

    python scripts/bench_near_duplicates.py --sheet docs/near_duplicates.png [--distinct bath_892.jpg ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _bench_common as bc
import numpy as np

OLD_HASH_DISTANCE = 8


def transforms(image):
    """Made copies of one labeled image (PIL), by name."""
    from PIL import Image, ImageOps

    w, h = image.size

    def crop_of(picture, fraction):
        cw, ch = round(w * fraction), round(h * fraction)
        return picture.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))

    def crop(fraction, where):
        cw, ch = round(w * fraction), round(h * fraction)
        x = {"centre": (w - cw) // 2, "top-left": 0, "bottom-right": w - cw}[where]
        y = {"centre": (h - ch) // 2, "top-left": 0, "bottom-right": h - ch}[where]
        return image.crop((x, y, x + cw, y + ch))

    rotate = image.rotate
    return {
        "mirror": ImageOps.mirror(image),
        "80% centre crop": crop(0.8, "centre"),
        "80% top-left crop": crop(0.8, "top-left"),
        "80% bottom-right crop": crop(0.8, "bottom-right"),
        "90% top-left crop": crop(0.9, "top-left"),
        "70% centre crop": crop(0.7, "centre"),
        "rotate 5 deg": rotate(5, resample=Image.Resampling.BICUBIC),
        "rotate -5 deg, expanded": rotate(-5, resample=Image.Resampling.BICUBIC, expand=True),
        "mirror + rotate 5 deg": ImageOps.mirror(rotate(5, resample=Image.Resampling.BICUBIC)),
        "rotate 5 deg + 85% centre crop": crop_of(rotate(5, resample=Image.Resampling.BICUBIC), 0.85),
        "rotate 10 deg": rotate(10, resample=Image.Resampling.BICUBIC),
    }


def old_guard_excludes(pool_paths, labeled_paths, cache) -> set[Path]:
    """Pool images whose whole-image pHash is within OLD_HASH_DISTANCE of a labeled image's."""
    from pseudolabel import data

    if not pool_paths:
        return set()
    query = np.array([cache.get(p).whole_hash for p in pool_paths], dtype=np.uint64)
    reference = np.array([cache.get(p).whole_hash for p in labeled_paths], dtype=np.uint64)
    distance, _ = data.min_hash_distances(query, reference)
    return {p for p, d in zip(pool_paths, distance) if d <= OLD_HASH_DISTANCE}


def near_exclusions(pool):
    """(pool image, labeled image, reason detail) of each near-duplicate exclusion."""
    from pseudolabel import data

    out = []
    for path, reason in pool.excluded:
        if reason.startswith(data.NEAR_DUPLICATE):
            rest = reason[len(data.NEAR_DUPLICATE) + 1:]
            labeled, detail = rest.split(" (", 1)
            out.append((Path(path), Path(labeled), detail.rstrip(")")))
    return out


def measure_pools(root: Path, labeled_paths, cache, rooms):
    from pseudolabel import data

    rows, pairs = [], []
    for room in rooms:
        scanned = data.scan_pool(root / room)
        started = time.perf_counter()
        pool = data.filter_pool(scanned, labeled_paths, cache=cache, progress=False)
        seconds = time.perf_counter() - started
        labeled_resolved = {p.resolve() for p in labeled_paths}
        unlabeled = [p for p in scanned.images if p.resolve() not in labeled_resolved]
        old = old_guard_excludes(unlabeled, labeled_paths, cache)
        near = near_exclusions(pool)
        new = {p for p, _, _ in near}
        by_keypoints = sum("keypoint" in d for _, _, d in near)
        rows.append(dict(pool=room, found=len(scanned), labeled=len(scanned) - len(unlabeled), old=len(old),
                         new=len(new), keypoints=by_keypoints, only_new=len(new - old), only_old=len(old - new),
                         seconds=seconds))
        pairs += near
        bc.log(f"{room}: {rows[-1]}")
    return rows, pairs


def measure_copies(labeled_paths, cache, n: int):
    """{transform: (caught by old guard, caught by new guard, copies)} on made copies."""
    from PIL import Image

    from pseudolabel import data

    sources = sorted(labeled_paths)[:n]
    with tempfile.TemporaryDirectory() as scratch:
        made: dict[Path, str] = {}
        for i, source in enumerate(sources):
            with Image.open(source) as image:
                for k, (name, copy) in enumerate(transforms(image.convert("RGB")).items()):
                    path = Path(scratch) / f"copy_{i}_{k}.jpg"
                    copy.save(path, quality=90)
                    made[path] = name
        pool = data.filter_pool(data.scan_pool(scratch), labeled_paths, cache=cache, progress=False)
        new = {Path(p) for p, _ in pool.excluded}
        old = old_guard_excludes(sorted(made), labeled_paths, cache)
    out: dict[str, list[int]] = {}
    for path, name in made.items():
        counts = out.setdefault(name, [0, 0, 0])
        counts[0] += path in old
        counts[1] += path in new
        counts[2] += 1
    return out


def contact_sheet(pairs, root: Path, out: Path, thumb: int = 112) -> None:
    """Labeled image | excluded pool image, the distance underneath; 3 pairs a row; palette PNG."""
    from PIL import Image, ImageDraw

    columns, label_h, gap = 3, 26, 12
    rows = max(1, (len(pairs) + columns - 1) // columns)
    cell_w = 2 * thumb + gap
    sheet = Image.new("RGB", (columns * cell_w, rows * (thumb + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (pool_image, labeled_image, detail) in enumerate(pairs):
        x, y = (n % columns) * cell_w, (n // columns) * (thumb + label_h)
        for k, path in enumerate((labeled_image, pool_image)):
            with Image.open(path) as image:
                sheet.paste(image.convert("RGB").resize((thumb, thumb)), (x + k * thumb, y))
        names = f"{n + 1}. {_rel(labeled_image, root)} | {_rel(pool_image, root)}"
        draw.text((x + 2, y + thumb + 1), names, fill="black")
        draw.text((x + 2, y + thumb + 13), detail[:44], fill="black")
    sheet.quantize(colors=128).save(out, optimize=True)


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def report(rows, copies, pairs, distinct, args, machine_text) -> str:
    from pseudolabel import data

    wrong = [p for p, _, _ in pairs if p.name in distinct]
    lines = bc.section_head(
        "Near-duplicate guard on the House Rooms pools", bc.command_line(), machine_text,
        f"Old guard: whole-image pHash distance <= {OLD_HASH_DISTANCE}. New guard: `data.filter_pool` defaults "
        f"(pHash of whole / mirror / centre crop views vs whole / centre / corner crop views <= "
        f"{data.DEFAULT_HASH_DISTANCE}; ORB keypoints >= {data.DEFAULT_MIN_INLIERS} RANSAC inliers for the "
        f"3 most similar labeled images).",
        f"Labeled images: {args.labels} ({len(args.labeled_paths)}); every room folder a pool.")
    lines += bc.quick_note(args.quick)
    lines += ["| pool | found | labeled | excluded, old guard | excluded, new guard | of which by keypoints "
              "| new only | old only | false positives (by eye) | seconds (new guard) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        fp = sum(1 for p in wrong if p.parent.name == r["pool"])
        lines.append(f"| {r['pool']} | {r['found']} | {r['labeled']} | {r['old']} | {r['new']} | {r['keypoints']} "
                     f"| {r['only_new']} | {r['only_old']} | {fp} | {r['seconds']:.1f} |")
    total = {k: sum(r[k] for r in rows) for k in ("found", "labeled", "old", "new", "keypoints", "only_new")}
    lines += ["", f"Total: {total['new']} pool images excluded as near-duplicates by the new guard "
                  f"({total['keypoints']} by keypoints) vs {total['old']} by the old one; "
                  f"{len(wrong)} of the {total['new']} judged distinct pictures by eye (false positives"
                  + (f": {', '.join(sorted(_rel(p, args.root) for p in wrong))}" if wrong else "") + ").",
              f"Contact sheet of all {len(pairs)} excluded pairs (labeled | pool, with the distance): "
              f"`{args.sheet.relative_to(bc.REPO) if args.sheet.is_relative_to(bc.REPO) else args.sheet}`.", "",
              f"Made copies of the first {args.copies} labeled images (sorted by path), saved as JPEG quality 90, "
              "filtered as a pool:", "",
              "| copy | caught, old guard | caught, new guard |", "| --- | ---: | ---: |"]
    for name, (old, new, n) in copies.items():
        lines.append(f"| {name} | {old}/{n} | {new}/{n} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=bc.DEFAULT_DATA)
    parser.add_argument("--sheet", type=Path, default=bc.REPO / "docs" / "near_duplicates.png",
                        help="contact sheet PNG to write")
    parser.add_argument("--copies", type=int, default=50, help="labeled images to make copies of")
    parser.add_argument("--distinct", nargs="*", default=[], metavar="NAME",
                        help="file names of excluded pool images judged distinct pictures by eye (false positives)")
    bc.add_report_args(parser)
    args = parser.parse_args()
    from pseudolabel import data

    machine_text = bc.machine()
    rooms = bc.ROOMS[:2] if args.quick else bc.ROOMS
    args.copies = min(args.copies, 5) if args.quick else args.copies
    args.labels = args.root / "labels.csv"
    args.labeled_paths = data.read_labels_csv(args.labels, check_images=False).paths
    cache = data.HashCache()
    rows, pairs = measure_pools(args.root, args.labeled_paths, cache, rooms)
    copies = measure_copies(args.labeled_paths, cache, args.copies)
    contact_sheet(pairs, args.root, args.sheet)
    bc.log(f"contact sheet: {args.sheet} ({args.sheet.stat().st_size // 1024} KB, {len(pairs)} pairs)")
    for n, (pool_image, labeled_image, detail) in enumerate(pairs):
        print(f"{n + 1}. {_rel(labeled_image, args.root)} | {_rel(pool_image, args.root)}: {detail}")
    section = report(rows, copies, pairs, set(args.distinct), args, machine_text)
    print(section)
    bc.append_report(args.report, section)


if __name__ == "__main__":
    main()
