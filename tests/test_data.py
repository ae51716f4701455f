"""pseudolabel.data: labeled sets, class maps, letters, splits, pools (tiny synthetic images)."""

import csv
import hashlib
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from pseudolabel import data as D
from pseudolabel.data import duplicates
from pseudolabel.synthetic import synthetic_image, write_synthetic_dataset



def chmod_blocks_reads(tmp_path) -> bool:
    """False where mode 000 does not stop reads (root, or CAP_DAC_OVERRIDE): skip those tests."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
        return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)


def write_csv(path, rows, header=("image", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labels_rows(root):
    with open(root / "labels.csv", newline="") as f:
        return list(csv.reader(f))[1:]


@pytest.fixture(autouse=True)
def fresh_hash_cache(monkeypatch):
    # The in-memory hash cache is per process; tests rewrite files, so each starts empty.
    monkeypatch.setattr(duplicates, "_DEFAULT_CACHE", D.HashCache())


# --- labeled sets ------------------------------------------------------------------------------


def test_read_labels_csv(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    assert len(labeled) == 40
    assert labeled.root == synthetic_root
    assert all(p.is_file() for p in labeled.paths)
    assert labeled.raw_counts() == {"M": 20, "O": 20}
    class_map = D.ClassMap.identity(labeled.raw_labels)
    assert list(labeled.labels(class_map)[:4]) == [0, 1, 0, 1]


def test_missing_column_names_file_and_columns(synthetic_root):
    bad = write_csv(synthetic_root / "bad.csv", [("Labeled/img_1.jpg", "M")], header=("image", "lable"))
    with pytest.raises(D.DataError, match=r"bad\.csv: missing column\(s\) label .*lable"):
        D.read_labels_csv(bad)


def test_missing_image_names_file_line_and_image(synthetic_root):
    rows = labels_rows(synthetic_root) + [("Labeled/nope.jpg", "M")]
    bad = write_csv(synthetic_root / "bad.csv", rows)
    with pytest.raises(D.DataError) as err:
        D.read_labels_csv(bad)
    assert "bad.csv" in str(err.value)
    assert "line 42: Labeled/nope.jpg: no such file" in str(err.value)


def test_unknown_label_with_class_map(synthetic_root):
    rows = labels_rows(synthetic_root)
    rows[2] = (rows[2][0], "X")
    bad = write_csv(synthetic_root / "bad.csv", rows)
    with pytest.raises(D.DataError, match=r"line 4: Labeled/img_3\.jpg: unknown label 'X'"):
        D.read_labels_csv(bad, class_map=D.HOUSE_ROOMS_CLASSES)
    assert len(D.read_labels_csv(bad)) == 40  # without a class map any label is allowed


def test_duplicate_rows_say_which_lines(synthetic_root):
    rows = labels_rows(synthetic_root) + [("Labeled/img_1.jpg", "O"), ("./Labeled/img_2.jpg", "O")]
    bad = write_csv(synthetic_root / "bad.csv", rows)
    with pytest.raises(D.DataError) as err:
        D.read_labels_csv(bad)
    message = str(err.value)
    assert "line 42: duplicate row: Labeled/img_1.jpg is already on line 2 (labels 'M' and 'O')" in message
    assert "line 43: duplicate row: Labeled/img_2.jpg is already on line 3" in message


def test_corrupt_and_empty_labeled_images_reported_together(synthetic_root):
    (synthetic_root / "Labeled/img_3.jpg").write_bytes(b"")
    data = (synthetic_root / "Labeled/img_5.jpg").read_bytes()
    (synthetic_root / "Labeled/img_5.jpg").write_bytes(data[: len(data) // 2])
    (synthetic_root / "Labeled/img_7.jpg").write_bytes(b"this is not an image")
    with pytest.raises(D.DataError) as err:
        D.read_labels_csv(synthetic_root / "labels.csv")
    message = str(err.value)
    assert "labels.csv: 3 problem(s)" in message
    assert "line 4: Labeled/img_3.jpg: empty file (0 bytes)" in message
    assert "line 6: Labeled/img_5.jpg: corrupt or truncated" in message
    assert "line 8: Labeled/img_7.jpg: not a recognised image" in message
    assert len(err.value.problems) == 3
    # Without decoding, only existence is checked.
    assert len(D.read_labels_csv(synthetic_root / "labels.csv", check_images=False)) == 40


def test_labels_csv_other_root_and_roundtrip(synthetic_root, tmp_path):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    elsewhere = tmp_path / "elsewhere" / "labels.csv"
    D.write_labels_csv(labeled, elsewhere)
    again = D.read_labels_csv(elsewhere, root=synthetic_root)
    assert again.items == labeled.items
    with pytest.raises(D.DataError, match="no such file"):
        D.read_labels_csv(elsewhere)  # default root is the CSV's folder, where no images are


# --- class maps -------------------------------------------------------------------------------


def test_house_rooms_class_map():
    cm = D.HOUSE_ROOMS_CLASSES
    assert cm.names == ("old", "modern")
    assert [cm.encode(x) for x in "MON"] == [1, 0, 0]
    assert cm.positive_index == 1
    with pytest.raises(D.DataError, match="unknown label 'X'"):
        cm.encode("X")


def test_class_map_from_config_and_defaults():
    cm = D.ClassMap.from_config({"names": ["modern", "old"], "map": {"M": "modern", "O": "old", "N": "old"},
                                 "positive": "modern"})
    assert cm.positive_index == 0 and cm.encode("N") == 1
    assert D.ClassMap.from_config(cm.to_config()) == cm
    assert D.ClassMap.from_config({"names": ["a", "b"]}).positive_index == 1  # default: last class
    with pytest.raises(D.DataError, match="unknown classes"):
        D.ClassMap.from_config({"names": ["a", "b"], "map": {"x": "a", "y": "c"}})
    with pytest.raises(D.DataError, match="unknown key"):
        D.ClassMap.from_config({"names": ["a", "b"], "mapping": {}})
    with pytest.raises(D.DataError, match="only for binary"):
        D.ClassMap.from_config({"names": ["a", "b", "c"], "positive": "a"})
    assert D.resolve_class_map("house_rooms") is D.HOUSE_ROOMS_CLASSES
    with pytest.raises(D.DataError, match="unknown class map"):
        D.resolve_class_map("nope")


def test_k_class_identity_map_and_split(tmp_path):
    root = tmp_path / "k"
    write_synthetic_dataset(root, n_labeled=60, n_unlabeled=0, n_classes=3, letters="ABC")
    labeled = D.read_labels_csv(root / "labels.csv")
    cm = D.ClassMap.identity(reversed(labeled.raw_labels))
    assert cm.names == ("A", "B", "C") and cm.positive_index is None
    assert list(labeled.labels(cm)[:3]) == [0, 1, 2]
    split = D.make_split(labeled, cm, seed=1)
    for part, counts in split.class_counts().items():
        assert max(counts.values()) - min(counts.values()) <= 1, (part, counts)


# --- letters ----------------------------------------------------------------------------------


def numbered_folder(tmp_path, numbers, name="Bedroom"):
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in numbers:
        Image.fromarray(synthetic_image(0, rng, 16)).save(folder / f"bed_{n}.jpg")
    return folder


def test_letters_follow_numeric_order_and_warn_on_partial_cover(tmp_path):
    folder = numbered_folder(tmp_path, range(1, 13))
    letters = tmp_path / "letters.txt"
    letters.write_text("MON\nMONMONMO\n")  # 11 letters for 12 images; whitespace ignored
    with pytest.warns(D.DataWarning, match=r"11 letters for 12 images .*cover the first 11 .*up to bed_11\.jpg"):
        labeled = D.labels_from_letters(letters, folder)
    assert labeled.root == tmp_path
    assert labeled.items[:3] == [("Bedroom/bed_1.jpg", "M"), ("Bedroom/bed_2.jpg", "O"), ("Bedroom/bed_3.jpg", "N")]
    assert labeled.items[9] == ("Bedroom/bed_10.jpg", "M")  # bed_10 after bed_9, not after bed_1
    assert len(labeled) == 11


def test_more_letters_than_images_is_an_error(tmp_path):
    folder = numbered_folder(tmp_path, range(1, 4))
    letters = tmp_path / "letters.txt"
    letters.write_text("MONMO")
    with pytest.raises(D.DataError, match=r"letters\.txt: 5 letters but only 3 images .*2 letters have no image"):
        D.labels_from_letters(letters, folder)


def test_letters_missing_and_skip_realign(tmp_path):
    # Letter 4 belonged to bed_4, absent from this copy; bed_5's label is left out on purpose.
    folder = numbered_folder(tmp_path, [1, 2, 3, 5, 6, 7])
    letters = tmp_path / "letters.txt"
    letters.write_text("ABCDEFG")
    labeled = D.labels_from_letters(letters, folder, skip=["bed_5"], missing=["bed_4.jpg"])
    assert labeled.items == [("Bedroom/bed_1.jpg", "A"), ("Bedroom/bed_2.jpg", "B"), ("Bedroom/bed_3.jpg", "C"),
                             ("Bedroom/bed_6.jpg", "F"), ("Bedroom/bed_7.jpg", "G")]
    with pytest.raises(D.DataError, match="not in the folder"):
        D.labels_from_letters(letters, folder, skip=["bed_4.jpg"])
    with pytest.raises(D.DataError, match="is in the folder"):
        D.labels_from_letters(letters, folder, missing=["bed_5.jpg"])


def test_letters_fixes_beyond_reach_are_errors(tmp_path):
    folder = numbered_folder(tmp_path, range(1, 6))
    letters = tmp_path / "letters.txt"
    letters.write_text("AB")
    with pytest.warns(D.DataWarning), pytest.raises(D.DataError, match=r"beyond the images the letters cover"):
        D.labels_from_letters(letters, folder, skip=["bed_4.jpg"])


# --- splits -----------------------------------------------------------------------------------


def test_split_is_deterministic(synthetic_root, tmp_path):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    cm = D.ClassMap.identity(labeled.raw_labels)
    a = D.write_split(D.make_split(labeled, cm, seed=0), tmp_path / "a.csv")
    b = D.write_split(D.make_split(labeled, cm, seed=0), tmp_path / "b.csv")
    c = D.write_split(D.make_split(labeled, cm, seed=1), tmp_path / "c.csv")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    split = D.read_split(a, synthetic_root, cm)
    assert split.hash == hashlib.sha256(a.read_bytes()).hexdigest()
    assert split.hash != D.read_split(c, synthetic_root, cm).hash
    assert a.read_text().splitlines()[0] == "image,label,split"
    images = [line.split(",")[0] for line in a.read_text().splitlines()[1:]]
    assert images == sorted(images)


def test_split_ignores_row_order(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    shuffled = D.LabeledSet(labeled.root, list(reversed(labeled.items)))
    assert D.make_split(labeled).hash == D.make_split(shuffled).hash


def test_split_is_stratified(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    split = D.make_split(labeled, D.HOUSE_ROOMS_CLASSES, test_size=0.2, val_size=0.15, seed=3)
    assert split.sizes() == {"train": 26, "val": 6, "test": 8}
    assert split.class_counts() == {"train": {"old": 13, "modern": 13}, "val": {"old": 3, "modern": 3},
                                    "test": {"old": 4, "modern": 4}}
    paths, labels = split.subset("test")
    assert len(paths) == 8 and labels.dtype == np.int64 and sorted(labels) == [0] * 4 + [1] * 4
    assert all(p.is_file() for p in paths)


def test_split_keeps_near_duplicates_together(synthetic_root):
    # The same pixels under two names (like bed_41 / bed_370): both must land in the same part.
    pixels = np.asarray(Image.open(synthetic_root / "Labeled/img_1.jpg"))
    Image.fromarray(pixels).save(synthetic_root / "Labeled/twin.png")
    write_csv(synthetic_root / "labels.csv", labels_rows(synthetic_root) + [("Labeled/twin.png", "M")])
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    assert D.find_near_duplicates(labeled.paths) == [[0, 40]]
    for seed in range(6):
        parts = {image: part for image, _, part in D.make_split(labeled, seed=seed).items}
        assert parts["Labeled/img_1.jpg"] == parts["Labeled/twin.png"], seed


def test_split_too_small_is_a_clear_error(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    tiny = D.LabeledSet(labeled.root, labeled.items[:3])
    with pytest.raises(D.DataError, match="cannot split 3 images"):
        D.make_split(tiny, hash_distance=None)
    with pytest.raises(D.DataError, match="test_size"):
        D.make_split(labeled, test_size=0)


def test_read_split_checks_rows(synthetic_root, tmp_path):
    rows = [("Labeled/img_1.jpg", "M", "train"), ("Labeled/img_2.jpg", "O", "tset"),
            ("Labeled/missing.jpg", "M", "test")]
    bad = write_csv(tmp_path / "split.csv", rows, header=("image", "label", "split"))
    with pytest.raises(D.DataError) as err:
        D.read_split(bad, synthetic_root, D.HOUSE_ROOMS_CLASSES)
    message = str(err.value)
    assert "split.csv: 2 problem(s)" in message
    assert "line 3: unknown split 'tset'" in message
    assert "line 4: Labeled/missing.jpg: no such file" in message


def test_scan_pool_recursive_extensions_glob(synthetic_root):
    pool_dir = synthetic_root / "Pool"
    (pool_dir / "sub").mkdir()
    shutil.copy(pool_dir / "img_1.jpg", pool_dir / "sub" / "UPPER.JPG")
    (pool_dir / ".ipynb_checkpoints").mkdir()
    shutil.copy(pool_dir / "img_1.jpg", pool_dir / ".ipynb_checkpoints" / "img_1.jpg")
    (pool_dir / "notes.txt").write_text("not an image")
    pool = D.scan_pool(pool_dir)
    assert pool.name == "Pool" and len(pool) == 41
    assert pool_dir / "sub" / "UPPER.JPG" in pool.images
    assert len(D.scan_pool(pool_dir, glob="img_1*.jpg", name="ones")) == 11  # img_1, img_10..img_19


def test_empty_pool_warns(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.warns(D.DataWarning, match="no images"):
        pool = D.scan_pool(tmp_path / "empty")
    assert len(pool) == 0 and pool.counts()["found"] == 0


def test_missing_or_non_folder_pool_is_an_error(synthetic_root):
    with pytest.raises(D.DataError, match="nope: pool folder does not exist"):
        D.scan_pool(synthetic_root / "nope")
    with pytest.raises(D.DataError, match="not a folder"):
        D.scan_pool(synthetic_root / "labels.csv")


def test_unreadable_pool_folder_is_an_error(synthetic_root, monkeypatch):
    # chmod cannot stop root from reading, so simulate the OS refusing instead.
    real_scandir = os.scandir

    def refuse(path="."):
        if str(path) == str(synthetic_root / "Pool"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(D.DataError, match="Pool: cannot read pool folder: permission denied"):
        D.scan_pool(synthetic_root / "Pool")


def test_chmod_000_pool_folder_is_an_error(synthetic_root, tmp_path):
    if not chmod_blocks_reads(tmp_path):
        pytest.skip("this user reads files whatever their mode (root)")
    folder = synthetic_root / "Pool"
    folder.chmod(0)
    try:
        with pytest.raises(D.DataError, match="permission denied"):
            D.scan_pool(folder)
    finally:
        folder.chmod(0o755)


def test_unreadable_pool_files_are_skipped_and_listed(synthetic_root):
    pool_dir = synthetic_root / "Pool"
    (pool_dir / "img_2.jpg").write_bytes(b"")
    (pool_dir / "img_3.jpg").write_bytes(b"garbage")
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    pool = D.filter_pool(D.scan_pool(pool_dir), labeled.paths)
    assert pool.counts() == {"found": 40, "kept": 38, "excluded": 0, "excluded_labeled": 0,
                             "excluded_near_duplicate": 0, "excluded_in_earlier_pool": 0, "skipped": 2}
    assert pool.skipped == [(pool_dir / "img_2.jpg", "empty file (0 bytes)"),
                            (pool_dir / "img_3.jpg", "not a recognised image file (JPEG, PNG, WebP, BMP, GIF, TIFF)")]


def test_chmod_000_pool_file_is_skipped(synthetic_root, tmp_path):
    if not chmod_blocks_reads(tmp_path):
        pytest.skip("this user reads files whatever their mode (root)")
    path = synthetic_root / "Pool" / "img_4.jpg"
    path.chmod(0)
    try:
        pool = D.filter_pool(D.scan_pool(synthetic_root / "Pool"), [])
        assert [p for p, _ in pool.skipped] == [path] and "permission denied" in pool.skipped[0][1]
    finally:
        path.chmod(0o644)


def test_labeled_images_are_excluded_from_a_pool(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    pool = D.filter_pool(D.scan_pool(synthetic_root), labeled.paths)  # the root holds both folders
    counts = pool.counts()
    assert counts["excluded_labeled"] == 40 and counts["kept"] == 40 and counts["excluded_near_duplicate"] == 0
    assert all(reason == D.LABELED for _, reason in pool.excluded)
    assert all(p.parent.name == "Pool" for p in pool.images)


def test_near_duplicates_of_test_images_are_excluded(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    test_paths, _ = D.make_split(labeled).subset("test")
    pixels = np.asarray(Image.open(test_paths[0]))
    Image.fromarray(pixels).save(synthetic_root / "Pool" / "requality.jpg", quality=50)
    Image.fromarray(pixels).save(synthetic_root / "Pool" / "as_png.png")
    pool = D.filter_pool(D.scan_pool(synthetic_root / "Pool"), labeled.paths)
    excluded = {p.name: reason for p, reason in pool.excluded}
    assert set(excluded) == {"requality.jpg", "as_png.png"}
    assert excluded["as_png.png"].startswith(f"{D.NEAR_DUPLICATE} {test_paths[0]} (phash distance ")
    assert len(pool) == 40  # none of the 40 unrelated pool images is caught


def test_path_only_filter_decodes_nothing(synthetic_root):
    (synthetic_root / "Pool" / "img_2.jpg").write_bytes(b"garbage")
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    pool = D.filter_pool(D.scan_pool(synthetic_root), labeled.paths, hash_distance=None)
    assert pool.counts()["kept"] == 40 and pool.counts()["skipped"] == 0


def test_hash_cache_persists(synthetic_root, tmp_path, monkeypatch):
    cache_file = tmp_path / "hashes.json"
    cache = D.HashCache(cache_file)
    first = cache.get(synthetic_root / "Pool" / "img_1.jpg")
    cache.save()

    def fail(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(duplicates, "read_image", fail)
    assert D.HashCache(cache_file).get(synthetic_root / "Pool" / "img_1.jpg") == first


def test_pool_report_and_summary(synthetic_root, tmp_path):
    (synthetic_root / "Pool" / "img_2.jpg").write_bytes(b"")
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    pool = D.filter_pool(D.scan_pool(synthetic_root), labeled.paths)
    written = D.write_pool_report([pool], tmp_path / "run")
    with open(written["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80
    assert sum(r["status"] == "skipped" for r in rows) == 1
    summary = D.summarize(labeled, D.HOUSE_ROOMS_CLASSES, D.make_split(labeled, D.HOUSE_ROOMS_CLASSES), [pool], [])
    assert summary["labeled"]["class_counts"] == {"old": 20, "modern": 20}
    assert summary["split"]["sizes"] == {"train": 26, "val": 6, "test": 8}
    assert summary["pools"][0]["counts"]["skipped"] == 1
    import json
    assert json.loads(written["json"].read_text())["pools"][0]["counts"] == pool.counts()


def test_data_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, pseudolabel.data; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the real House Rooms data (slow) -----------------------------------------------------------


@pytest.mark.slow
def test_letters_reproduce_house_rooms_labels(house_rooms, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", D.DataWarning)
        labeled = D.labels_from_letters(house_rooms / "labels_original.txt", house_rooms / "Bedroom",
                                        **D.HOUSE_ROOMS_LETTER_FIXES)
    out = D.write_labels_csv(labeled, tmp_path / "labels.csv")
    assert out.read_bytes() == (house_rooms / "labels.csv").read_bytes()


@pytest.mark.slow
def test_house_rooms_split_file_is_reproducible(house_rooms):
    from pathlib import Path

    kept = Path(__file__).resolve().parents[1] / "splits" / "house_rooms.csv"
    labeled = D.read_labels_csv(house_rooms / "labels.csv", class_map=D.HOUSE_ROOMS_CLASSES)
    split = D.make_split(labeled, D.HOUSE_ROOMS_CLASSES, 0.2, 0.15, seed=0)
    assert split.canonical_csv().encode() == kept.read_bytes()


@pytest.mark.slow
def test_house_rooms_known_duplicates_are_excluded(house_rooms):
    labeled = D.read_labels_csv(house_rooms / "labels.csv", check_images=False)
    pool = D.filter_pool(D.scan_pool(house_rooms / "Bedroom"), labeled.paths)
    excluded = {p.name for p, _ in pool.excluded}
    assert {"bed_1432.jpg", "bed_1426.jpg"} <= excluded
    assert pool.counts()["excluded_near_duplicate"] < 30


def test_prepare_pools_labels_a_file_once_across_pools(synthetic_root, tmp_path):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv").paths
    cfgs = [{"name": "a", "path": synthetic_root / "Pool"}, {"name": "b", "path": synthetic_root}]
    a, b = D.prepare_pools(cfgs, labeled, tmp_path)
    assert len(a.images) == 40
    assert b.images == [] and b.counts()["excluded_in_earlier_pool"] == 40 and b.counts()["excluded_labeled"] == 40
    assert (tmp_path / "pools.json").exists() and (tmp_path / "pools.csv").exists()
    with pytest.raises(D.DataError, match="no unlabeled pools"):
        D.prepare_pools([], labeled, tmp_path)


def test_a_pool_can_be_a_list_of_images_and_labeled_ones_and_their_twins_stay_out(synthetic_root, tmp_path):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    twin = synthetic_root / "Pool" / "twin.jpg"
    shutil.copy(labeled.paths[0], twin)
    listed = ["Pool/img_1.jpg", "Pool/img_2.jpg", "Pool/img_2.jpg", "Pool/twin.jpg", str(labeled.paths[1])]
    images = tmp_path / "pool.csv"
    images.write_text("image,note\n" + "".join(f"{image},x\n" for image in listed))
    cfg = {"name": "listed", "path": synthetic_root, "images": images}
    (pool,) = D.prepare_pools([cfg], labeled.paths, tmp_path)
    assert pool.images == [synthetic_root / "Pool" / "img_1.jpg", synthetic_root / "Pool" / "img_2.jpg"]
    reasons = dict(pool.excluded)
    assert reasons[labeled.paths[1]] == D.LABELED and reasons[twin].startswith(D.NEAR_DUPLICATE)
    assert len(D.scan_pool(synthetic_root / "Pool")) == 41   # the folder holds more than the list

    images.write_text("image\nPool/img_1.jpg\nPool/gone.jpg\nPool/gone2.jpg\n")
    with pytest.raises(D.DataError, match=r"pool.csv: line 3: Pool/gone.jpg: no such image file \(2 of 3 listed"):
        D.list_pool(synthetic_root, images)
    images.write_text("path\nPool/img_1.jpg\n")
    with pytest.raises(D.DataError, match="missing column"):
        D.list_pool(synthetic_root, images)


# --- per-class split counts ----------------------------------------------------------------------


def test_make_split_per_class_counts(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    split = D.make_split(labeled, test_per_class=5, val_per_class=3, seed=1)
    assert split.class_counts()["test"] == {"M": 5, "O": 5}
    assert split.class_counts()["val"] == {"M": 3, "O": 3}
    assert split.sizes() == {"train": 24, "val": 6, "test": 10}
    again = D.make_split(D.LabeledSet(labeled.root, labeled.items[::-1]), test_per_class=5, val_per_class=3, seed=1)
    assert again.hash == split.hash  # deterministic, whatever the row order
    assert D.make_split(labeled, test_per_class=5, val_per_class=3, seed=2).hash != split.hash
    no_val = D.make_split(labeled, test_per_class=4, seed=1)
    assert no_val.sizes() == {"train": 32, "val": 0, "test": 8}


def test_make_split_per_class_counts_keeps_near_duplicates_together(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    twins = [(f"Labeled/twin_{i}.jpg", label) for i, (image, label) in enumerate(labeled.items[:6])]
    for (image, _), (twin, _) in zip(labeled.items[:6], twins):
        shutil.copy(synthetic_root / image, synthetic_root / twin)
    both = D.LabeledSet(labeled.root, labeled.items + twins)
    for seed in range(3):
        part = {image: p for image, _, p in D.make_split(both, test_per_class=5, val_per_class=3, seed=seed).items}
        assert all(part[image] == part[twin] for (image, _), (twin, _) in zip(labeled.items[:6], twins))


def test_make_split_per_class_counts_too_few_images(synthetic_root):
    labeled = D.read_labels_csv(synthetic_root / "labels.csv")
    with pytest.raises(D.DataError, match=r"too few images for 15 test \+ 5 val per class .*class 'M' has 20"):
        D.make_split(labeled, test_per_class=15, val_per_class=5, hash_distance=None)
    with pytest.raises(D.DataError, match="val_per_class needs test_per_class"):
        D.make_split(labeled, val_per_class=2)
    with pytest.raises(D.DataError, match="per-class counts must be"):
        D.make_split(labeled, test_per_class=0)
