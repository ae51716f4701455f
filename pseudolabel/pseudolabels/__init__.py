"""Teacher predictions on unlabeled pools -> a pseudo-label table -> filtered, balanced targets.

Two steps, kept apart so a table (the expensive part) can be re-selected with other settings:

1. `label_pools` (labeling.py) runs the teacher WITHOUT noise (inference mode, no augmentation;
   optional TTA) over every image of the already filtered pools and writes one row per readable
   image: `image,pool,sha256,p_<class>...,confidence,predicted` (the format: table.py). It
   streams (predict.py): images go through `pipeline.make_dataset` with no cache, rows are
   appended to a temporary file beside the table as each batch is predicted, and the file is
   renamed into place only when every batch is done (an interrupted run leaves no table under the
   final name). Unreadable images are skipped and listed in `<table>.skipped.csv`;
   `<table>.summary.json` counts rows per pool and class. A pool too large for one machine is
   labeled in shards (shards.py): worker i of n runs `label_pools(..., shard=(i, n))` on the same
   pools and labels the images at positions i, i + n, i + 2n, ... of the pools' image list,
   writing its own part `<table>.part-III-of-NNN.csv` (with its sidecars);
   `merge_pseudo_label_parts` checks that every part is there once, cut from the same list, and
   writes the table an unsharded run would have written (same rows, in the same order).

2. `select_pseudo_labels` (selection.py) turns the table into training targets, as the official
   Noisy Student code does (google-research/noisystudent, filter_unlabel.py), optionally with the
   rules of class_shares.py that keep the class shares from drifting (distribution alignment,
   FlexMatch / FreeMatch thresholds, a per-class keep fraction, balancing to the labeled prior).

`load_classifier` and `predict_images` (predict.py) give class probabilities of new images.
"""

from pseudolabel.pseudolabels.class_shares import (
    THRESHOLD_RULES,
    align_to_prior,
    allocate,
    class_thresholds,
    ineffective_threshold,
    keep_most_confident,
    labeled_prior,
)
from pseudolabel.pseudolabels.batches import (
    DecodedBatch,
    PredictedBatch,
    batch_starts,
    decode_batch,
    local_batches,
    predict_decoded,
)
from pseudolabel.pseudolabels.labeling import ENGINES, label_pools
from pseudolabel.pseudolabels.predict import (
    batch_predictor,
    check_classes,
    load_classifier,
    predict_images,
    stream_predictions,
    unreadable_reasons,
)
from pseudolabel.pseudolabels.selection import (
    MODES,
    SELECTED_TABLE,
    SELECTION_REPORT,
    balance_indices,
    describe_selection,
    hard_targets,
    select_pseudo_labels,
    selection_report,
    soft_targets,
    write_selection_report,
)
from pseudolabel.pseudolabels.shards import (
    check_shard,
    find_parts,
    merge_pseudo_label_parts,
    parse_shard,
    part_path,
    shard_record,
)
from pseudolabel.pseudolabels.table import (
    EXCLUDED_IN_EARLIER_POOL,
    EXCLUDED_LABELED,
    EXCLUDED_NEAR_DUPLICATE,
    FIXED_COLUMNS,
    NOT_LABELED_REASONS,
    SKIPPED_COLUMNS,
    TAIL_COLUMNS,
    UNREADABLE_AT_DECODE,
    UNREADABLE_AT_SCAN,
    PseudoLabelError,
    PseudoLabelTable,
    class_counts,
    file_sha256,
    format_row,
    format_summary,
    header,
    pool_not_labeled,
    prepare_table_output,
    read_pseudo_labels,
    read_skipped,
    sidecar,
    table_files,
    table_problems,
    table_summary,
    write_skipped,
    write_table_manifest,
)

# Every public name of the submodules, so `from pseudolabel.pseudolabels import X` keeps working.
__all__ = [
    "THRESHOLD_RULES", "align_to_prior", "allocate", "class_thresholds", "ineffective_threshold",
    "keep_most_confident", "labeled_prior", "SELECTED_TABLE", "SELECTION_REPORT", "selection_report",
    "check_classes", "DecodedBatch", "PredictedBatch", "batch_starts", "decode_batch", "local_batches",
    "predict_decoded", "ENGINES",
    "EXCLUDED_IN_EARLIER_POOL", "EXCLUDED_LABELED", "EXCLUDED_NEAR_DUPLICATE", "FIXED_COLUMNS", "MODES",
    "NOT_LABELED_REASONS", "PseudoLabelError", "PseudoLabelTable", "SKIPPED_COLUMNS", "TAIL_COLUMNS",
    "UNREADABLE_AT_DECODE", "UNREADABLE_AT_SCAN", "balance_indices", "batch_predictor", "check_shard",
    "class_counts", "describe_selection", "file_sha256", "find_parts", "format_row", "format_summary",
    "hard_targets", "header", "label_pools", "load_classifier", "merge_pseudo_label_parts", "parse_shard",
    "part_path", "pool_not_labeled", "predict_images", "prepare_table_output", "read_pseudo_labels",
    "read_skipped", "select_pseudo_labels", "shard_record", "sidecar", "soft_targets", "stream_predictions",
    "table_files", "table_problems", "table_summary", "unreadable_reasons", "write_selection_report",
    "write_skipped", "write_table_manifest"
]
