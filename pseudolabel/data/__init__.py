"""Labeled sets, class maps, unlabeled pools and fixed splits.

Everything here is plain Python + NumPy (+ scikit-learn for splitting, imported when used): no
TensorFlow. Pixels are only touched through `pseudolabel.images`.

- A labeled set (`labels`) is a CSV `image,label` with image paths relative to a data root
  (default: the CSV's folder). `read_labels_csv` checks every row and reports ALL bad rows at
  once, each with its file and line number (a missing column, a missing or unreadable image, an
  unknown label, an image listed twice). `letters` imports the original tutorial's letter string.
- A `ClassMap` (`classes`) turns raw labels (`M`, `O`, `N`) into class names and indices. The
  default House Rooms task is Modern vs not-Modern (`HOUSE_ROOMS_CLASSES`).
- A split (`splits`) is fixed once and kept as a file: `image,label,split`, sorted by image,
  written by `write_split`. Its sha256 (`Split.hash`) is what runs record; a run refuses to
  continue or report on another split (`lifecycle`). Near-duplicate labeled images
  (`duplicates`; the House Rooms data has several) are kept in the same part, so a test image
  never has a twin in training.
- An unlabeled pool (`pools`) is a folder scanned recursively (`scan_pool`) or the images a CSV
  lists (`list_pool`), then `filter_pool`
  drops every labeled image and every near-duplicate (perceptual hash) of ANY labeled image --
  train, val or test: a test image must never reach training through a pool -- and skips
  unreadable files (listed, never fatal).
- A folder-per-class data set (`folders`, the Keras `image_dataset_from_directory` layout) is
  split (`split_folders`) and written as a labels CSV, a split and a ready experiment file
  (`import_folders`), or read as it is by an experiment's `[data] layout = "folders"`.
- Pool truth (`truth`): the known classes of pool images, `image,label` CSVs read by `read_truth`,
  only to measure pseudo-labels (`pseudolabels.quality`), never to train.
- `summary` describes all of it (`pseudolabel data summary`); `task` builds what training and
  evaluation need from an experiment's `data` table.

Problems the user must fix raise `DataError`; things worth knowing but not fatal (an empty pool,
letters that cover only part of a folder) are `DataWarning`s (`errors`).

Every public name of the submodules is re-exported here: `from pseudolabel.data import X`.
"""

from pseudolabel.data.classes import CLASS_MAPS, HOUSE_ROOMS_CLASSES, ClassMap, resolve_class_map
from pseudolabel.data.duplicates import (DEFAULT_HASH_DISTANCE, DEFAULT_MIN_INLIERS, MIN_KEYPOINTS_TO_REFUTE,
                                         SIGNATURE_SIDE, SIGNATURE_VERSION, VIEWS, HashCache, ImageSignature,
                                         NearDuplicate, feature_near_duplicates, find_near_duplicates,
                                         geometric_candidates, hash_images, image_signature, image_views, keypoints,
                                         match_keypoints, match_near_duplicates, min_hash_distances,
                                         read_signature_image)
from pseudolabel.data.errors import DataError, DataWarning, problems_error
from pseudolabel.data.folders import FolderImport, FolderSplit, class_folders, import_folders, split_folders
from pseudolabel.data.labels import (LabeledSet, check_rows, format_problems, read_csv_rows, read_labels_csv,
                                     write_labels_csv)
from pseudolabel.data.letters import HOUSE_ROOMS_LETTER_FIXES, labels_from_letters
from pseudolabel.data.pools import (IN_EARLIER_POOL, LABELED, NEAR_DUPLICATE, Pool, filter_pool, labeled_folders,
                                    list_pool, pool_summary, prepare_pools, read_image_list, scan_pool,
                                    write_pool_report)
from pseudolabel.data.splits import SPLIT_NAMES, Split, make_split, read_split, write_split
from pseudolabel.data.summary import summarize
from pseudolabel.data.task import Task, load_folder_task, load_task
from pseudolabel.data.truth import read_truth, truth_key

__all__ = [
    # errors
    "DataError", "DataWarning", "problems_error",
    # classes
    "ClassMap", "resolve_class_map", "HOUSE_ROOMS_CLASSES", "CLASS_MAPS",
    # labels
    "LabeledSet", "read_labels_csv", "write_labels_csv", "read_csv_rows", "check_rows", "format_problems",
    # letters
    "labels_from_letters", "HOUSE_ROOMS_LETTER_FIXES",
    # duplicates
    "HashCache", "find_near_duplicates", "hash_images", "min_hash_distances", "DEFAULT_HASH_DISTANCE",
    "DEFAULT_MIN_INLIERS", "MIN_KEYPOINTS_TO_REFUTE", "SIGNATURE_SIDE", "SIGNATURE_VERSION", "VIEWS",
    "ImageSignature", "NearDuplicate",
    "feature_near_duplicates", "geometric_candidates", "image_signature", "image_views", "keypoints",
    "match_keypoints", "match_near_duplicates", "read_signature_image",
    # splits
    "Split", "make_split", "read_split", "write_split", "SPLIT_NAMES",
    # pools
    "Pool", "scan_pool", "list_pool", "read_image_list", "filter_pool", "prepare_pools", "write_pool_report", "pool_summary", "labeled_folders",
    "LABELED", "NEAR_DUPLICATE", "IN_EARLIER_POOL",
    # summary, task
    "summarize", "Task", "load_task", "load_folder_task",
    # folders
    "FolderImport", "FolderSplit", "class_folders", "import_folders", "split_folders",
    # truth
    "read_truth", "truth_key",
]
