"""`pseudolabel data ...`: inspect a labeled set and its pools, fix a split, import letter labels.

Thin over `pseudolabel.data` (no TensorFlow). The API module is imported inside the commands so
that `pseudolabel --help` stays fast.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import click

from pseudolabel.cli.common import fail_cleanly

_CLASS_CHOICES = click.Choice(["identity", "house_rooms"])
_CLASSES_HELP = ("Class map: 'identity' (one class per raw label: the K-class form) or 'house_rooms' (Modern vs "
                 "not-Modern: M -> modern, O and N -> old); any other map: --experiment.")
_MAX_LISTED = 50  # longest list of excluded/skipped files printed; --report-dir has them all


@click.group("data")
def data():
    """Labeled sets, fixed splits and unlabeled pools: inspect, split, import."""


def _labels_options(func):
    """--experiment / --root / --labels / --classes, shared by summary and split."""
    func = click.option("--experiment", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="Take the data root, the labels CSV and the class map (any [data.classes] table: "
                             "K names, a map) from this experiment's [data]; the flags override it.")(func)
    func = click.option("--classes", type=_CLASS_CHOICES, default=None,
                        help=_CLASSES_HELP + " Default: the --experiment's, else identity.")(func)
    func = click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
                        help="Labels CSV (image,label). Default: ROOT/labels.csv.")(func)
    func = click.option("--root", "--data", "root", type=click.Path(file_okay=False, path_type=Path),
                        help="Data root; image paths in the CSVs are relative to it. "
                             "Default: the labels CSV's folder.")(func)
    return func


@contextlib.contextmanager
def _report_warnings():
    """Print the API's DataWarnings (empty pool, partial letter coverage...) as 'warning:' lines."""
    from pseudolabel.data import DataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, DataWarning):
                    click.echo(f"warning: {w.message}", err=True)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _data_flags(experiment: Path | None, root: Path | None, labels: Path | None, classes):
    """(root, labels, classes): the flags, completed from the experiment's `[data]` when given."""
    if experiment is None:
        return root, labels, classes or "identity"
    from pseudolabel.config import ClassesTable, load_experiment

    data = load_experiment(experiment).data
    if data.layout == "folders":
        raise click.UsageError(f"{experiment}: its data is a folder per class (layout = \"folders\"), split when "
                               "it is read; `pseudolabel data import-folders` writes that split as CSVs")
    if labels is None and data.labels is None:
        raise click.UsageError(f"{experiment}: names no labels CSV ([data] labels); give --labels")
    table = data.classes.model_dump(exclude_none=True) if isinstance(data.classes, ClassesTable) else data.classes
    return root or Path(data.root), labels or Path(data.labels), classes or table or "identity"


def _load_labels(root: Path | None, labels: Path | None, classes):
    from pseudolabel.data import read_labels_csv, resolve_class_map

    if labels is None and root is None:
        raise click.UsageError("give --labels (and --root if the image paths are not relative to its folder)")
    labels = labels or root / "labels.csv"
    # A named map is known up front, so unknown labels are reported with their CSV lines.
    named = None if classes == "identity" else resolve_class_map(classes)
    labeled = read_labels_csv(labels, root, class_map=named)
    return labeled, named or resolve_class_map("identity", labeled.raw_labels)


@data.command("summary")
@_labels_options
@click.option("--split", type=click.Path(dir_okay=False, path_type=Path),
              help="Split CSV (from `data split`) to show sizes per part and class.")
@click.option("--pool", "pools", multiple=True, type=click.Path(path_type=Path),
              help="Unlabeled pool folder (scanned recursively); repeat for several. Default: the "
                   "folder(s) holding the labeled images, i.e. the same-domain images that are not "
                   "labeled. Labeled images and their near-duplicates are always excluded.")
@click.option("--glob", default=None, help="Keep only pool images whose path ends matching this, e.g. 'bed_*.jpg'.")
@click.option("--no-pool", is_flag=True, help="Do not scan any pool (no image decoding beyond the labeled set).")
@click.option("--hash-distance", type=click.IntRange(0, 64), default=None,
              help="Largest pHash distance (of 64 bits) counted as a near-duplicate (whole images; mirrored "
                   "and cropped views: half of it). Default: 8.")
@click.option("--min-inliers", type=click.IntRange(1), default=None,
              help="Fewest matching ORB keypoints (one rotation + scale apart) that make a pool image a "
                   "near-duplicate of a labeled one (rotated or off-centre cropped copies). Default: 40.")
@click.option("--no-keypoints", is_flag=True, help="Skip the keypoint check (pHash views only; faster).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write pools.csv (every pool image: kept/excluded/skipped + reason) and pools.json here.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text.")
@fail_cleanly
def summary(experiment, root, labels, classes, split, pools, glob, no_pool, hash_distance, min_inliers,
            no_keypoints, report_dir, as_json):
    """Describe a labeled set: classes, split sizes, pools, duplicates, unreadable files.

    Checks every labeled image (a bad one is an error naming file and line), finds near-duplicate
    labeled images, and filters each pool against ALL labeled images (train, val and test).
    Without --split, the split shown is the one `data split` would write (seed 0).
    Without --pool, the pool is the labeled images' own folder(s) minus the labeled images.
    Unreadable pool files are skipped and listed, never fatal.
    """
    import json

    from pseudolabel import data as D

    distance = D.DEFAULT_HASH_DISTANCE if hash_distance is None else hash_distance
    root, labels, classes = _data_flags(experiment, root, labels, classes)
    with _report_warnings():
        labeled, class_map = _load_labels(root, labels, classes)
        # Without --split, show the split `data split` would write with its defaults (seed 0).
        the_split = (D.read_split(split, labeled.root, class_map, check_images=False) if split
                     else D.make_split(labeled, class_map, seed=0, progress=False))
        duplicates = D.find_near_duplicates(labeled.paths, distance)
        folders = [] if no_pool else (list(pools) or D.labeled_folders(labeled))
        inliers = None if no_keypoints else (D.DEFAULT_MIN_INLIERS if min_inliers is None else min_inliers)
        scanned = [D.filter_pool(D.scan_pool(folder, glob), labeled.paths, distance, min_inliers=inliers)
                   for folder in folders]
        if report_dir:
            D.write_pool_report(scanned, report_dir)
    result = D.summarize(labeled, class_map, the_split, scanned, duplicates)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(_format_summary(result, labeled.root, distance))


def _format_summary(summary: dict, root: Path, distance: int) -> str:
    lines = _format_labeled(summary, root, distance)
    if "split" in summary:
        lines += _format_split(summary["split"], summary["classes"]["names"])
    for pool in summary["pools"]:
        lines += _format_pool(pool, root)
    return "\n".join(lines)


def _rel(path: str | Path, root: Path) -> str:
    """A path relative to the data root when it lies inside, else as given."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _format_labeled(summary: dict, root: Path, distance: int) -> list[str]:
    labeled, classes = summary["labeled"], summary["classes"]
    source = f" from {labeled['source']}" if labeled["source"] else ""
    lines = [f"Labeled: {labeled['images']} images{source}", f"  root: {labeled['root']}",
             f"  raw labels: {_counts(labeled['raw_counts'])}"]
    for i, name in enumerate(classes["names"]):
        raws = ", ".join(sorted(r for r, n in classes["map"].items() if n == name))
        marks = " (positive)" if classes["positive_index"] == i else ""
        lines.append(f"  class {i} {name}{marks}: {labeled['class_counts'][name]}  <- {raws}")
    groups = labeled.get("near_duplicates", [])
    lines.append(f"  near-duplicates among labeled images (pHash distance <= {distance}): {len(groups)} group(s)")
    for group in groups:
        lines.append("    " + " = ".join(f"{image} ({label})" for image, label in group))
    return lines


def _split_table(sizes: dict, class_counts: dict, class_names: list[str]) -> list[str]:
    """Images per part and class, one line per part; columns as wide as their longest entry."""
    header = ["part", "images", *class_names]
    rows = [[part, size, *(class_counts[part][n] for n in class_names)] for part, size in sizes.items()]
    widths = [max(len(str(row[c])) for row in [header, *rows]) for c in range(len(header))]

    def line(cells):
        first = f"{cells[0]:<{widths[0]}}"
        return "  " + first + "".join(f"  {str(cell):>{w}}" for cell, w in zip(cells[1:], widths[1:]))

    return [line(header)] + [line(row) for row in rows]


def _format_split(split: dict, class_names: list[str]) -> list[str]:
    source = split["source"] or "none given; `pseudolabel data split` (seed 0) would write this one"
    lines = [f"Split: {source}", f"  sha256: {split['hash']}"]
    lines += _split_table(split["sizes"], split["class_counts"], class_names)
    for key, what in (("labeled_not_in_split", "labeled images not in the split"),
                      ("split_not_in_labels", "split images not in the labels CSV"),
                      ("label_differs", "images whose label differs between labels CSV and split"),
                      ("duplicates_across_parts", "near-duplicate groups split across parts")):
        if split.get(key):
            lines.append(f"  warning: {len(split[key])} {what}: {', '.join(map(str, split[key][:10]))}"
                         + (" ..." if len(split[key]) > 10 else ""))
    return lines


def _format_pool(pool: dict, root: Path) -> list[str]:
    c = pool["counts"]
    glob = f" (glob {pool['glob']})" if pool["glob"] else ""
    lines = [f"Pool {pool['name']}: {pool['folder']}{glob}",
             f"  found {c['found']}, kept {c['kept']}, excluded {c['excluded']} "
             f"({c['excluded_labeled']} labeled, {c['excluded_near_duplicate']} near-duplicates of labeled), "
             f"skipped {c['skipped']}"]
    near = [(p, r) for p, r in pool["excluded"] if r != "labeled image"]
    for title, entries in (("near-duplicates excluded", near), ("skipped", pool["skipped"])):
        if entries:
            lines.append(f"  {title}:")
            lines += [f"    {_rel(p, root)}: {_rel_reason(r, root)}" for p, r in entries[:_MAX_LISTED]]
            if len(entries) > _MAX_LISTED:
                lines.append(f"    ... and {len(entries) - _MAX_LISTED} more (see --report-dir)")
    return lines


def _rel_reason(reason: str, root: Path) -> str:
    return reason.replace(f"{root}/", "")


@data.command("split")
@_labels_options
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Split CSV to write (image,label,split; image paths relative to ROOT).")
@click.option("--test-size", type=float, default=None,
              help="Fraction of all labeled images for test. Default: 0.2.")
@click.option("--val-size", type=float, default=None,
              help="Fraction of all labeled images for validation. Default: 0.15. 0 makes a split without "
                   "validation images, which `teach`, `student` and `run` refuse (they select epochs "
                   "on validation); only `probe` uses such a split.")
@click.option("--test-per-class", type=int, default=None, metavar="N",
              help="Instead of the fractions: N test images of every class (stratified, seeded).")
@click.option("--val-per-class", type=int, default=None, metavar="N",
              help="With --test-per-class: N validation images of every class. Default: 0.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed gives a byte-identical file.")
@click.option("--hash-distance", type=click.IntRange(0, 64), default=None,
              help="Near-duplicate labeled images (pHash distance <= this) go to the same part. Default: 8.")
@click.option("--no-group-duplicates", is_flag=True, help="Split near-duplicate labeled images independently.")
@click.option("--force", is_flag=True, help="Overwrite --out if it holds a different split.")
@fail_cleanly
def split(experiment, root, labels, classes, out, test_size, val_size, test_per_class, val_per_class, seed,
          hash_distance, no_group_duplicates, force):
    """Make a fixed, stratified train/val/test split and write it as a CSV.

    Sizes are fractions (--test-size, --val-size) or counts per class (--test-per-class,
    --val-per-class), not both. Stratified by the --classes map; deterministic (same labels +
    options => the same file and hash). Runs record the split's sha256 and refuse to evaluate on
    a different one. An existing --out holding a different split is kept unless --force.
    """
    from pseudolabel import data as D

    if test_per_class is None and val_per_class is not None:
        raise click.UsageError("--val-per-class needs --test-per-class")
    if test_per_class is not None and (test_size is not None or val_size is not None):
        raise click.UsageError("give sizes as fractions (--test-size/--val-size) or as counts "
                               "(--test-per-class/--val-per-class), not both")
    root, labels, classes = _data_flags(experiment, root, labels, classes)
    with _report_warnings():
        labeled, class_map = _load_labels(root, labels, classes)
        distance = D.DEFAULT_HASH_DISTANCE if hash_distance is None else hash_distance
        result = D.make_split(labeled, class_map, 0.2 if test_size is None else test_size,
                              0.15 if val_size is None else val_size, seed,
                              test_per_class=test_per_class, val_per_class=val_per_class,
                              hash_distance=None if no_group_duplicates else distance)
    content = result.canonical_csv().encode("utf-8")
    status = _write_unless_different(out, content, force, "split")
    click.echo(f"{status} {out}\nsha256 {result.hash}")
    click.echo("\n".join(_split_table(result.sizes(), result.class_counts(), list(class_map.names))))


def _write_unless_different(path: Path, content: bytes, force: bool, what: str) -> str:
    """'unchanged' / 'wrote' / 'overwrote'; refuses to replace a different file without force."""
    from pseudolabel.rundir import atomic_write_bytes

    existed = path.exists()
    if existed and path.read_bytes() == content:
        return "unchanged"
    if existed and not force:
        raise click.ClickException(f"{path} exists and holds a different {what}; pass --force to overwrite it")
    atomic_write_bytes(path, content)
    return "overwrote" if existed else "wrote"


@data.command("import-letters")
@click.option("--letters", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Text file of class letters, one per image (whitespace ignored), e.g. labels_original.txt.")
@click.option("--folder", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the labeled images; they take the letters in the order of the number in their names.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Labels CSV to write (image,label).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Write image paths relative to this folder. Default: the --out CSV's folder.")
@click.option("--skip", multiple=True, metavar="NAME",
              help="Image in the folder whose letter is consumed but which gets no row (ambiguous). Repeatable.")
@click.option("--missing", multiple=True, metavar="NAME",
              help="Image absent from the folder that held a letter: it keeps its place (by its number) "
                   "and consumes its letter. Repeatable.")
@click.option("--force", is_flag=True, help="Overwrite --out if it holds different labels.")
@fail_cleanly
def import_letters(letters, folder, out, root, skip, missing, force):
    """Write a labels CSV from the original tutorial's string of class letters.

    Letter i labels the i-th image of --folder, sorted by the integer in the file name. Fewer
    letters than images: the first images are labeled (a warning says up to which). More letters
    than images: error. House Rooms' labels.csv is reproduced (from its folder) by:

    \b
      pseudolabel data import-letters --letters labels_original.txt --folder Bedroom --out labels.csv \\
        --missing bed_114.jpg --missing bed_485.jpg \\
        --skip bed_113.jpg --skip bed_486.jpg --skip bed_487.jpg
    """
    from pseudolabel import data as D

    with _report_warnings():
        labeled = D.labels_from_letters(letters, folder, root if root is not None else out.parent,
                                        skip=skip, missing=missing)
    status = _write_unless_different(out, labeled.to_csv().encode("utf-8"), force, "labels CSV")
    click.echo(f"{status} {out}: {len(labeled)} labeled images ({_counts(labeled.raw_counts())}); "
               f"{len(skip)} skipped, {len(missing)} missing")


@data.command("import-folders")
@click.argument("train_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--test-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder per class of test images: the test split, as it is. Default: a stratified, "
                   "seeded --test-size part of TRAIN_DIR.")
@click.option("--val-size", type=float, default=0.15, show_default=True,
              help="Fraction of the (kept) training images set aside for validation.")
@click.option("--test-size", type=float, default=0.2, show_default=True,
              help="Without --test-dir: fraction of TRAIN_DIR that becomes the test split.")
@click.option("--test-per-class", type=click.IntRange(min=1), default=None, metavar="N",
              help="Without --test-dir, instead of --test-size: N test images of every class.")
@click.option("--val-per-class", type=click.IntRange(min=1), default=None, metavar="N",
              help="Instead of --val-size: N validation images of every class (out of the kept labels).")
@click.option("--labels-per-class", type=click.IntRange(min=1), default=None, metavar="N",
              help="Keep N labeled images per class (train + val); the rest of TRAIN_DIR becomes an unlabeled "
                   "pool whose true labels are written aside (pool_truth.csv).")
@click.option("--pool", "pools", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder of unlabeled images (recursive) to pseudo-label. Repeatable.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of --labels-per-class.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write labels.csv, split.csv, recipes/ and experiment.toml into.")
@click.option("--teacher-recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Teacher recipe to copy into OUT/recipes/ [default: the shipped teachers/efficientnet_lite0.toml].")
@click.option("--student-recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Student recipe to copy into OUT/recipes/ [default: the shipped students/efficientnet_lite0.toml].")
@click.option("--force", is_flag=True, help="Overwrite files of an earlier, different import in --out.")
@fail_cleanly
def import_folders(train_dir, test_dir, val_size, test_size, test_per_class, val_per_class, labels_per_class, pools,
                   seed, out, teacher_recipe, student_recipe, force):
    """Import a folder-per-class data set (TRAIN_DIR/<class>/*.jpg) as a ready experiment.

    Class names are the folder names. Writes the labels CSV, the fixed split, copies of the
    shipped EfficientNet-Lite0 teacher and student recipes, and an experiment file (absolute
    paths) that `pseudolabel run OUT/experiment.toml` runs as it is. Unreadable images are
    skipped and listed.
    """
    from pseudolabel.data.folders import import_folders as run_import

    if test_dir is not None and test_per_class is not None:
        raise click.UsageError("--test-per-class is for a test part taken from TRAIN_DIR; --test-dir is the test split")
    result = run_import(train_dir, out, test_dir=test_dir, val_size=val_size, test_size=test_size,
                        test_per_class=test_per_class, val_per_class=val_per_class,
                        labels_per_class=labels_per_class, pools=pools, seed=seed, force=force,
                        recipes={"teacher": teacher_recipe, "student": student_recipe})
    names = list(result.split.class_map.names)
    click.echo(f"wrote {result.out}: labels.csv, split.csv, recipes/, experiment.toml"
               f"{', ' + result.truth.name if result.truth else ''}; {len(names)} classes")
    click.echo("\n".join(_split_table(result.split.sizes(), result.split.class_counts(), names)))
    for pool in result.pools:
        held = f" ({_counts(result.pool_counts)} held-back labels in {result.truth.name})" if "truth" in pool else ""
        click.echo(f"pool {pool['name']}: {pool['path']}{held}")
    if result.skipped:
        click.echo(f"skipped {len(result.skipped)} unreadable image(s):")
        for path, reason in result.skipped[:_MAX_LISTED]:
            click.echo(f"  {path}: {reason}")
        if len(result.skipped) > _MAX_LISTED:
            click.echo(f"  ... and {len(result.skipped) - _MAX_LISTED} more")
    click.echo(f"next: pseudolabel run {result.experiment}")


commands = [data]
