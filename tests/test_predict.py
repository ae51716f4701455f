import csv
import json

from click.testing import CliRunner
from PIL import Image

from pseudolabel.cli import main
from pseudolabel.config import load_experiment
from pseudolabel.demo import write_demo
from pseudolabel.pseudolabels import load_classifier, predict_images
from pseudolabel.teacher import train_teacher
from pseudolabel.data import load_task


def _teacher_run(tmp_path):
    experiment = load_experiment(write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=8, epochs=1))
    task = load_task(experiment.data.as_task_config())
    run = tmp_path / "teacher"
    train_teacher(experiment.teacher_recipe, task, run)
    return run, tmp_path / "demo" / "data" / "Pool"


def test_predict_api_and_cli(tmp_path):
    run, pool = _teacher_run(tmp_path)
    model, model_file, names = load_classifier(run)
    assert model_file == run / "model.keras" and names == ["old", "modern"]

    images = sorted(pool.glob("*.jpg"))
    (pool / "broken.jpg").write_bytes(b"not a jpeg")
    rows, skipped = predict_images(model, [*images, pool / "broken.jpg"], class_names=names, progress=False)
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert all(abs(r["p_old"] + r["p_modern"] - 1) < 1e-5 for r in rows)
    assert all(r["predicted"] == ("modern" if r["p_modern"] > r["p_old"] else "old") for r in rows)
    assert [s[0] for s in skipped] == [str(pool / "broken.jpg")]

    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(main, ["predict", str(run), str(pool), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(images) and set(table[0]) == {"image", "p_old", "p_modern", "predicted", "confidence"}
    assert "broken.jpg" in result.output  # listed as skipped

    out_json = tmp_path / "pred.json"
    result = CliRunner().invoke(main, ["predict", str(run / "model.keras"), str(images[0]), "--out", str(out_json),
                                       "--tta", "flip"])
    assert result.exit_code == 0, result.output
    assert json.loads(out_json.read_text())[0]["image"] == str(images[0])


def test_predict_refuses_wrong_class_count(tmp_path):
    run, pool = _teacher_run(tmp_path)
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    result = CliRunner().invoke(main, ["predict", str(run), str(img), "--classes", "a,b,c"])
    assert result.exit_code != 0 and "predicts 2 classes" in result.output
