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


def test_labels_added_after_the_split_join_its_train_part(synthetic_root):
    class_map = resolve_class_map(CLASSES)
    labeled = read_labels_csv(synthetic_root / "labels.csv", class_map=class_map)
    full = make_split(labeled, class_map, seed=0)
    split = make_split(labeled, class_map, seed=0)
    forgotten = next(item for item in split.items if item[2] == "train")
    split.items = [item for item in split.items if item != forgotten]  # labeled after the split was written
    write_split(split, synthetic_root / "split.csv")
    with pytest.warns(DataWarning, match=r"1 labeled image\(s\) not in the split .* join its train part"):
        task = load_task(_cfg(synthetic_root, split=str(synthetic_root / "split.csv")))
    assert len(task.labeled) == 40                       # pools exclude it
    assert task.split.sizes() == full.sizes()            # it trains; val and test are as written
    assert task.split.subset("test")[0] == full.subset("test")[0]
    assert task.split.hash != split.hash                 # runs see that the training data changed
