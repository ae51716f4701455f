"""The routes and HTML of `pseudolabel serve` (the state lives in `serve.Server`).

Templates are Jinja strings rendered with autoescaping (Flask's `render_template_string`), so
class names and file names from the run cannot inject markup.
"""

from __future__ import annotations

from flask import Response, jsonify, redirect, render_template_string, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from pseudolabel.serve import Server, UploadError
from pseudolabel.thumbnails import data_uri

LAYOUT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} - pseudolabel</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 1.2em auto; padding: 0 1em; color: #222; }
nav a { margin-right: 1.2em; } nav { border-bottom: 2px solid #ddd; padding-bottom: 0.5em; }
.error { background: #fde8e8; border: 1px solid #d55; padding: 0.5em 0.8em; border-radius: 4px; }
.ok { background: #e8f6ea; border: 1px solid #4a4; padding: 0.5em 0.8em; border-radius: 4px; }
.bar { background: #e6e6e6; width: 22em; height: 1.1em; border-radius: 3px; overflow: hidden; display: inline-block;
  vertical-align: middle; }
.bar span { display: block; height: 100%; background: #3a7bd5; }
table.probs td { padding: 0.2em 0.6em; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #ccc; border-radius: 4px; padding: 6px; width: 172px; font-size: 13px; }
.card img { width: 160px; height: 160px; object-fit: contain; background: #f0f0f0; display: block; }
.card form { display: inline; } .card button { margin: 2px 2px 0 0; }
.muted { color: #666; } code { background: #f4f4f4; padding: 0 0.2em; }
img.upload { width: 240px; max-height: 320px; object-fit: contain; border: 1px solid #ccc; display: block; margin-bottom: 0.6em; }
</style></head><body>
<nav><a href="{{ url_for('index') }}">Predict</a><a href="{{ url_for('label_page') }}">Label next</a>
<a href="{{ url_for('report_page') }}">Report</a><a href="{{ url_for('health') }}">Health</a>
<span class="muted">model: {{ run_name }}</span></nav>
{% if message %}<p class="{{ 'error' if error else 'ok' }}">{{ message }}</p>{% endif %}
{{ body | safe }}
</body></html>"""

INDEX = """<h1>What class is this image?</h1>
<form method="post" action="{{ url_for('index') }}" enctype="multipart/form-data">
<input type="file" name="file" accept="image/*" required> <button type="submit">Predict</button>
</form>
<p class="muted">Or from a script: <code>curl -F file=@room.jpg {{ request.host_url }}predict</code></p>
{% if result %}
<h2>{{ result.predicted }} ({{ '%.1f' % (100 * result.confidence) }}%)</h2>
{% if view %}<img class="upload" alt="the uploaded image" src="{{ view }}">{% endif %}
<table class="probs">{% for cls, p in result.probabilities.items() %}
<tr><td>{{ cls }}</td><td><span class="bar"><span style="width: {{ '%.1f' % (100 * p) }}%"></span></span></td>
<td>{{ '%.3f' % p }}</td></tr>{% endfor %}</table>
{% endif %}"""

LABEL = """<h1>Label next: the images the model is least sure of</h1>
{% if not labels_csv %}<p class="error">No labels CSV to write to: start the server with
<code>--labels PATH</code>.</p>{% else %}
<p class="muted">Answers are appended to <code>{{ labels_csv }}</code>; {{ remaining }} pool images are
not labeled yet.</p>{% endif %}
<div class="cards">{% for i, cand in items %}
<div class="card"><img src="{{ url_for('label_image', index=i) }}" alt="pool image {{ i }}" title="{{ cand.name }}">
<div>{{ cand.name.rsplit('/', 1)[-1] }}</div>
<div class="muted">{% for cls, p in zip(classes, cand.probs) %}{{ cls }} {{ '%.2f' % p }}{% if not loop.last %}, {% endif %}{% endfor %}</div>
{% if labels_csv %}{% for cls in classes %}<form method="post" action="{{ url_for('label_answer') }}">
<input type="hidden" name="index" value="{{ i }}"><button name="label" value="{{ cls }}">{{ cls }}</button>
</form>{% endfor %}{% endif %}</div>
{% else %}<p>No pool image left to label{% if not known_pool %} (no pool known: start with --pool DIR){% endif %}.</p>
{% endfor %}</div>"""


BACK = """<p><a href="{{ url_for('index') }}">Back to the start page</a></p>"""


def _page(server: Server, title: str, body: str, status: int = 200, message: str | None = None,
          error: bool = False, **context):
    inner = render_template_string(body, **context)
    html = render_template_string(LAYOUT, title=title, body=inner, message=message, error=error,
                                  run_name=server.run_dir.name)
    return Response(html, status=status, mimetype="text/html")


def _wants_json() -> bool:
    """JSON for the API routes, JSON bodies, and clients that prefer it to HTML (`*/*` gets HTML)."""
    accept = request.accept_mimetypes
    return (request.is_json or request.path in ("/predict", "/health")
            or accept["application/json"] > accept["text/html"])


def _uploaded_bytes() -> bytes:
    upload = request.files.get("file")
    if upload is None:
        raise UploadError(400, "no file: send the image as multipart form field 'file'")
    return upload.read()


def register_views(app, server: Server) -> None:
    """Add every route of the app, bound to `server`."""

    @app.errorhandler(UploadError)
    def refused(err: UploadError):
        if _wants_json():
            return jsonify(error=str(err)), err.status
        body = INDEX if request.path == "/" else BACK
        return _page(server, "Refused", body, err.status, str(err), error=True, result=None, view=None)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        text = err.description or err.name
        if isinstance(err, RequestEntityTooLarge):
            limit = app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
            text = f"the upload is larger than the {limit:g} MB this server accepts"
        if _wants_json():
            return jsonify(error=text), err.code
        return _page(server, err.name, BACK, err.code, text, error=True)

    @app.get("/health")
    def health():
        return jsonify(status="ok", run=str(server.run_dir), classes=server.class_names,
                       image_size=server.image_size, labels_csv=str(server.labels_csv) if server.labels_csv else None)

    @app.post("/predict")
    def predict_api():
        pixels, _ = server.read_upload(_uploaded_bytes())
        return jsonify(server.describe(server.predict_pixels(pixels)))

    @app.route("/", methods=["GET", "POST"])
    def index():
        if request.method == "GET":
            return _page(server, "Predict", INDEX, result=None, view=None)
        pixels, view = server.read_upload(_uploaded_bytes(), keep_view=True)
        result = server.describe(server.predict_pixels(pixels))
        return _page(server, "Prediction", INDEX, result=result, view=data_uri(view) if view else None)

    @app.get("/report")
    def report_page():
        return Response(server.report_html(), mimetype="text/html")

    @app.get("/label")
    def label_page():
        items, remaining = server.next_to_label()
        done = request.args.get("saved")
        return _page(server, "Label next", LABEL, message=f"saved: {done}" if done else None, items=items,
                     remaining=remaining, classes=server.class_names, labels_csv=server.labels_csv,
                     known_pool=bool(server.candidates()), zip=zip)

    @app.post("/label")
    def label_answer():
        values = request.get_json(silent=True) if request.is_json else request.form
        values = values if isinstance(values, dict) or hasattr(values, "get") else {}
        saved = server.record(values.get("index"), values.get("label"))
        if _wants_json():
            return jsonify(saved=saved), 201
        return redirect(url_for("label_page", saved=f"{saved['image']} = {saved['class']}"), code=303)

    @app.get("/label/image/<int:index>")
    def label_image(index: int):
        return Response(server.thumbnail(index), mimetype="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})
