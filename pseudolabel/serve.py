"""`pseudolabel serve`: a small web app over one trained run (Flask; the `serve` extra).

    app = create_app("runs/demo/round1_tiny_cnn")      # then app.run() or a WSGI server

Pages: `/` upload an image and see the class probabilities; `/report` the run's visual report
(its experiment's report/visual.html, else one drawn for this run alone); `/label` the pool
images the model is least sure of, where a person picks the class. JSON: `POST /predict` (the
image as multipart field `file`) -> probabilities; `GET /health`; `POST /label` (`index`,
`label`) answers JSON when asked for it.

Safety, since a browser is on the other end:
- uploads are limited by `MAX_CONTENT_LENGTH` (413) and decoded by `images.read_image`, whose
  pixel budget refuses decompression bombs from the header; every bad upload is a 4xx with one
  line saying why, never a crash. The upload goes to a temporary file whose name the server
  makes (never the client's file name) and is deleted after.
- nothing from a request names a file: pool images are served and labeled by their index in
  the list the server built; the report and the labels CSV are the paths given at start.
- answers go to the labels CSV through `labels_file.append_label` (locked, atomic), as the raw
  label of the experiment's class map (`M` for "modern"), so the next `run` reads them.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pseudolabel.images import ImageError, read_image
from pseudolabel.labels_file import LabelsFileError, append_label, read_labeled
from pseudolabel.runinfo import RunContext, pool_image_paths, run_context
from pseudolabel.thumbnails import jpeg_bytes, thumbnail_jpeg

MAX_UPLOAD_MB = 16
MAX_PIXELS = 40_000_000
NEXT_COUNT = 12


class ServeError(ValueError):
    """A run that cannot be served (no model, no class names)."""


class UploadError(ValueError):
    """A request the server refuses: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass
class Candidate:
    """A pool image offered for labeling: its path, its name in the labels CSV, the model's probs."""

    path: Path
    name: str
    probs: np.ndarray

    @property
    def confidence(self) -> float:
        return float(self.probs.max())


class Server:
    """The state behind the app: the model, the run's context, the labeling queue."""

    def __init__(self, run_dir, *, labels_csv=None, image_root=None, pools: Sequence = (),
                 report_dir=None, max_pixels: int = MAX_PIXELS, next_count: int = NEXT_COUNT, model=None,
                 class_names: Sequence[str] | None = None):
        from pseudolabel.evaluation import tta_predictor
        from pseudolabel.pseudolabels import load_classifier

        self.run_dir = Path(run_dir)
        if model is None:
            model, _, recorded = load_classifier(self.run_dir)
            class_names = class_names or recorded
        if not class_names:
            raise ServeError(f"{self.run_dir}: no class names recorded (metrics.json); give class_names")
        self.model, self.class_names = model, [str(c) for c in class_names]
        self.image_size = int(model.input_shape[1])
        self._predict = tta_predictor(model, "none", image_hw=(self.image_size, self.image_size))
        self._predict_lock = threading.Lock()
        self.context: RunContext = run_context(self.run_dir, image_root=image_root, labels_csv=labels_csv)
        self.pools = [Path(p) for p in pools]
        self.report_dir = Path(report_dir) if report_dir else self.run_dir.parent / "report"
        self.max_pixels, self.next_count = int(max_pixels), int(next_count)
        self.raw_labels = raw_label_per_class(self.class_names, self.context)
        self._candidates: list[Candidate] | None = None
        self._candidates_lock = threading.Lock()
        self._report: str | None = None

    # ------------------------------------------------------------------ predicting

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities of one HxWx3 image already at the model's size."""
        batch = np.asarray(pixels, np.float32)[None]
        with self._predict_lock:  # one model, called from the server's threads
            return np.asarray(self._predict(batch))[0]

    def read_upload(self, data: bytes, *, keep_view: bool = False) -> tuple[np.ndarray, bytes | None]:
        """(pixels at the model's size, a JPEG to show or None) of uploaded bytes; UploadError if bad."""
        if not data:
            raise UploadError(400, "the uploaded file is empty")
        fd, tmp = tempfile.mkstemp(prefix="pseudolabel-upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            pixels = read_image(tmp, size=self.image_size, max_pixels=self.max_pixels)
            view = jpeg_bytes(read_image(tmp, max_pixels=self.max_pixels), 320) if keep_view else None
        except ImageError as err:
            raise UploadError(_status_of(err.reason), f"not a usable image: {err.reason}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return pixels, view

    def describe(self, probs: np.ndarray) -> dict:
        k = int(np.argmax(probs))
        return {"classes": self.class_names,
                "probabilities": {c: float(p) for c, p in zip(self.class_names, probs)},
                "predicted": self.class_names[k], "confidence": float(probs[k])}

    # ------------------------------------------------------------------ labeling

    @property
    def labels_csv(self) -> Path | None:
        return self.context.labels_csv

    def candidates(self) -> list[Candidate]:
        """Every pool image with this model's probabilities, least sure first (built once)."""
        with self._candidates_lock:
            if self._candidates is None:
                self._candidates = self._predict_pool(self.pool_paths())
            return self._candidates

    @property
    def pool_ready(self) -> bool:
        """Whether the pool has been predicted (the label-next queue is built)."""
        return self._candidates is not None

    def warm_up(self) -> threading.Thread:
        """Predict the pool in a background thread, so the first visit of /label need not wait."""
        def build():
            try:
                self.candidates()
            except Exception as err:  # noqa: BLE001 -- /label reports it again when visited
                print(f"serve: could not predict the pool for 'label next': {err}")

        thread = threading.Thread(target=build, name="pseudolabel-pool", daemon=True)
        thread.start()
        return thread

    def pool_paths(self) -> list[Path]:
        """--pool folders if given, else the pool images of the run's pseudo-label table, else those
        of its experiment's other rounds."""
        from pseudolabel.data import scan_pool

        if self.pools:
            return [p for folder in self.pools for p in scan_pool(folder).images]
        paths = pool_image_paths(self.run_dir)
        if not paths:
            siblings = sorted(self.run_dir.parent.glob("*/pseudo_labels.csv"))
            paths = pool_image_paths(siblings[-1].parent) if siblings else []
        return [Path(p) for p in paths]

    def _predict_pool(self, paths: list[Path]) -> list[Candidate]:
        from pseudolabel.pseudolabels import predict_images

        if not paths:
            return []
        rows, _ = predict_images(self.model, paths, class_names=self.class_names, progress=False)
        out = [Candidate(Path(r["image"]), self.csv_name(Path(r["image"])),
                         np.array([r[f"p_{c}"] for c in self.class_names])) for r in rows]
        return sorted(out, key=lambda c: c.confidence)

    def csv_name(self, path: Path) -> str:
        """How the labels CSV names an image: relative to the data root when inside it."""
        root = self.context.image_root
        if root is not None:
            try:
                return path.resolve().relative_to(Path(root).resolve()).as_posix()
            except ValueError:
                pass
        return str(path.resolve())

    def next_to_label(self) -> tuple[list[tuple[int, Candidate]], int]:
        """(index, candidate) of the least sure images not labeled yet, and how many remain."""
        labeled = set(read_labeled(self.labels_csv)) if self.labels_csv else set()
        open_ = [(i, c) for i, c in enumerate(self.candidates()) if c.name not in labeled]
        return open_[:self.next_count], len(open_)

    def record(self, index, label) -> dict:
        """Append the answer for candidate `index` to the labels CSV; UploadError if refused."""
        if self.labels_csv is None:
            raise UploadError(409, "no labels CSV: start the server with --labels PATH")
        cand = self.candidate(index)
        if label not in self.raw_labels:
            raise UploadError(400, f"unknown class {label!r}; choose one of {', '.join(self.class_names)}")
        try:
            append_label(self.labels_csv, cand.name, self.raw_labels[label])
        except LabelsFileError as err:
            raise UploadError(409, str(err)) from None
        return {"image": cand.name, "class": label, "label": self.raw_labels[label], "labels_csv": str(self.labels_csv)}

    def candidate(self, index) -> Candidate:
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise UploadError(400, f"index must be an integer, got {index!r}") from None
        candidates = self.candidates()
        if not 0 <= i < len(candidates):
            raise UploadError(404, f"no pool image number {i} (there are {len(candidates)})")
        return candidates[i]

    def thumbnail(self, index) -> bytes:
        cand = self.candidate(index)
        try:
            return thumbnail_jpeg(cand.path, 160)
        except ImageError:
            return jpeg_bytes(np.full((160, 160, 3), 200, np.uint8), 160)

    # ------------------------------------------------------------------ the report

    def report_html(self) -> str:
        """The experiment's visual report if it has one, else one drawn for this run (cached)."""
        from pseudolabel.visual_report import VISUAL_FILE, render_visual_report

        saved = self.report_dir / VISUAL_FILE
        if saved.is_file():
            return saved.read_text(encoding="utf-8")
        if self._report is None:
            self._report = render_visual_report([self.run_dir], image_root=self.context.image_root,
                                                title=f"Run {self.run_dir.name}")
        return self._report


def _status_of(reason: str) -> int:
    if "decompression bomb" in reason:
        return 413
    if "not a recognised image" in reason:
        return 415
    return 400


def raw_label_per_class(class_names: Sequence[str], context: RunContext) -> dict[str, str]:
    """class name -> the raw label the labels CSV uses for it (the first raw label of the class
    map that maps to it; the class name itself when there is no map)."""
    from pseudolabel.data import DataError, resolve_class_map

    raw = {}
    if context.classes is not None:
        try:
            existing = set(read_labeled(context.labels_csv).values()) if context.labels_csv else set()
            mapping = resolve_class_map(context.classes, sorted(existing)).mapping
        except (DataError, LabelsFileError):
            mapping = {}
        for raw_label, name in mapping.items():
            raw.setdefault(name, raw_label)
    return {c: raw.get(c, c) for c in class_names}


def create_app(run_dir, *, max_upload_mb: float = MAX_UPLOAD_MB, **options):
    """The Flask app serving `run_dir`; `options` go to `Server` (labels_csv, image_root, pools,
    report_dir, max_pixels, next_count, model, class_names)."""
    from flask import Flask

    from pseudolabel.serve_views import register_views

    app = Flask("pseudolabel.serve")
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    app.json.sort_keys = False  # probabilities in class order
    server = Server(run_dir, **options)
    app.extensions["pseudolabel"] = server  # the state, for the CLI and tests
    register_views(app, server)
    return app


