"""The pseudo-label table format: `image,pool,sha256,p_<class>...,confidence,predicted`, one row
per labeled pool image, and its sidecars: `<table>.skipped.csv` (every file found in the pools and
not labeled: image,pool,reason,detail, reason one of NOT_LABELED_REASONS), `<table>.summary.json`
(rows per pool and predicted class, files not labeled per reason, settings) and, written last,
`<table>.manifest.json` (sha256 and size of the three: a table is finished when it verifies)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.data import DataError
from pseudolabel.rundir import (
    atomic_path,
    clean_stale_temporaries,
    file_sha256,
    read_json,
    verify_manifest,
    write_manifest,
)

FIXED_COLUMNS = ("image", "pool", "sha256")
TAIL_COLUMNS = ("confidence", "predicted")

__all__ = ["EXCLUDED_IN_EARLIER_POOL", "EXCLUDED_LABELED", "EXCLUDED_NEAR_DUPLICATE", "FIXED_COLUMNS",
           "NOT_LABELED_REASONS", "SKIPPED_COLUMNS", "TAIL_COLUMNS", "UNREADABLE_AT_DECODE", "UNREADABLE_AT_SCAN",
           "PseudoLabelError", "PseudoLabelTable", "class_counts", "file_sha256", "format_row", "format_summary",
           "header", "pool_not_labeled", "prepare_table_output", "read_pseudo_labels", "read_skipped", "sidecar", "table_files",
           "table_problems", "table_summary", "write_skipped", "write_table_manifest"]


class PseudoLabelError(DataError):
    """A pseudo-label table that cannot be read or selected from as asked (the CLI shows it cleanly)."""


@dataclass
class PseudoLabelTable:
    """The rows of a pseudo-label table: one readable pool image each, with the teacher's probs."""

    images: list[str]
    pools: list[str]
    sha256: list[str]
    probs: np.ndarray  # [N, K] float32, rows sum to 1
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(axis=1) if len(self) else np.zeros(0, np.float32)

    @property
    def predicted(self) -> np.ndarray:
        """Predicted class index per row."""
        return self.probs.argmax(axis=1) if len(self) else np.zeros(0, np.int64)

    def summary(self) -> dict:
        """Rows per pool and per predicted class (what `label` prints and saves)."""
        return {
            "n": len(self),
            "per_pool": dict(Counter(self.pools)),
            "per_class": {name: int(n) for name, n in zip(self.class_names, class_counts(self.predicted, len(self.class_names)))},
        }


def class_counts(predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows per class index 0..num_classes-1."""
    return np.bincount(np.asarray(predicted, np.int64), minlength=num_classes)[:num_classes]


def header(class_names: Sequence[str]) -> list[str]:
    return [*FIXED_COLUMNS, *(f"p_{c}" for c in class_names), *TAIL_COLUMNS]


def format_row(image: str, pool: str, sha: str, probs: np.ndarray, class_names: Sequence[str]) -> list:
    """One table row of the image's probabilities."""
    k = int(np.argmax(probs))
    # %.9g round-trips float32 exactly, so a re-read table gives the same selection.
    return [image, pool, sha, *(f"{float(p):.9g}" for p in probs), f"{float(probs[k]):.9g}", class_names[k]]


def read_pseudo_labels(path: str | Path) -> PseudoLabelTable:
    """Read a table written by `label_pools`, checked: a table whose manifest does not verify, a
    row cut short or garbled, or fewer rows than its summary counts is a one-line PseudoLabelError."""
    path = Path(path)
    _check_finished(path)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            class_names = _class_names_from_header(path, head)
            rows = [r for r in (_checked_row(path, reader.line_num, r, head, class_names) for r in reader) if r]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such pseudo-label table") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise PseudoLabelError(f"{path}: damaged, not a CSV text file ({e}); delete it and label again") from None
    k = len(class_names)
    probs = np.array([[float(v) for v in r[3:3 + k]] for r in rows], dtype=np.float32).reshape(len(rows), k)
    _check_row_count(path, len(rows))
    return PseudoLabelTable(
        images=[r[0] for r in rows], pools=[r[1] for r in rows], sha256=[r[2] for r in rows],
        probs=probs, class_names=class_names,
    )


def _checked_row(path: Path, line: int, row: list[str], head: list[str], class_names: list[str]) -> list[str]:
    """The row when complete (every field, numeric probabilities, a known predicted class)."""
    if not row:
        return row
    damaged = f"{path}: line {line} is damaged"
    if len(row) != len(head):
        raise PseudoLabelError(f"{damaged}: {len(row)} fields, the header has {len(head)} (a table cut short?)")
    try:
        [float(v) for v in row[3:-1]]
    except ValueError as e:
        raise PseudoLabelError(f"{damaged}: {e}") from None
    if row[-1] not in class_names:
        raise PseudoLabelError(f"{damaged}: predicted class {row[-1]!r} is not one of {class_names}")
    return row


def _check_finished(path: Path) -> None:
    if path.exists() and sidecar(path, "manifest").exists():
        problems = verify_manifest(path.parent, manifest=sidecar(path, "manifest").name)
        if problems:
            raise PseudoLabelError(f"pseudo-label table {path.name}: {problems[0]}; delete it and label again")


def _check_row_count(path: Path, n_rows: int) -> None:
    """Tables without a manifest (older ones) are still checked against their summary's count."""
    summary_path = sidecar(path, "summary")
    if not summary_path.exists():
        return
    expected = read_json(summary_path).get("n")
    if isinstance(expected, int) and expected != n_rows:
        raise PseudoLabelError(f"{path}: damaged: {n_rows} rows, its {summary_path.name} counts {expected} "
                               "(cut short or edited); delete it and label again")


def table_problems(table_path: str | Path) -> list[str]:
    """One line per reason not to reuse the table at `table_path` (empty: it is complete): missing,
    no manifest (unfinished or from an older version), or its manifest does not verify."""
    table_path = Path(table_path)
    if not table_path.exists():
        return [f"{table_path}: missing"]
    manifest = sidecar(table_path, "manifest")
    if not manifest.exists():
        return [f"{table_path}: no {manifest.name} beside it (unfinished, or written by an older version)"]
    return verify_manifest(table_path.parent, manifest=manifest.name)


def table_files(table_path: str | Path) -> list[Path]:
    """The table and the sidecars its manifest covers."""
    table_path = Path(table_path)
    return [table_path, sidecar(table_path, "skipped"), sidecar(table_path, "summary")]


def prepare_table_output(table_path: str | Path) -> None:
    """Before writing the table (holding its lock): forget the finished state of an earlier table
    there (it is about to be replaced) and remove the temporary files a killed writer left."""
    table_path = Path(table_path)
    sidecar(table_path, "manifest").unlink(missing_ok=True)
    names = [p.name for p in table_files(table_path)] + [sidecar(table_path, "manifest").name]
    clean_stale_temporaries(table_path.parent, names=names)


def write_table_manifest(table_path: str | Path) -> Path:
    """`<table>.manifest.json` over the table and its sidecars: written last, it marks the table finished."""
    table_path = Path(table_path)
    return write_manifest(table_path.parent, [p.name for p in table_files(table_path)],
                          manifest=sidecar(table_path, "manifest").name)


def _class_names_from_header(path: Path, head: list[str] | None) -> list[str]:
    if (not head or tuple(head[:3]) != FIXED_COLUMNS or tuple(head[-2:]) != TAIL_COLUMNS
            or not all(h.startswith("p_") for h in head[3:-2]) or len(head) < 7):
        raise PseudoLabelError(
            f"{path}: not a pseudo-label table (expected header image,pool,sha256,p_<class>...,"
            f"confidence,predicted; got {head})")
    return [h[2:] for h in head[3:-2]]


def sidecar(table_path: str | Path, kind: str) -> Path:
    """`pseudo.csv` -> `pseudo.skipped.csv` / `pseudo.summary.json` / `pseudo.pools.json` /
    `pseudo.manifest.json`."""
    table_path = Path(table_path)
    suffix = ".json" if kind in ("summary", "pools", "manifest") else ".csv"
    return table_path.with_name(f"{table_path.stem}.{kind}{suffix}")


# ------------------------------------------------------------------ files not labeled (.skipped.csv)

UNREADABLE_AT_SCAN = "unreadable at scan"
UNREADABLE_AT_DECODE = "unreadable at decode"
EXCLUDED_LABELED = "excluded as labeled"
EXCLUDED_NEAR_DUPLICATE = "excluded as near-duplicate"
EXCLUDED_IN_EARLIER_POOL = "excluded as in an earlier pool"
NOT_LABELED_REASONS = (UNREADABLE_AT_SCAN, UNREADABLE_AT_DECODE, EXCLUDED_LABELED, EXCLUDED_NEAR_DUPLICATE,
                       EXCLUDED_IN_EARLIER_POOL)
SKIPPED_COLUMNS = ("image", "pool", "reason", "detail")


def pool_not_labeled(pool) -> list[tuple[str, str, str, str]]:
    """(image, pool, reason, detail) of the files a pool scan and filter left out (`data.Pool`'s
    `skipped` and `excluded`), in path order."""
    from pseudolabel.data import IN_EARLIER_POOL, LABELED

    def excluded_reason(detail: str) -> str:
        if detail == LABELED:
            return EXCLUDED_LABELED
        return EXCLUDED_IN_EARLIER_POOL if detail.startswith(IN_EARLIER_POOL) else EXCLUDED_NEAR_DUPLICATE

    rows = [(str(p), str(pool.name), UNREADABLE_AT_SCAN, str(d)) for p, d in getattr(pool, "skipped", ())]
    rows += [(str(p), str(pool.name), excluded_reason(str(d)), str(d)) for p, d in getattr(pool, "excluded", ())]
    return sorted(rows)


def write_skipped(out_path: Path, not_labeled: list[tuple]) -> None:
    """`<table>.skipped.csv`: image,pool,reason,detail of every file found and not labeled."""
    with atomic_path(sidecar(out_path, "skipped")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SKIPPED_COLUMNS)
        writer.writerows(not_labeled)


def read_skipped(out_path: Path) -> list[tuple]:
    """The rows of `<table>.skipped.csv` as (image, pool, reason, detail)."""
    path = sidecar(out_path, "skipped")
    if not path.exists():
        raise PseudoLabelError(f"{path}: missing (every table written by label_pools has one)")
    with open(path, newline="") as f:
        rows = [tuple(row) for row in csv.reader(f) if row]
    if rows and rows[0] == ("image", "pool", "reason"):  # older tables listed decode failures only
        return [(image, pool, UNREADABLE_AT_DECODE, detail) for image, pool, detail in rows[1:]]
    if not rows or rows[0] != SKIPPED_COLUMNS or any(len(r) != len(SKIPPED_COLUMNS) for r in rows):
        raise PseudoLabelError(f"{path}: damaged (expected columns {','.join(SKIPPED_COLUMNS)} on every line)")
    return rows[1:]


def table_summary(out_path: Path, class_names: list[str], row_pools: list[str], predicted: np.ndarray,
                  not_labeled: list[tuple], *, tta: str, image_size: int) -> dict:
    """`<table>.summary.json`: rows per pool and predicted class, files not labeled, settings.

    `skipped` counts the unreadable files (at scan or at decode), as the pool lines count them;
    `not_labeled` counts every file not labeled by reason, as `<table>.skipped.csv` lists them.
    """
    reasons = Counter(reason for _, _, reason, _ in not_labeled)
    unreadable = [row for row in not_labeled if row[2] in (UNREADABLE_AT_SCAN, UNREADABLE_AT_DECODE)]
    return {
        "n": len(row_pools),
        "per_pool": dict(Counter(row_pools)),
        "per_class": dict(zip(class_names, np.asarray(predicted).tolist())),
        "skipped": len(unreadable),
        "skipped_per_pool": dict(Counter(pool for _, pool, _, _ in unreadable)),
        "not_labeled": {"total": len(not_labeled), **{reason: reasons[reason] for reason in NOT_LABELED_REASONS}},
        "not_labeled_list": sidecar(out_path, "skipped").name,
        "tta": tta, "image_size": int(image_size), "table": str(out_path),
    }


def format_summary(summary: dict) -> str:
    pools = ", ".join(f"{name}: {n}" for name, n in summary["per_pool"].items()) or "none"
    classes = ", ".join(f"{name}: {n}" for name, n in summary["per_class"].items())
    text = f"pseudo-labeled {summary['n']} images ({pools}); predicted {classes}"
    counts = summary.get("not_labeled")
    if counts is None:  # a summary of an older version
        return text + f"; skipped {summary['skipped']} unreadable -> {summary['table']}"
    excluded = {"labeled": counts[EXCLUDED_LABELED], "near-duplicate": counts[EXCLUDED_NEAR_DUPLICATE],
                "in an earlier pool": counts[EXCLUDED_IN_EARLIER_POOL]}
    return (text + f"; not labeled {counts['total']}: {summary['skipped']} unreadable "
            f"({counts[UNREADABLE_AT_SCAN]} at scan, {counts[UNREADABLE_AT_DECODE]} at decode), "
            f"{sum(excluded.values())} excluded ({', '.join(f'{n} {why}' for why, n in excluded.items())}), "
            f"listed in {summary['not_labeled_list']} -> {summary['table']}")
