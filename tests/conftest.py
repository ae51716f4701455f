import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests must never wait on a network that is not there.
os.environ.setdefault("PSEUDOLABEL_OFFLINE", "1")

from pathlib import Path

import pytest

from pseudolabel.synthetic import write_synthetic_dataset

# The real House Rooms data, when this checkout sits beside shared/ (slow tests use it).
HOUSE_ROOMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "house_rooms"


@pytest.fixture
def synthetic_root(tmp_path):
    """A tiny two-class tree: root/Labeled (40 images, labels.csv with M/O) and root/Pool (40 images)."""
    root = tmp_path / "data"
    write_synthetic_dataset(root)
    return root


@pytest.fixture(scope="session")
def house_rooms():
    if not (HOUSE_ROOMS / "labels.csv").exists():
        pytest.skip("House Rooms data not found beside this checkout")
    return HOUSE_ROOMS
