"""Online students end to end on the tiny demo data: the run, its per-epoch statistics, the
`student` command without --pseudo, and an experiment mixing Noisy Student and online rounds."""

from __future__ import annotations

import csv
import json
import re

import keras
import pytest
from click.testing import CliRunner

from pseudolabel.cli import main
from pseudolabel.config import load_experiment, load_recipe
from pseudolabel.demo import write_demo

ONLINE = """algorithm = "{name}"
# The demo student's model and schedule, trained online.
[model]
backbone = "tiny_cnn"
image_size = 32
weights = "none"
dropout = 0.3

[train]
batch_size = 8
epochs = 2
lr = 3e-3
patience = 4

[noise]
randaugment_magnitude = 5
"""


@pytest.fixture
def demo(tmp_path):
    """The tiny demo (40 labeled, 30 pool images with truth): its experiment file and recipes folder."""
    experiment = write_demo(tmp_path / "demo", n_labeled=40, n_unlabeled=30, epochs=1)
    return experiment, tmp_path / "demo" / "recipes"


def online_recipe(recipes, name, table=""):
    path = recipes / f"{name}.toml"
    text = ONLINE.format(name=name)
    if table:   # the table form: [algorithm] with its name, instead of the one-line key
        text = text.replace(f'algorithm = "{name}"\n', "") + f'\n[algorithm]\nname = "{name}"\n{table}'
    path.write_text(text)
    return path


def history(run_dir):
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_online_student_trains_from_labels_and_pools_and_logs_its_pseudo_labels(demo, tmp_path):
    from pseudolabel.data import load_task, read_truth
    from pseudolabel.online_student import train_online_student

    experiment_file, recipes = demo
    experiment = load_experiment(experiment_file)
    recipe = load_recipe(online_recipe(recipes, "fixmatch", "mu = 2.0\nthreshold = 0.6\nema_decay = 0.9\n"), "student")
    task = load_task(experiment.data.as_task_config())
    truth = read_truth([experiment.pools[0].truth], task.class_map.names)
    run_dir = tmp_path / "fixmatch"
    metrics = train_online_student(recipe, task, experiment.pools, run_dir, truth=truth, verbose=0)

    assert metrics["kind"] == "online_student" and metrics["algorithm"]["name"] == "fixmatch"
    assert metrics["n_images"]["unlabeled"] == 30 and metrics["batches"]["unlabeled_batch"] == 2 * 8
    assert metrics["ema_weights"] is True and len(metrics["thresholds"]) == 2
    assert (run_dir / "pools.json").exists() and not (run_dir / "backup").exists()
    rows = history(run_dir)
    assert len(rows) == 2
    for column in ("loss", "labeled_loss", "unlabeled_loss", "lambda_u", "above_threshold", "above_threshold_old",
                   "above_threshold_modern", "threshold_old", "pseudo_labeled_images", "pseudo_accuracy",
                   "pseudo_accuracy_modern", "pseudo_with_truth", "val_loss"):
        assert column in rows[0], column
    for row in rows:
        shares = float(row["above_threshold_old"]) + float(row["above_threshold_modern"])
        assert shares == pytest.approx(float(row["above_threshold"]), abs=1e-5)
        assert 0 <= int(row["pseudo_with_truth"]) <= int(row["pseudo_labeled_images"]) <= 30
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algorithm"]["name"] == "fixmatch" and [p["name"] for p in config["pools"]] == ["synthetic"]
    assert "truth" not in config["pools"][0]   # the truth reaches no config (and no training)
    student = keras.models.load_model(run_dir / "model.keras")
    assert student.name == "tiny_cnn_classifier"
    assert train_online_student(recipe, task, experiment.pools, run_dir, truth=truth) == metrics   # finished: reported
    # Without truth the same run trains the same way (the truth only measures), minus its columns.
    plain = tmp_path / "plain"
    train_online_student(recipe, task, experiment.pools, plain, verbose=0)
    assert "pseudo_accuracy" not in history(plain)[0]
    for a, b in zip(rows, history(plain)):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)


@pytest.mark.parametrize("name, table", [("pseudo_label", ""), ("flexmatch", "threshold = 0.7\nmu = 1.0\n"),
                                         ("freematch", "threshold_momentum = 0.9\nwarmup_steps = 3\nfairness_weight = 0.01\n")])
def test_every_online_algorithm_runs_from_the_student_command(demo, tmp_path, name, table):
    experiment_file, recipes = demo
    out = tmp_path / name
    result = CliRunner().invoke(main, ["student", "--recipe", str(online_recipe(recipes, name, table)),
                                       "--experiment", str(experiment_file), "--out", str(out),
                                       "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["algorithm"]["name"] == name and "test ROC AUC" in result.output
    assert "pseudo_accuracy" in history(out)[0]   # the demo pool's truth, from the experiment
    assert ("fairness_loss" in history(out)[0]) == ("fairness_weight" in table)


def test_student_command_says_what_each_kind_of_recipe_needs(demo, tmp_path):
    experiment_file, recipes = demo
    fixmatch = online_recipe(recipes, "fixmatch")
    noisy = recipes / "student.toml"
    table = tmp_path / "table.csv"
    table.write_text("image\n")
    cases = [
        (["--recipe", noisy, "--experiment", experiment_file], "algorithm 'noisy_student' trains on a pseudo-label "
                                                               "table: give --pseudo TABLE"),
        (["--recipe", fixmatch, "--experiment", experiment_file, "--pseudo", table], "drop --pseudo"),
        (["--recipe", fixmatch, "--experiment", experiment_file, "--threshold", "0.5"],
         "--threshold: for a pseudo-label table"),
        (["--recipe", fixmatch, "--root", experiment_file.parent / "data"], "takes its unlabeled pools from --experiment"),
    ]
    for args, message in cases:
        out = tmp_path / "never"
        result = CliRunner().invoke(main, ["student", *map(str, args), "--out", str(out)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output and not out.exists()


def test_an_experiment_mixing_noisy_student_and_online_students_runs_and_compares_them(demo, tmp_path):
    experiment_file, recipes = demo
    fixmatch = online_recipe(recipes, "fixmatch", "mu = 1.0\n")
    flexmatch = online_recipe(recipes, "flexmatch", "mu = 1.0\n")
    text, n = re.subn(r'^recipes = \[(.*)\]$', lambda m: f'recipes = [{m.group(1)}, "{fixmatch}", "{flexmatch}"]',
                      experiment_file.read_text(), flags=re.M)
    assert n == 1
    experiment_file.write_text(text)
    result = CliRunner().invoke(main, ["run", str(experiment_file)])
    assert result.exit_code == 0, result.output
    runs = experiment_file.parent / "runs"
    names = ["round0_teacher", "baseline_probe", "baseline_self_training", "round1_tiny_cnn",
             "round2_fixmatch_tiny_cnn", "round3_flexmatch_tiny_cnn"]
    for name in names:
        assert (runs / name / "metrics.json").exists(), name
    # Online rounds label nothing and are labeled by no one: no table in their directories.
    assert not (runs / "round2_fixmatch_tiny_cnn" / "pseudo_labels.csv").exists()
    assert "round2_fixmatch_tiny_cnn" in (runs / "report" / "compare.md").read_text()
    assert "fixmatch student round 2, tiny_cnn" in result.output and "student round 1, tiny_cnn" in result.output
    # `compare` reads the run directories: every algorithm side by side, on the same test images.
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", *(str(runs / n) for n in names[3:]), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    compared = (out / "compare.md").read_text()
    assert all(name in compared for name in names[3:])
    # Rerun: every run finished, nothing is redone.
    model = (runs / "round2_fixmatch_tiny_cnn" / "model.keras").stat().st_mtime_ns
    assert CliRunner().invoke(main, ["run", str(experiment_file)]).exit_code == 0
    assert (runs / "round2_fixmatch_tiny_cnn" / "model.keras").stat().st_mtime_ns == model


class Kill(Exception):
    pass


def test_a_killed_online_student_resumes_with_its_thresholds_and_ema(demo, tmp_path):
    from pseudolabel.data import load_task
    from pseudolabel.online_student import train_online_student

    experiment_file, recipes = demo
    experiment = load_experiment(experiment_file)
    recipe = load_recipe(online_recipe(recipes, "freematch", "mu = 1.0\nema_decay = 0.5\nthreshold_momentum = 0.5\n"),
                         "student", {"train": {"epochs": 3}})
    task = load_task(experiment.data.as_task_config())
    seen = {}

    class KillAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = float(self.model.global_threshold.numpy())
            if epoch == 1 and "killed" not in seen:
                seen["killed"] = True
                raise Kill()

    run_dir = tmp_path / "freematch"
    with pytest.raises(Kill):
        train_online_student(recipe, task, experiment.pools, run_dir, verbose=0, callbacks=[KillAfterSecondEpoch()])
    assert (run_dir / "backup").exists() and not (run_dir / "metrics.json").exists()
    killed_at = seen[1]

    class FirstResumedStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.setdefault("resumed", float(self.model.global_threshold.numpy()))

    metrics = train_online_student(recipe, task, experiment.pools, run_dir, verbose=0, callbacks=[FirstResumedStep()])
    assert metrics["resumed_at_epoch"] == 2 and metrics["epochs"] == 3
    assert seen["resumed"] == pytest.approx(killed_at)   # the threshold state came back with the backup
    assert [row["epoch"] for row in history(run_dir)] == ["0", "1", "2"]
    assert not (run_dir / "backup").exists()
