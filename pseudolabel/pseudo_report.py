"""The per-round pseudo-label part of a comparison (`report.compare_runs`): what every student
round's pseudo-labels looked like, beside the labeled train prior, and, where the pool's truth
was known, how right they were.

From each run directory that trained on pseudo-labels:
- `pseudo_labels_report.json` (the selection report, `pseudolabels.selection`): the predicted
  class share before the threshold, after it (and after the keep fraction) and of the selected
  rows (after balancing, repeated rows counted as trained on), the settings, per-class thresholds
  and notes (a threshold that removes nothing), the labeled train prior;
- `pseudo_quality.json` (`pseudolabels.quality`), when present: accuracy, per-class precision
  and recall and ECE of the pseudo-labels over every pool image with truth and over the selected.

This module gathers them (`pseudo_label_rounds`, JSON-ready, what compare.json holds under
"pseudo_labels") and lays them out as table cells (`share_cells`, `quality_cells`); `report`
renders the cells as Markdown and HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pseudolabel.pseudolabels.quality import BINNING, read_quality
from pseudolabel.pseudolabels.selection import SELECTION_REPORT
from pseudolabel.rundir import read_json

STAGES = (("before", "before threshold"), ("after_threshold", "after threshold"), ("after_keep", "after keep fraction"),
          ("selected", "selected"))

__all__ = ["pseudo_label_rounds", "quality_cells", "share_cells", "section_notes"]


def pseudo_label_rounds(run_paths: Sequence[str | Path], names: Sequence[str]) -> dict | None:
    """{"class_names", "labeled_prior", "rounds": [...]} over the runs that trained on
    pseudo-labels (None when none did)."""
    rounds = []
    for path, name in zip(run_paths, names):
        selection_file = Path(path) / SELECTION_REPORT
        if not selection_file.is_file():
            continue
        selection = read_json(selection_file)
        notes = list(selection.get("notes", []))
        if selection.get("empty_classes"):
            notes.append(f"no pseudo-labels for class(es) {', '.join(selection['empty_classes'])}")
        rounds.append({
            "run": name,
            "settings": selection.get("settings", {}),
            "thresholds": selection.get("thresholds"),
            "notes": notes,
            "labeled_prior": selection.get("labeled_prior"),
            "stages": {key: _share(selection[key]) for key, _ in STAGES if key in selection},
            "target_share": selection.get("selected", {}).get("target_share"),
            "quality": read_quality(path),
        })
    if not rounds:
        return None
    priors = [r["labeled_prior"] for r in rounds if r["labeled_prior"]]
    class_names = list(rounds[0]["stages"]["before"]["share"])
    return {"class_names": class_names, "labeled_prior": priors[0] if priors else None, "rounds": rounds,
            "ece_binning": BINNING}


def _share(counts: dict) -> dict:
    n = counts["n"]
    share = {c: (k / n if n else None) for c, k in counts["per_class"].items()}
    out = {"n": n, "share": share}
    if "unique_images" in counts:
        out["unique_images"] = counts["unique_images"]
    return out


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def describe_settings(settings: dict) -> str:
    """"soft, threshold 0.3 (fixed), balance true" and the non-default rules."""
    parts = [settings.get("mode", "?"), f"threshold {settings.get('threshold')} ({settings.get('threshold_rule', 'fixed')})"]
    if settings.get("keep_fraction", 1.0) < 1:
        parts.append(f"keep {settings['keep_fraction']:g} per class")
    if settings.get("align", "none") != "none":
        parts.append(f"align {settings['align']}")
    balance = settings.get("balance")
    parts.append(f"balance {str(balance).lower() if isinstance(balance, bool) else balance}")
    return ", ".join(parts)


def share_cells(section: dict) -> list[list[str]]:
    """Header + rows: the labeled train prior, then per round the predicted class share at every
    stage (selected: by argmax of the targets, repeated rows counted, and the mean soft target)."""
    names = section["class_names"]
    cells = [["round", "settings", "stage", "rows", *names]]
    prior = section["labeled_prior"]
    cells.append(["labeled train prior", "", "", "", *(_pct(prior.get(c)) if prior else "n/a" for c in names)])
    for r in section["rounds"]:
        for i, (key, label) in enumerate(s for s in STAGES if s[0] in r["stages"]):
            stage = r["stages"][key]
            rows = str(stage["n"]) + (f" ({stage['unique_images']} unique)" if "unique_images" in stage else "")
            cells.append([r["run"] if i == 0 else "", describe_settings(r["settings"]) if i == 0 else "", label, rows,
                          *(_pct(stage["share"].get(c)) for c in names)])
        if r["target_share"]:
            cells.append(["", "", "selected, mean target", "", *(_pct(r["target_share"].get(c)) for c in names)])
    return cells


def quality_cells(section: dict) -> list[list[str]] | None:
    """Header + rows of the rounds with a quality report: accuracy, ECE and per-class precision /
    recall over every pool image with truth and over the selected (None when no round has one)."""
    measured = [r for r in section["rounds"] if r["quality"]]
    if not measured:
        return None
    names = section["class_names"]
    cells = [["round", "images", "n with truth", "accuracy", "ECE",
              *(f"{c}: precision / recall" for c in names)]]
    for r in measured:
        for key, label in (("all", "all pool images"), ("selected", "selected (each once)")):
            q = r["quality"][key]
            accuracy = _fixed(q["accuracy"])
            if key == "selected" and q.get("accuracy_rows") is not None:
                accuracy += f" ({_fixed(q['accuracy_rows'])} over {q['rows']} rows)"
            per_class = [f"{_fixed(q['per_class'][c]['precision'])} / {_fixed(q['per_class'][c]['recall'])}"
                         if q["per_class"] else "" for c in names]
            cells.append([r["run"] if key == "all" else "", label, str(q["n"]), accuracy, _fixed(q["ece"]), *per_class])
    return cells


def _fixed(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def section_notes(section: dict) -> list[str]:
    """The rounds' notes (a threshold that removes nothing, an empty class), one line each."""
    return [f"{r['run']}: {note}" for r in section["rounds"] for note in r["notes"]]
