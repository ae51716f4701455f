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


def _tiny_model_file(path):
    from pseudolabel.backbones import create_model
    from pseudolabel.training import save_model

    return save_model(create_model("tiny_cnn", 2, image_size=32, weights=None), path)


def test_load_classifier_names_a_damaged_model_file(tmp_path):
    import pytest

    from pseudolabel.pseudolabels import PseudoLabelError

    model_file = _tiny_model_file(tmp_path / "run" / "model.keras")
    assert load_classifier(tmp_path / "run")[1] == model_file
    whole = model_file.read_bytes()
    damages = {"truncated": whole[: len(whole) // 2], "empty": b"", "garbage": b"\x00garbage" * 100,
               "bad member": whole.replace(b"config.json", b"config.jsoX")}
    for what, content in damages.items():
        model_file.write_bytes(content)
        with pytest.raises(PseudoLabelError) as err:
            load_classifier(tmp_path / "run")
        message = str(err.value)
        assert message.startswith(f"{model_file}: damaged"), (what, message)
        assert "\n" not in message and "File not found" not in message


def test_load_classifier_checks_the_run_manifest(tmp_path):
    import pytest

    from pseudolabel.pseudolabels import PseudoLabelError
    from pseudolabel.rundir import write_manifest

    model_file = _tiny_model_file(tmp_path / "run" / "model.keras")
    write_manifest(tmp_path / "run", ["model.keras"])
    load_classifier(tmp_path / "run")
    other = _tiny_model_file(tmp_path / "other.keras")  # a whole, loadable model: but not this run's
    model_file.write_bytes(other.read_bytes())
    with pytest.raises(PseudoLabelError, match="model.keras: damaged"):
        load_classifier(tmp_path / "run")


def test_cli_predict_on_a_damaged_model_is_one_line(tmp_path):
    model_file = _tiny_model_file(tmp_path / "model.keras")
    model_file.write_bytes(model_file.read_bytes()[:500])
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(img)
    result = CliRunner().invoke(main, ["predict", str(model_file), str(img)])
    assert result.exit_code == 1 and "damaged" in result.output
    assert len(result.output.strip().splitlines()) == 1
