"""A report to look at: one self-contained HTML page with the images in it (visual.html).

Beside the tables of `report.compare_runs`, for the same run directories:
- the runs: kind, backbone, seed and label budget (train / val / test / pseudo-labeled images);
- per round (a run with `pseudo_labels.csv`, the previous model's labels for its pools): the pool
  images the teacher was most sure of per class, the least sure, and those whose label flipped
  since the previous round's table;
- the predicted class share of the pools per round (a plot);
- the training curves of every run (its curves.png, else drawn from history.csv);
- per run, the test confusion matrix and the misclassified test images.

Images are embedded as small base64 JPEG thumbnails (`thumbnails`), so the page needs no other
file. Test image names are relative to the data root, found by `runinfo.find_image_root`; a
missing image is a grey placeholder. A missing piece (no table: the teacher, the probe; no
history) leaves its section out or says so; a section that fails anyway is replaced by a note,
so the report never stops a comparison.
"""

from __future__ import annotations

import html
import io
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pseudolabel import evaluation as ev
from pseudolabel.rundir import atomic_write_text, read_json
from pseudolabel.runinfo import find_image_root, resolve_image
from pseudolabel.thumbnails import ThumbnailCache, data_uri

VISUAL_FILE = "visual.html"


@dataclass
class RunView:
    """What the page shows of one run directory; absent pieces are None / {}."""

    name: str
    path: Path
    provenance: dict
    metrics: dict
    config: dict
    predictions: ev.Predictions | None
    table: object | None  # pseudolabels.PseudoLabelTable
    problems: list[str] = field(default_factory=list)


def load_view(run_dir, name: str | None = None) -> RunView:
    """Read what the page shows of a run; an unreadable file counts as absent and is named in `problems`."""
    from pseudolabel.pseudolabels import read_pseudo_labels

    path = Path(run_dir)
    problems: list[str] = []
    table = _optional(path / "pseudo_labels.csv", read_pseudo_labels, problems)
    predictions = _optional(path / "test_predictions.csv", ev.read_predictions, problems)
    return RunView(name or path.name, path, _json_or_empty(path / "provenance.json"),
                   _json_or_empty(path / "metrics.json"), _json_or_empty(path / "config.json"), predictions, table,
                   problems)


def _optional(path: Path, reader, problems: list[str]):
    if not path.exists():
        return None
    try:
        return reader(path)
    except (ValueError, OSError) as err:  # PseudoLabelError and EvaluationError are ValueErrors
        problems.append(f"{path.name} left out: {err}")
        return None


def _json_or_empty(path: Path) -> dict:
    try:
        value = read_json(path)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_visual_report(run_dirs: Sequence, path, *, names: Sequence[str] | None = None,
                        image_root=None, **options) -> Path:
    """Render `render_visual_report` into `path` (atomically); returns the path."""
    return atomic_write_text(path, render_visual_report(run_dirs, names=names, image_root=image_root, **options))


def render_visual_report(run_dirs: Sequence, *, names: Sequence[str] | None = None, image_root=None,
                         thumb_size: int = 96, per_group: int = 8, max_images: int = 24,
                         title: str = "Runs, with their images") -> str:
    """The whole page as a string. `names` label the runs (default: folder names); `image_root`
    is the data root test image names are relative to (default: found by `runinfo`)."""
    names = list(names) if names else [None] * len(run_dirs)
    views = [load_view(p, n) for p, n in zip(run_dirs, names)]
    root = find_image_root([v.path for v in views], explicit=image_root)
    thumbs = ThumbnailCache(thumb_size)
    sections = [
        ("Runs", lambda: runs_section(views, root)),
        ("Pseudo-labels per round", lambda: rounds_section(views, thumbs, per_group, max_images)),
        ("Predicted class share of the pools", lambda: share_section(views)),
        ("Training curves", lambda: curves_section(views)),
        ("Test errors", lambda: errors_section(views, thumbs, root, max_images)),
    ]
    body = "\n".join(_section(heading, build) for heading, build in sections)
    return PAGE.format(title=html.escape(title), style=STYLE, body=body)


def _section(heading: str, build: Callable[[], str]) -> str:
    try:
        content = build()
    except Exception as err:  # noqa: BLE001 -- one broken piece must not lose the rest of the page
        warnings.warn(f"visual report: section '{heading}' left out: {type(err).__name__}: {err}")
        content = f'<p class="note">This section could not be drawn: {html.escape(f"{type(err).__name__}: {err}")}</p>'
    return f"<section><h2>{html.escape(heading)}</h2>\n{content}\n</section>"


# --------------------------------------------------------------------------- pieces of HTML


def figure(uri: str | None, caption: str, tooltip: str = "", css: str = "") -> str:
    """A thumbnail with a caption; a grey placeholder when the image is missing or unreadable."""
    tip = html.escape(tooltip, quote=True)
    if uri is None:
        picture = f'<div class="missing" title="{tip}">image not found</div>'
    else:
        picture = f'<img src="{uri}" alt="{tip}" title="{tip}">'
    return f'<figure class="thumb {css}">{picture}<figcaption>{caption}</figcaption></figure>'


def gallery(figures: Sequence[str], empty: str = "none") -> str:
    if not figures:
        return f'<p class="note">{html.escape(empty)}</p>'
    return '<div class="gallery">' + "".join(figures) + "</div>"


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _short(path: str) -> str:
    return html.escape(Path(path).name)


# --------------------------------------------------------------------------- sections


BUDGET_KEYS = ("train", "val", "test", "pseudo_labeled", "pseudo_unique")


def runs_section(views: Sequence[RunView], root: Path | None) -> str:
    """Kind, backbone, seed and the label budget of each run."""
    rows = []
    for v in views:
        n_images = v.metrics.get("n_images") if isinstance(v.metrics.get("n_images"), dict) else {}
        rows.append([v.name, v.metrics.get("kind") or v.config.get("kind") or v.config.get("role", ""),
                     v.metrics.get("backbone") or _backbone(v.config),
                     _text(v.provenance.get("seed", v.metrics.get("seed"))),
                     *(_text(n_images.get(k)) for k in BUDGET_KEYS)])
    header = ["run", "kind", "backbone", "seed", "train", "val", "test", "pseudo-labeled rows", "unique pool images"]
    where = f"Test images read from <code>{html.escape(str(root))}</code>." if root else \
        '<span class="note">The data root of the test images was not found; they show as placeholders.</span>'
    problems = "".join(f'<p class="note">{html.escape(v.name)}: {html.escape(text)}</p>'
                       for v in views for text in v.problems)
    return table_html(header, rows) + f"<p>{where}</p>" + problems


def _backbone(config: dict) -> str:
    model = config.get("model")
    return str(model.get("backbone", "")) if isinstance(model, dict) else ""


def _text(value) -> str:
    return "" if value is None else str(value)


def rounds_with_tables(views: Sequence[RunView]) -> list[tuple[RunView, RunView | None]]:
    """(run with a pseudo-label table, the previous such run or None), in report order."""
    out, previous = [], None
    for v in views:
        if v.table is not None:
            out.append((v, previous))
            previous = v
    return out


def rounds_section(views, thumbs: ThumbnailCache, per_group: int, max_images: int) -> str:
    rounds = rounds_with_tables(views)
    if not rounds:
        return '<p class="note">No run here has a pseudo-label table (teachers and probes have none).</p>'
    parts = []
    for view, previous in rounds:
        table = view.table
        parts.append(f"<h3>{html.escape(view.name)}: the labels it trained on "
                     f"({_count(len(table), 'pool image')})</h3>")
        for k, cls in enumerate(table.class_names):
            parts.append(f"<h4>Most sure: {html.escape(cls)}</h4>" +
                         gallery(_pool_figures(table, most_sure(table, k, per_group), thumbs),
                                 f"no pool image was labeled {cls}"))
        parts.append("<h4>Least sure</h4>" + gallery(_pool_figures(table, least_sure(table, per_group), thumbs)))
        parts.append(_flips_html(view, previous, thumbs, max_images))
    return "\n".join(parts)


def most_sure(table, k: int, n: int) -> list[int]:
    """Rows predicted as class k, most confident first (at most n)."""
    rows = np.flatnonzero(table.predicted == k)
    return rows[np.argsort(-table.probs[rows, k], kind="stable")][:n].tolist()


def least_sure(table, n: int) -> list[int]:
    return np.argsort(table.confidence, kind="stable")[:n].tolist()


def flipped(table, previous_table) -> list[tuple[int, int]]:
    """(row in table, row in previous_table) of the images whose predicted class changed."""
    row_of = {image: i for i, image in enumerate(previous_table.images)}
    pred, prev_pred = table.predicted, previous_table.predicted
    return [(i, row_of[img]) for i, img in enumerate(table.images)
            if img in row_of and pred[i] != prev_pred[row_of[img]]]


def _pool_figures(table, rows: Sequence[int], thumbs: ThumbnailCache) -> list[str]:
    figures = []
    for i in rows:
        cls = table.class_names[int(table.predicted[i])]
        caption = f"{html.escape(cls)} {table.confidence[i]:.2f}<br><small>{_short(table.images[i])}</small>"
        figures.append(figure(thumbs.uri(table.images[i]), caption, table.images[i]))
    return figures


def _flips_html(view: RunView, previous: RunView | None, thumbs: ThumbnailCache, max_images: int) -> str:
    if previous is None:
        return '<h4>Flipped since the previous round</h4><p class="note">The first round: nothing to compare with.</p>'
    now, before = view.table, previous.table
    if list(now.class_names) != list(before.class_names):
        return '<h4>Flipped since the previous round</h4><p class="note">The rounds have different classes.</p>'
    pairs = flipped(now, before)
    pairs.sort(key=lambda pair: -float(now.confidence[pair[0]]))
    figures = []
    for i, j in pairs[:max_images]:
        old_cls, new_cls = before.class_names[int(before.predicted[j])], now.class_names[int(now.predicted[i])]
        caption = (f"{html.escape(old_cls)} {before.confidence[j]:.2f} &rarr; {html.escape(new_cls)} "
                   f"{now.confidence[i]:.2f}<br><small>{_short(now.images[i])}</small>")
        figures.append(figure(thumbs.uri(now.images[i]), caption, now.images[i], "flip"))
    shown = f" (the {max_images} most confident shown)" if len(pairs) > max_images else ""
    return (f"<h4>Flipped since {html.escape(previous.name)}: {_count(len(pairs), 'image')}{shown}</h4>" +
            gallery(figures, "no pool image changed its label"))


def class_shares(views: Sequence[RunView]) -> tuple[list[str], list[str], np.ndarray]:
    """(round names, class names, [rounds, classes] share of pool images predicted per class)."""
    rounds = [v for v, _ in rounds_with_tables(views)]
    if not rounds:
        return [], [], np.zeros((0, 0))
    names = list(rounds[0].table.class_names)
    rounds = [v for v in rounds if list(v.table.class_names) == names]
    counts = np.array([np.bincount(v.table.predicted, minlength=len(names))[:len(names)] for v in rounds], float)
    return [v.name for v in rounds], names, counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def share_section(views: Sequence[RunView]) -> str:
    rounds, classes, shares = class_shares(views)
    if not rounds:
        return '<p class="note">No pseudo-label tables, so no class shares.</p>'
    rows = [[r, *(f"{s:.1%}" for s in share)] for r, share in zip(rounds, shares)]
    png = share_plot(rounds, classes, shares)
    return (f'<img class="plot" alt="predicted class share per round" src="{data_uri(png, "image/png")}">'
            + table_html(["round", *classes], rows, "narrow"))


def share_plot(rounds: Sequence[str], classes: Sequence[str], shares: np.ndarray) -> bytes:
    """Stacked horizontal bars, one per round: the share of pool images predicted per class."""
    fig, ax = _figure(7.0, 0.6 + 0.45 * len(rounds))
    left = np.zeros(len(rounds))
    y = np.arange(len(rounds))[::-1]
    for k, cls in enumerate(classes):
        ax.barh(y, shares[:, k], left=left, label=cls, color=f"C{k}")
        for yi, l, s in zip(y, left, shares[:, k]):
            if s >= 0.08:
                ax.text(l + s / 2, yi, f"{s:.0%}", ha="center", va="center", color="white", fontsize=9)
        left += shares[:, k]
    ax.set_yticks(y, list(rounds))
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of pool images predicted")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return _png(fig)


def _figure(width: float, height: float):
    # Object-oriented matplotlib (no pyplot): no global backend state touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def curves_png(run_dir: Path) -> bytes | None:
    """The run's curves.png, else a plot of its history.csv, else None (the probe; a run of no epoch)."""
    if (run_dir / "curves.png").is_file():
        return (run_dir / "curves.png").read_bytes()
    if not ev.has_epochs(run_dir / "history.csv"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return ev.plot_history(run_dir / "history.csv", Path(tmp) / "curves.png").read_bytes()


def curves_section(views: Sequence[RunView]) -> str:
    parts = []
    for v in views:
        png = curves_png(v.path)
        picture = (f'<img class="plot curves" alt="training curves of {html.escape(v.name)}" '
                   f'src="{data_uri(png, "image/png")}">' if png else
                   '<p class="note">No training history (a probe, or a run that has not trained).</p>')
        parts.append(f"<h3>{html.escape(v.name)}</h3>{picture}")
    return "\n".join(parts)


def confusion_matrix(y_true: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(predicted, int)), 1)
    return matrix


def confusion_html(matrix: np.ndarray, classes: Sequence[str]) -> str:
    """The matrix as a table, cells shaded by their share of the true class's row."""
    head = "<th>true \\ predicted</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = []
    for t, cls in enumerate(classes):
        total = max(int(matrix[t].sum()), 1)
        cells = []
        for p in range(len(classes)):
            share = matrix[t, p] / total
            tone = "good" if t == p else "bad"
            cells.append(f'<td class="{tone}" style="--share:{share:.3f}">{matrix[t, p]}</td>')
        rows.append(f"<tr><th>{html.escape(cls)}</th>{''.join(cells)}</tr>")
    return f'<table class="confusion"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def errors_section(views: Sequence[RunView], thumbs: ThumbnailCache, root: Path | None, max_images: int) -> str:
    parts = []
    for v in views:
        parts.append(f"<h3>{html.escape(v.name)}</h3>")
        if v.predictions is None:
            parts.append('<p class="note">No test_predictions.csv.</p>')
            continue
        p = v.predictions
        predicted = p.probs.argmax(axis=1)
        wrong = np.flatnonzero(predicted != p.y_true)
        wrong = wrong[np.argsort(-p.probs[wrong, predicted[wrong]], kind="stable")]  # surest mistakes first
        figures = []
        for i in wrong[:max_images]:
            caption = (f"true {html.escape(p.class_names[p.y_true[i]])}, predicted "
                       f"{html.escape(p.class_names[predicted[i]])} {p.probs[i, predicted[i]]:.2f}"
                       f"<br><small>{_short(p.images[i])}</small>")
            figures.append(figure(thumbs.uri(resolve_image(p.images[i], root)), caption, p.images[i], "error"))
        shown = f"; the {max_images} surest shown" if len(wrong) > max_images else ""
        parts.append(confusion_html(confusion_matrix(p.y_true, predicted, len(p.class_names)), p.class_names))
        parts.append(f"<h4>Misclassified: {len(wrong)} of {_count(len(p.images), 'test image')}{shown}</h4>" +
                     gallery(figures, "no test image is misclassified"))
    return "\n".join(parts)


# --------------------------------------------------------------------------- the page


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72em; margin: 1.5em auto; padding: 0 1em; color: #222; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
h3 { margin: 1.2em 0 0.3em; } h4 { margin: 0.8em 0 0.3em; font-weight: 600; color: #444; }
table { border-collapse: collapse; margin: 0.4em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
table.narrow td { text-align: right; }
.note { color: #666; font-style: italic; }
code { background: #f4f4f4; padding: 0 0.2em; }
.gallery { display: flex; flex-wrap: wrap; gap: 6px; }
figure.thumb { margin: 0; width: 104px; font-size: 11px; text-align: center; }
figure.thumb img, figure.thumb .missing { width: 96px; height: 96px; object-fit: contain;
  background: #f0f0f0; border: 3px solid #ccc; border-radius: 3px; image-rendering: auto; }
figure.thumb .missing { display: flex; align-items: center; justify-content: center; color: #888;
  box-sizing: content-box; }
figure.flip img { border-color: #e0a000; } figure.error img { border-color: #c33; }
figcaption { line-height: 1.25; overflow-wrap: anywhere; }
img.plot { max-width: 100%; display: block; margin: 0.4em 0; }
img.curves { max-width: 56em; }
table.confusion td { text-align: center; min-width: 3em; }
table.confusion td.good { background: rgba(40, 150, 60, calc(var(--share) * 0.6)); }
table.confusion td.bad { background: rgba(200, 40, 40, calc(var(--share) * 0.6)); }
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body>
<h1>{title}</h1>
{body}
</body></html>
"""
