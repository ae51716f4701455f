"""Tests for pseudolabel.labels_file: appending answers to a labels CSV under concurrency."""

import csv
import threading

import pytest

from pseudolabel.data import read_labels_csv
from pseudolabel.labels_file import LabelsFileError, append_label, read_labeled


def test_append_creates_then_extends_a_readable_csv(tmp_path):
    labels = tmp_path / "labels.csv"
    (tmp_path / "Pool").mkdir()
    for name in ("a.jpg", "b b,2.jpg"):  # read_labels_csv wants the files to exist
        (tmp_path / "Pool" / name).write_bytes(b"x")
    append_label(labels, "Pool/a.jpg", "M")
    labels.write_bytes(labels.read_bytes().rstrip(b"\n"))   # a file whose last row has no newline
    append_label(labels, "Pool/b b,2.jpg", "O")               # a comma in the name is quoted
    assert read_labeled(labels) == {"Pool/a.jpg": "M", "Pool/b b,2.jpg": "O"}
    assert [(img, lab) for img, lab in read_labels_csv(labels, tmp_path, check_images=False).items] == \
        [("Pool/a.jpg", "M"), ("Pool/b b,2.jpg", "O")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".labels.csv.lock", "Pool", "labels.csv"]  # no temp files


def test_append_refuses_duplicates_and_foreign_files(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\nPool/a.jpg,M\n")
    with pytest.raises(LabelsFileError, match="labeled already"):
        append_label(labels, "Pool/a.jpg", "O")
    with pytest.raises(LabelsFileError, match="single-line"):
        append_label(labels, "Pool/x.jpg\nevil,M", "O")
    other = tmp_path / "other.csv"
    other.write_text("path,class\nx,y\n")
    with pytest.raises(LabelsFileError, match="header"):
        append_label(other, "Pool/a.jpg", "M")
    assert labels.read_text() == "image,label\nPool/a.jpg,M\n"
    assert other.read_text() == "path,class\nx,y\n"


def test_concurrent_appends_lose_nothing(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\n")
    errors = []

    def answer(worker):
        for i in range(25):
            try:
                append_label(labels, f"Pool/{worker}_{i}.jpg", "MO"[i % 2])
            except Exception as err:  # noqa: BLE001 -- collected, the test fails on any
                errors.append(err)

    threads = [threading.Thread(target=answer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open(labels, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "label"]
    assert sorted(r[0] for r in rows[1:]) == sorted(f"Pool/{w}_{i}.jpg" for w in range(8) for i in range(25))
    assert all(len(r) == 2 for r in rows)


def test_two_answers_for_one_image_keep_exactly_one(tmp_path):
    labels = tmp_path / "labels.csv"
    outcomes = []
    barrier = threading.Barrier(6)

    def answer(label):
        barrier.wait()
        try:
            append_label(labels, "Pool/same.jpg", label)
            outcomes.append("saved")
        except LabelsFileError:
            outcomes.append("refused")

    threads = [threading.Thread(target=answer, args=("MO"[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["saved"]
    assert len(read_labeled(labels)) == 1
