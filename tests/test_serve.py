"""Tests for `pseudolabel serve` (pseudolabel.serve, serve_views, cli/serve) on a tiny trained model."""

import csv
import io
import json
import shutil
import threading
import urllib.request
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("flask")

from pseudolabel.browser import dump_dom, find_browser, screenshot  # noqa: E402
from pseudolabel.cli import main  # noqa: E402
from pseudolabel.config import load_experiment  # noqa: E402
from pseudolabel.data import load_task  # noqa: E402
from pseudolabel.demo import write_demo  # noqa: E402
from pseudolabel.pseudolabels import header, load_classifier, predict_images  # noqa: E402
from pseudolabel.serve import create_app  # noqa: E402
from pseudolabel.teacher import train_teacher  # noqa: E402


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo experiment with a trained tiny teacher in its output folder (as `run` lays it out)."""
    base = tmp_path_factory.mktemp("serve")
    experiment = load_experiment(write_demo(base / "demo", n_labeled=40, n_unlabeled=10, epochs=1))
    run = base / "demo" / "runs" / "round0_teacher"
    train_teacher(experiment.teacher_recipe, load_task(experiment.data.as_task_config()), run)
    return {"run": run, "data": base / "demo" / "data", "pool": base / "demo" / "data" / "Pool"}


@pytest.fixture
def labels(demo, tmp_path):
    """A copy of the demo's labels CSV for one test to write into."""
    path = tmp_path / "labels.csv"
    shutil.copy(demo["data"] / "labels.csv", path)
    return path


@pytest.fixture
def client(demo, labels):
    app = create_app(demo["run"], labels_csv=labels, pools=[demo["pool"]], max_upload_mb=1, max_pixels=4_000_000)
    return app.test_client()


def jpeg(size=(48, 40), color=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def upload(client, data: bytes, url="/predict", **headers):
    return client.post(url, data={"file": (io.BytesIO(data), "x.jpg")}, content_type="multipart/form-data",
                       headers=headers)


def test_health_and_predict_match_the_pipeline(client, demo):
    health = client.get("/health")
    assert health.status_code == 200 and health.json["status"] == "ok"
    assert health.json["classes"] == ["old", "modern"]
    image = sorted(demo["pool"].glob("*.jpg"))[0]
    answer = upload(client, image.read_bytes())
    assert answer.status_code == 200
    probs = answer.json["probabilities"]
    assert list(probs) == ["old", "modern"] and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    model, _, names = load_classifier(demo["run"])
    rows, _ = predict_images(model, [image], class_names=names, progress=False)
    assert probs["modern"] == pytest.approx(rows[0]["p_modern"], abs=1e-5)   # same as `predict`
    assert answer.json["predicted"] == rows[0]["predicted"]


def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_going(client, tmp_path):
    good = jpeg()
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(noisy, "JPEG")
    bomb = io.BytesIO()
    Image.new("1", (4000, 4000)).save(bomb, format="PNG")   # 16 M pixels in a few KB
    big = np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    big_file = io.BytesIO()
    Image.fromarray(big).save(big_file, format="PNG")          # > 1 MB
    cases = [
        (b"hello, not an image", 415, "not a recognised image"),
        (noisy.getvalue()[: len(noisy.getvalue()) // 2], 400, "truncated image data"),
        (b"", 400, "empty"),
        (bomb.getvalue(), 413, "decompression bomb"),
        (big_file.getvalue(), 413, "larger than the 1 MB"),
    ]
    for data, status, words in cases:
        answer = upload(client, data)
        assert answer.status_code == status, (words, answer.json)
        assert words in answer.json["error"]
    missing = client.post("/predict", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "field 'file'" in missing.json["error"]
    page = upload(client, b"not an image", url="/")            # the HTML form gets an HTML page
    assert page.status_code == 415 and page.mimetype == "text/html" and b"not a usable image" in page.data
    assert upload(client, good).status_code == 200


def test_upload_page_shows_the_probabilities(client):
    assert b'type="file"' in client.get("/").data
    page = upload(client, jpeg(), url="/")
    assert page.status_code == 200
    assert page.data.count(b'class="bar"') == 2 and b"data:image/jpeg;base64," in page.data


def test_label_next_lists_least_sure_first_and_appends_raw_labels(client, labels, demo):
    page = client.get("/label")
    assert page.status_code == 200
    server_rows = [line for line in page.data.decode().splitlines() if "/label/image/" in line]
    assert len(server_rows) == 10    # every pool image (fewer than the 12 shown)
    answer = client.post("/label", json={"index": 0, "label": "modern"})
    assert answer.status_code == 201
    first = answer.json["saved"]["image"]
    assert first.startswith("Pool/") and answer.json["saved"]["label"] == "M"   # the raw label, relative name
    with open(labels, newline="") as f:
        assert list(csv.reader(f))[-1] == [first, "M"]
    assert client.post("/label", json={"index": 0, "label": "old"}).status_code == 409   # labeled already
    assert first.encode() not in client.get("/label").data
    form = client.post("/label", data={"index": "1", "label": "old"}, headers={"Accept": "*/*"})
    assert form.status_code == 303 and "/label?saved=" in form.headers["Location"]
    asked = client.post("/label", data={"index": "3", "label": "old"}, headers={"Accept": "application/json"})
    assert asked.status_code == 201 and asked.json["saved"]["label"] == "O"
    assert client.post("/label", json={"index": 2, "label": "purple"}).status_code == 400
    assert client.post("/label", json={"index": 999, "label": "old"}).status_code == 404
    assert client.post("/label", json={"index": "../../etc/passwd", "label": "old"}).status_code == 400


def test_candidates_are_sorted_by_confidence(demo, labels):
    from pseudolabel.serve import Server

    server = Server(demo["run"], labels_csv=labels, pools=[demo["pool"]])
    confidences = [c.confidence for c in server.candidates()]
    assert confidences == sorted(confidences) and len(confidences) == 10
    model, _, names = load_classifier(demo["run"])
    rows, _ = predict_images(model, sorted(demo["pool"].glob("*.jpg")), class_names=names, progress=False)
    assert min(r["confidence"] for r in rows) == pytest.approx(confidences[0], abs=1e-6)


def test_images_only_by_index(client):
    thumb = client.get("/label/image/0")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(thumb.data)) as image:
        assert max(image.size) <= 160
    for url in ("/label/image/10", "/label/image/-1", "/label/image/..%2F..%2Fetc%2Fpasswd",
                "/label/image/%2Fetc%2Fpasswd", "/static/../../etc/passwd", "/report/../labels.csv"):
        answer = client.get(url)
        assert answer.status_code == 404, url
        assert b"root:" not in answer.data


def test_concurrent_answers_through_the_app(client, labels):
    before = labels.read_text().count("\n")
    client.get("/label")                      # build the queue once
    statuses = []

    def answer(i):
        statuses.append(client.post("/label", json={"index": i, "label": "old"}).status_code)

    threads = [threading.Thread(target=answer, args=(i % 10,)) for i in range(20)]   # each image twice
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] * 10 + [409] * 10
    with open(labels, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == before + 10 and all(len(r) == 2 for r in rows)


def test_defaults_come_from_the_experiment(demo, tmp_path):
    from pseudolabel.serve import Server

    student = demo["run"].parent / f"round1_{uuid.uuid4().hex[:6]}"
    shutil.copytree(demo["run"], student)
    pool = sorted(demo["pool"].glob("*.jpg"))[:3]
    with open(student / "pseudo_labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header(["old", "modern"]))
        for p in pool:
            writer.writerow([str(p), "synthetic", "0" * 64, 0.5, 0.5, 0.5, "old"])
    try:
        server = Server(student)
        assert server.labels_csv == (demo["data"] / "labels.csv").resolve()   # the experiment's labels
        assert server.raw_labels == {"old": "O", "modern": "M"}
        assert sorted(c.path for c in server.candidates()) == pool             # the run's own pools
        page = create_app(student).test_client().get("/report")
        assert page.status_code == 200 and b"<h2>Test errors</h2>" in page.data and student.name.encode() in page.data
    finally:
        shutil.rmtree(student)


def test_without_a_labels_csv_the_label_page_says_so(demo, tmp_path):
    lone = tmp_path / "lone"
    shutil.copytree(demo["run"], lone)
    provenance = json.loads((lone / "provenance.json").read_text())
    provenance["data"]["labels"] = None   # a run whose task had no labels CSV (a split only)
    (lone / "provenance.json").write_text(json.dumps(provenance))
    client = create_app(lone).test_client()
    page = client.get("/label")
    assert page.status_code == 200 and b"--labels PATH" in page.data
    assert client.post("/label", json={"index": 0, "label": "old"}).status_code == 409


def test_cli_serve(demo, labels, monkeypatch):
    import flask

    seen = {}
    monkeypatch.setattr(flask.Flask, "run", lambda self, **kw: seen.update(kw, app=self))
    result = CliRunner().invoke(main, ["serve", str(demo["run"]), "--port", "8765", "--labels", str(labels),
                                       "--pool", str(demo["pool"])])
    assert result.exit_code == 0, result.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8765
    assert seen["app"].test_client().get("/health").json["labels_csv"] == str(labels)
    server = seen["app"].extensions["pseudolabel"]
    server.warm_up().join(timeout=120)              # the CLI started it; a second call just waits
    assert server.pool_ready and len(server.candidates()) == 10
    empty = demo["run"].parent / "empty"
    empty.mkdir(exist_ok=True)
    bad = CliRunner().invoke(main, ["serve", str(empty)])
    assert bad.exit_code == 1 and "no such model" in bad.output and "Traceback" not in bad.output


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None, reason="no chromium on PATH")
def test_end_to_end_in_chromium(demo, labels, tmp_path):
    from werkzeug.serving import make_server

    app = create_app(demo["run"], labels_csv=labels, pools=[demo["pool"]])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        body, content_type = _multipart(jpeg())
        request = urllib.request.Request(f"{base}/predict", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert set(json.load(answer)["probabilities"]) == {"old", "modern"}
        dom = dump_dom(f"{base}/label")
        assert dom.count('class="card"') == 10 and "<button" in dom
        assert 'type="file"' in dump_dom(f"{base}/")
        with Image.open(screenshot(f"{base}/label", tmp_path / "label.png", width=900, height=700)) as shot:
            assert np.asarray(shot.convert("RGB")).std() > 10
    finally:
        server.shutdown()
