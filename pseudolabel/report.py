"""Compare runs evaluated on the same test images: table, paired differences, ROC plot, Markdown/HTML.

Each run directory (rundir.RunDir) holds `provenance.json` (split hash), `config.json`,
`metrics.json` and `test_predictions.csv`. Runs are compared only when they share the split hash
and the exact set of test images with the same labels; every number in the comparison is
recomputed from the predictions with the same seeded resamples, so the rows are scored alike.
The baseline (first run unless named; usually the supervised teacher) is compared with each
other run by the paired AUC difference (paired bootstrap CI; p-value from DeLong's test for two
classes, a paired permutation test of the macro AUC for K classes). Runs trained on
pseudo-labels add a per-round section (`pseudo_report`): predicted class shares beside the labeled
prior and, with pool truth, the pseudo-labels' accuracy and calibration.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel import evaluation as ev
from pseudolabel.model_selection import DEFAULT_MARGIN, choose_by_validation, selection_markdown, selection_sentence
from pseudolabel.pseudo_report import pseudo_label_rounds, quality_cells, section_notes, share_cells
from pseudolabel.rundir import RunDir, atomic_write_json, atomic_write_text, read_json
from pseudolabel.visual_report import VISUAL_FILE, write_visual_report

OUTPUT_FILES = ("compare.md", "compare.html", "roc.png", "compare.json", VISUAL_FILE)


class ReportError(ValueError):
    """Runs that cannot be compared (different splits or test sets, missing files)."""


@dataclass
class LoadedRun:
    name: str
    path: Path
    model: str
    split_hash: str | None
    seed: int | None
    predictions: ev.Predictions
    reported: dict  # metrics.json ({} when absent)


# --------------------------------------------------------------------------- loading and checks


def load_run(run_dir) -> LoadedRun:
    """Read what a comparison needs from a run directory; clear errors for missing pieces."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise ReportError(f"{run.path}: not a directory")
    for required in ("provenance.json", "test_predictions.csv"):
        if not run.exists(required):
            raise ReportError(f"{run.path}: no {required}; is this an evaluated run directory?")
    provenance = run.provenance
    config = run.config if run.exists("config.json") else {}
    return LoadedRun(
        name=run.path.name,
        path=run.path,
        model=model_label(config, run.path.name),
        split_hash=provenance.get("split_hash"),
        seed=provenance.get("seed"),
        predictions=ev.read_predictions(run.file("test_predictions.csv")),
        reported=read_json(run.file("metrics.json")) if run.exists("metrics.json") else {},
    )


def model_label(config: dict, fallback: str) -> str:
    """The backbone named in a run's config (top level first, then one level down), else `fallback`."""
    if isinstance(config.get("backbone"), str):
        return config["backbone"]
    for value in config.values():
        if isinstance(value, dict) and isinstance(value.get("backbone"), str):
            return value["backbone"]
    if isinstance(config.get("model"), str):
        return config["model"]
    return fallback


def check_comparable(runs: Sequence[LoadedRun]) -> None:
    """Refuse runs on different splits, test images, labels or classes."""
    first = runs[0]
    for run in runs[1:]:
        if run.split_hash != first.split_hash:
            raise ReportError(
                f"runs use different splits: {first.path} has split {first.split_hash}, "
                f"{run.path} has {run.split_hash}; compare only runs made on the same split"
            )
        if run.predictions.class_names != first.predictions.class_names:
            raise ReportError(
                f"different classes: {first.path} {first.predictions.class_names}, "
                f"{run.path} {run.predictions.class_names}"
            )
        _check_same_test_set(first, run)


def _check_same_test_set(a: LoadedRun, b: LoadedRun) -> None:
    labels_a, labels_b = _labels_by_image(a), _labels_by_image(b)
    if labels_a.keys() != labels_b.keys():
        only_a = sorted(labels_a.keys() - labels_b.keys())
        only_b = sorted(labels_b.keys() - labels_a.keys())
        raise ReportError(
            f"runs were tested on different images: {len(only_a)} only in {a.path} "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in {b.path} (e.g. {only_b[:3]})"
        )
    disagree = [img for img in labels_a if labels_a[img] != labels_b[img]]
    if disagree:
        raise ReportError(f"{a.path} and {b.path} label {len(disagree)} test images differently (e.g. {disagree[:3]})")


def _labels_by_image(run: LoadedRun) -> dict[str, int]:
    images = run.predictions.images
    if len(set(images)) != len(images):
        raise ReportError(f"{run.path}: test_predictions.csv lists some images more than once")
    return dict(zip(images, run.predictions.y_true.tolist()))


def _aligned_probs(run: LoadedRun, order: Sequence[str]) -> np.ndarray:
    """The run's probability rows in the image order `order`."""
    row_of = {img: i for i, img in enumerate(run.predictions.images)}
    return run.predictions.probs[[row_of[img] for img in order]]


def _unique_names(runs: list[LoadedRun]) -> None:
    """Two runs named alike (runs/a/teacher, runs/b/teacher) get their parent folder prefixed."""
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"


def _order_with_baseline(run_dirs: Sequence, baseline) -> list[Path]:
    paths = [Path(p) for p in run_dirs]
    if baseline is None:
        return paths
    base = Path(baseline)
    matches = [p for p in paths if p.resolve() == base.resolve()] or [p for p in paths if p.name == str(baseline)]
    if not matches:
        return [base] + paths  # a baseline named outside the list joins the comparison
    return [matches[0]] + [p for p in paths if p != matches[0]]


# --------------------------------------------------------------------------- the comparison


def compare_runs(run_dirs: Sequence, out_dir, *, baseline=None, n_resamples: int = 2000, seed: int = 0,
                 image_root=None, margin: float = DEFAULT_MARGIN) -> dict:
    """Compare evaluated runs on their shared test set; write compare.md/.html/.json, roc.png and
    visual.html (visual_report: the images; test images under `image_root`, default: found).

    Baseline = the first run unless `baseline` names one (path or directory name). The report
    also says which model validation picks (`model_selection`, with `margin`). Returns the table
    data (what compare.json holds).
    """
    if not run_dirs:
        raise ReportError("no run directories to compare")
    runs = [load_run(p) for p in _order_with_baseline(run_dirs, baseline)]
    check_comparable(runs)
    _unique_names(runs)
    base = runs[0]
    order = base.predictions.images
    y = base.predictions.y_true
    class_names = base.predictions.class_names
    probs = {run.name: _aligned_probs(run, order) for run in runs}
    pos = positive_index(runs)
    rows = [_row(run, y, probs[run.name], probs[base.name], run is base, pos, n_resamples, seed) for run in runs]
    add_labels_only_differences(rows, y, probs, pos, n_resamples, seed)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roc_path = ev.plot_roc({run.name: (y, probs[run.name]) for run in runs}, out_dir / "roc.png", pos,
                           title=f"Test ROC ({len(y)} images)", n_resamples=n_resamples, seed=seed)
    result = {
        "split_hash": base.split_hash,
        "baseline": base.name,
        "class_names": class_names,
        "positive_class": class_names[_binary_positive(pos)] if len(class_names) == 2 else None,
        "auc": f"ROC AUC of P({class_names[_binary_positive(pos)]})" if len(class_names) == 2
               else "macro one-vs-rest ROC AUC",
        "n_test_images": int(len(y)),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "ci": 0.95,
        "rows": rows,
        "selection": choose_by_validation(rows, margin),
        "pseudo_labels": pseudo_label_rounds([run.path for run in runs], [run.name for run in runs]),
        "files": {name: str(out_dir / name) for name in OUTPUT_FILES},
    }
    atomic_write_text(out_dir / "compare.md", markdown_report(result))
    atomic_write_text(out_dir / "compare.html", html_report(result, roc_path.read_bytes()))
    write_visual_report([run.path for run in runs], out_dir / VISUAL_FILE, names=[run.name for run in runs],
                        image_root=image_root)
    atomic_write_json(out_dir / "compare.json", result)
    return result


def _binary_positive(pos: int | None) -> int:
    return 1 if pos is None else pos


def positive_index(runs: Sequence[LoadedRun]) -> int | None:
    """The positive class the runs reported in metrics.json (`positive_class`); None = the last class."""
    names = runs[0].predictions.class_names
    reported = {r.reported.get("positive_class") for r in runs} - {None}
    if len(names) != 2 or not reported:
        return None
    if len(reported) > 1:
        raise ReportError(f"runs report different positive classes: {sorted(reported)}")
    (positive,) = reported
    if positive not in names:
        raise ReportError(f"reported positive class {positive!r} is not one of {names}")
    return names.index(positive)


def _row(run: LoadedRun, y, probs, base_probs, is_baseline: bool, pos, n_resamples: int, seed: int) -> dict:
    boot = dict(n_resamples=n_resamples, seed=seed, positive_index=pos)
    row = {
        "run": run.name,
        "path": str(run.path),
        "model": run.model,
        "baseline": is_baseline,
        "n": int(len(y)),
        "roc_auc": ev.roc_auc(y, probs, pos),
        "roc_auc_ci": list(ev.bootstrap_ci(y, probs, ev.roc_auc, **boot)),
        "accuracy": ev.accuracy(y, probs),
        "reported_roc_auc": run.reported.get("roc_auc"),
        "val_roc_auc": (run.reported.get("val") or {}).get("roc_auc"),
        "delta_auc": None, "delta_auc_ci": None, "p_value": None, "test": None,
    }
    if not is_baseline:
        paired = ev.paired_auc_difference(y, base_probs, probs, **boot)
        row.update(delta_auc=paired["diff"], delta_auc_ci=[paired["ci_low"], paired["ci_high"]],
                   p_value=paired["p_value"], test=paired["test"])
    return row


LABELS_ONLY_PREFIX = "baseline_labels_only_"   # rounds.labels_only_baseline: a student recipe on the labels alone


def is_student_run(name: str) -> bool:
    """round<N>_... with N >= 1: a student of `rounds`."""
    prefix = name.partition("_")[0]
    return prefix.startswith("round") and prefix[5:].isdigit() and int(prefix[5:]) >= 1


def add_labels_only_differences(rows: list[dict], y, probs: dict, pos, n_resamples: int, seed: int) -> None:
    """Each student row gets `vs_labels_only`: its paired AUC difference to the labels-only control
    (the same recipe without the pool), when the comparison holds one: the pool's own share of a gain."""
    control = next((row["run"] for row in rows if row["run"].startswith(LABELS_ONLY_PREFIX)), None)
    if control is None:
        return
    for row in rows:
        if is_student_run(row["run"]):
            paired = ev.paired_auc_difference(y, probs[control], probs[row["run"]], n_resamples=n_resamples,
                                              seed=seed, positive_index=pos)
            row["vs_labels_only"] = {"run": control, "delta_auc": paired["diff"], "p_value": paired["p_value"],
                                     "delta_auc_ci": [paired["ci_low"], paired["ci_high"]], "test": paired["test"]}


# --------------------------------------------------------------------------- formatting


def _fmt_ci(value: float, ci, signed: bool = False) -> str:
    if signed:
        return format_difference(value, ci)
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def difference_decimals(*values: float) -> int:
    """Decimals that show the largest of `values` with two significant digits (3 to 6 decimals):
    a difference of 0.0004 [-0.0011, +0.0012] must not print as -0.000 [-0.001, +0.001]."""
    largest = max((abs(v) for v in values if v is not None and np.isfinite(v)), default=0.0)
    if largest == 0 or largest >= 0.01:
        return 3
    return int(min(6, 1 - np.floor(np.log10(largest))))


def format_difference(value: float, ci=None) -> str:
    """A signed difference, with its interval when given, in enough digits to read."""
    decimals = difference_decimals(value, *(ci or ()))
    text = f"{value:+.{decimals}f}"
    return text if ci is None else f"{text} [{ci[0]:+.{decimals}f}, {ci[1]:+.{decimals}f}]"


def format_p(p) -> str:
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


TABLE_HEADER = ("run", "model", "test ROC AUC [95% CI]", "accuracy",
                "ΔAUC vs baseline [95% CI]", "p", "n test")


def table_cells(result: dict) -> list[list[str]]:
    """The comparison table as text cells, header first."""
    cells = [list(TABLE_HEADER)]
    for row in result["rows"]:
        delta = "baseline" if row["baseline"] else _fmt_ci(row["delta_auc"], row["delta_auc_ci"], signed=True)
        cells.append([row["run"], row["model"], _fmt_ci(row["roc_auc"], row["roc_auc_ci"]),
                      f"{row['accuracy']:.3f}", delta, "" if row["baseline"] else format_p(row["p_value"]),
                      str(row["n"])])
    return cells


def markdown_table(result: dict) -> str:
    return markdown_cells(table_cells(result))


def markdown_cells(cells: list[list[str]]) -> str:
    """Text cells (header first) as a Markdown table."""
    cells = [[c.replace("|", "\\|") for c in r] for r in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join(" --- " for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines) + "\n"


def html_cells(cells: list[list[str]]) -> str:
    """Text cells (header first) as an HTML table, escaped."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def pseudo_label_blocks(result: dict) -> list[tuple[str, object]]:
    """The per-round pseudo-label section as (kind, content) blocks: "h2" heading, "p" text,
    "table" cells; empty when no run trained on pseudo-labels."""
    section = result.get("pseudo_labels")
    if not section:
        return []
    blocks = [("h2", "Pseudo-labels per round"),
              ("p", "Predicted class share of each round's pseudo-labels at every stage of the selection, "
                    "beside the class share of the labeled train split (rows: pseudo-labeled rows; the "
                    "selected ones after balancing, repeated rows counted; \"mean target\": the mean of the "
                    "targets the student trained on)."),
              ("table", share_cells(section))]
    blocks += [("p", note) for note in section_notes(section)]
    quality = quality_cells(section)
    if quality:
        blocks += [("h2", "Pseudo-label quality (pool images with known truth)"),
                   ("p", "All: the teacher's argmax over every pool image with truth; selected: the images the "
                         "student trained on, each once (in brackets: every repeated row counted), by the argmax of "
                         f"its target. ECE: {section['ece_binning']}. The truth is read only for this report."),
                   ("table", quality)]
    return blocks


def _render_markdown(blocks) -> list[str]:
    out = []
    for kind, content in blocks:
        out += {"h2": [f"## {content}", ""], "p": [content, ""], "table": [markdown_cells(content)]}[kind]
    return out


def _render_html(blocks) -> str:
    return "\n".join({"h2": lambda c: f"<h2>{html.escape(c)}</h2>", "p": lambda c: f"<p>{html.escape(c)}</p>",
                      "table": html_cells}[kind](content) for kind, content in blocks)


def summary_sentences(result: dict) -> list[str]:
    """A short plain-language reading of the table."""
    rows = result["rows"]
    base = rows[0]
    n = result["n_test_images"]
    text = [
        f"All {len(rows)} runs were scored on the same {n} test images (split {result['split_hash']}): "
        f"{result['auc']}, {round(result['ci'] * 100)}% stratified bootstrap intervals "
        f"({result['n_resamples']} resamples, seed {result['seed']}); ΔAUC is paired (same resamples "
        f"for both runs), its p-value from {_test_name(rows)}.",
        f"Baseline {base['run']} ({base['model']}): ROC AUC {_fmt_ci(base['roc_auc'], base['roc_auc_ci'])}.",
    ]
    for row in rows[1:]:
        text.append(f"{row['run']} ({row['model']}): ΔAUC {_fmt_ci(row['delta_auc'], row['delta_auc_ci'], signed=True)}, "
                    f"p {format_p(row['p_value'])}: {_verdict(row)}.")
    for row in rows:
        if "vs_labels_only" in row:
            control = row["vs_labels_only"]
            text.append(f"{row['run']} vs {control['run']} (the same recipe on the labels alone: what the pool "
                        f"added): ΔAUC {_fmt_ci(control['delta_auc'], control['delta_auc_ci'], signed=True)}, "
                        f"p {format_p(control['p_value'])}: {_verdict(control).replace('the baseline', 'it')}.")
    return text


def _test_name(rows: list[dict]) -> str:
    tests = {row["test"] for row in rows[1:] if row.get("test")}
    return " / ".join(sorted(tests)) if tests else "DeLong's test (two classes) or a paired permutation test (K classes)"


def _verdict(row: dict) -> str:
    lo, hi = row["delta_auc_ci"]
    p = row["p_value"]
    significant = (lo > 0 or hi < 0) and (p is None or p < 0.05)
    if not significant:
        return "no clear difference from the baseline on this test set"
    return "better than the baseline" if row["delta_auc"] > 0 else "worse than the baseline"


def markdown_report(result: dict) -> str:
    return "\n".join([
        "# Run comparison", "",
        markdown_table(result),
        *[s + "\n" for s in summary_sentences(result)],
        *selection_markdown(result.get("selection") or {"why": "not computed"}),
        f"Split hash: `{result['split_hash']}`. ROC curves: roc.png.", "",
        *_render_markdown(pseudo_label_blocks(result)),
    ])


def html_report(result: dict, roc_png: bytes) -> str:
    """A self-contained page: the table, the summary and the ROC plot embedded as base64."""
    table = html_cells(table_cells(result))
    sentences = [*summary_sentences(result), selection_sentence(result.get("selection") or {"why": "not computed"})]
    summary = "\n".join(f"<p>{html.escape(s)}</p>" for s in sentences)
    image = base64.b64encode(roc_png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Run comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #eee; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
</style></head>
<body>
<h1>Run comparison</h1>
{table}
{summary}
<p>Split hash: <code>{html.escape(str(result['split_hash']))}</code></p>
<img alt="ROC curves" src="data:image/png;base64,{image}">
{_render_html(pseudo_label_blocks(result))}
</body></html>
"""


# --------------------------------------------------------------------------- console summary


def run_role(run_name: str, model: str) -> str:
    """'teacher, tiny_cnn' / 'student round 2, efficientnet_lite1' / 'fixmatch student round 3, ...'
    / 'labels-only student, tiny_cnn' for the run directories of `rounds` (round0_teacher,
    round<N>_<backbone>, an online student's round<N>_<algorithm>_<backbone>,
    baseline_labels_only_<backbone>); the backbone alone for any other run."""
    if run_name.startswith(LABELS_ONLY_PREFIX):
        return f"labels-only student, {model}"
    prefix, _, rest = run_name.partition("_")
    if prefix.startswith("round") and prefix[5:].isdigit() and rest:
        n = int(prefix[5:])
        algorithm = rest[: -len(model) - 1] if rest.endswith(f"_{model}") else ""
        return f"teacher, {model}" if n == 0 else f"{algorithm} student round {n}, {model}".lstrip()
    return model


def format_results_table(summaries) -> str:
    """An aligned console table of one comparison (a `compare_runs` summary) or of several
    (a list of per-seed summaries of the same runs): every model, its test ROC AUC and its
    difference to the baseline (the teacher), with 95% intervals for one summary and as
    mean ± sd over the seeds for several."""
    summaries = [summaries] if isinstance(summaries, dict) else list(summaries)
    if not summaries:
        raise ReportError("no summaries to tabulate")
    baseline = summaries[0]["baseline"]
    control = next((row["run"] for row in summaries[0]["rows"] if row["run"].startswith(LABELS_ONLY_PREFIX)), None)
    if len(summaries) == 1:
        header = ["run", "model", "test ROC AUC [95% CI]", f"ΔAUC vs {baseline} [95% CI]"]
        body = [[row["run"], run_role(row["run"], row["model"]), _fmt_ci(row["roc_auc"], row["roc_auc_ci"]),
                 "baseline" if row["baseline"] else format_difference(row["delta_auc"], row["delta_auc_ci"])]
                + ([_control_cell([row])] if control else []) for row in summaries[0]["rows"]]
        header += [f"ΔAUC vs {control} [95% CI]"] if control else []
    else:
        header = ["run", "model", "seeds", "test ROC AUC mean ± sd", f"ΔAUC vs {baseline} mean ± sd", "ahead"]
        body = [_seed_cells(name, rows) + ([_control_cell(rows)] if control else [])
                for name, rows in _rows_by_run(summaries).items()]
        header += [f"ΔAUC vs {control} mean ± sd, ahead"] if control else []
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def _control_cell(rows: list[dict]) -> str:
    """A student's difference to the labels-only control: with its 95% interval for one seed,
    mean ± sd and wins over several; blank for the other runs."""
    deltas = [row["vs_labels_only"] for row in rows if "vs_labels_only" in row]
    if not deltas:
        return ""
    if len(deltas) == 1:
        return format_difference(deltas[0]["delta_auc"], deltas[0]["delta_auc_ci"])
    values = np.array([d["delta_auc"] for d in deltas], float)
    decimals = difference_decimals(values.mean(), _sd(values))
    return f"{values.mean():+.{decimals}f} ± {_sd(values):.{decimals}f}, {int((values > 0).sum())}/{len(values)}"


def _rows_by_run(summaries: list[dict]) -> dict[str, list[dict]]:
    by_run: dict[str, list[dict]] = {}
    for summary in summaries:
        for row in summary["rows"]:
            by_run.setdefault(row["run"], []).append(row)
    return by_run


def _seed_cells(name: str, rows: list[dict]) -> list[str]:
    auc = np.array([r["roc_auc"] for r in rows], float)
    cells = [name, run_role(name, rows[0]["model"]), str(len(rows)), f"{auc.mean():.3f} ± {_sd(auc):.3f}"]
    deltas = np.array([r["delta_auc"] for r in rows if not r["baseline"]], float)
    if len(deltas) == 0:
        return cells + ["baseline", ""]
    decimals = difference_decimals(deltas.mean(), _sd(deltas))
    return cells + [f"{deltas.mean():+.{decimals}f} ± {_sd(deltas):.{decimals}f}",
                    f"{int((deltas > 0).sum())}/{len(deltas)}"]


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0
