import pytest

from pseudolabel.data import DataWarning, make_split, read_labels_csv, resolve_class_map, write_split
from pseudolabel.data import load_task

CLASSES = {"names": ["old", "modern"], "map": {"M": "modern", "O": "old"}, "positive": "modern"}


def _cfg(root, **kw):
    return {"root": str(root), "labels": str(root / "labels.csv"), "split": None, "classes": CLASSES, **kw}


def test_load_task_reads_the_fixed_split(synthetic_root):
    class_map = resolve_class_map(CLASSES)
    split = make_split(read_labels_csv(synthetic_root / "labels.csv", class_map=class_map), class_map, seed=1)
    write_split(split, synthetic_root / "split.csv")
    task = load_task(_cfg(synthetic_root, split=str(synthetic_root / "split.csv")))
    assert task.split.hash == split.hash
    assert task.class_map.positive_index == 1
    assert len(task.labeled) == 40
    assert task.describe() == {"root": str(synthetic_root), "labels": str(synthetic_root / "labels.csv"),
                               "split": str(synthetic_root / "split.csv"), "classes": class_map.to_config()}


def test_load_task_without_split_warns_and_splits(synthetic_root):
    with pytest.warns(DataWarning, match="no fixed split"):
        task = load_task(_cfg(synthetic_root))
    assert sum(task.split.sizes().values()) == 40


def test_labeled_images_outside_the_split_still_count_as_labeled(synthetic_root):
    class_map = resolve_class_map(CLASSES)
    labeled = read_labels_csv(synthetic_root / "labels.csv", class_map=class_map)
    split = make_split(labeled, class_map, seed=0)
    split.items = split.items[:-1]  # the split forgot one labeled image
    write_split(split, synthetic_root / "split.csv")
    task = load_task(_cfg(synthetic_root, split=str(synthetic_root / "split.csv")))
    assert len(task.labeled) == 40  # pools still exclude it
