"""The label-budget curve: nested stratified subsets, hidden labels, the table, resume, the command."""

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.cli import main
from pseudolabel.config import load_experiment
from pseudolabel.curve import (ALL, CurveError, curve_markdown, curve_rows, label_order, parse_budgets, plan_budget,
                               run_curve, write_curve_report)
from pseudolabel.data import ClassMap, load_task, read_split, read_truth
from pseudolabel.demo import write_demo
from pseudolabel.lifecycle import RunChangedError
from pseudolabel.rounds import run_experiment


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _demo(tmp_path, **kwargs):
    settings = dict(n_labeled=40, n_unlabeled=10, n_test=40, epochs=1) | kwargs
    return write_demo(tmp_path / "demo", **settings)


# --------------------------------------------------------------------------- subsets


def test_label_order_keeps_two_per_class_then_each_class_near_its_share_and_depends_on_the_seed_only():
    class_map = ClassMap.identity(["a", "b", "c"])
    items = [(f"a{i}.png", "a") for i in range(30)] + [(f"b{i}.png", "b") for i in range(12)] \
        + [(f"c{i}.png", "c") for i in range(6)]
    order = label_order(items, class_map, seed=7)
    assert sorted(order) == sorted(image for image, _ in items)         # every train image, once
    label_of = dict(items)
    shares = {"a": 30 / 48, "b": 12 / 48, "c": 6 / 48}
    for n in range(6, 49):
        counts = {k: sum(label_of[image] == k for image in order[:n]) for k in shares}
        assert min(counts.values()) >= 2
        if min(n * s for s in shares.values()) >= 2:                    # past the forced minimum
            assert all(abs(counts[k] - n * shares[k]) < 1 for k in shares), (n, counts)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    assert label_order(shuffled, class_map, seed=7) == order            # not the rows' order
    assert label_order(items, class_map, seed=8) != order               # the seed chooses


def test_budgets_are_nested_keep_val_and_test_and_hide_the_rest_of_train(tmp_path):
    experiment = load_experiment(_demo(tmp_path))
    task = load_task(experiment.data.as_task_config())
    train = [(image, raw) for image, raw, part in task.split.items if part == "train"]
    order = label_order(train, task.class_map, experiment.seed)
    plans = {n: plan_budget(n, task, order, tmp_path / "curve", tmp_path / "out") for n in (4, 10, 20, ALL)}
    assert plans[ALL].directory == tmp_path / "out" and plans[4].directory == tmp_path / "curve" / "labels-4"
    kept = {}
    for n in (4, 10, 20):
        (tmp_path / f"b{n}").mkdir()
        for name, text in plans[n].files.items():
            (tmp_path / f"b{n}" / name).write_text(text)
        split = read_split(tmp_path / f"b{n}" / "split.csv", task.root, task.class_map)
        kept[n] = {image for image, _, part in split.items if part == "train"}
        assert len(kept[n]) == n == plans[n].n_labels and sum(plans[n].class_counts.values()) == n
        assert min(plans[n].class_counts.values()) >= 2
        assert [i for i in split.items if i[2] != "train"] == [i for i in task.split.items if i[2] != "train"]
        hidden = {Path(r["image"]) for r in _rows(tmp_path / f"b{n}" / "hidden_pool.csv")}
        assert hidden == {task.root / image for image, _ in train} - {task.root / image for image in kept[n]}
        assert all(p.is_absolute() for p in hidden) and plans[n].hidden == len(hidden) == len(train) - n
        truth = {Path(r["image"]): r["label"] for r in _rows(tmp_path / f"b{n}" / "hidden_truth.csv")}
        assert truth == {task.root / image: task.class_map.mapping[raw] for image, raw in train
                         if task.root / image in hidden}
        labeled = {r["image"] for r in _rows(tmp_path / f"b{n}" / "labels.csv")}
        assert not labeled & {image for image, _ in train if image not in kept[n]}   # no hidden label
    assert kept[4] < kept[10] < kept[20]
    assert plans[ALL].files == {} and plans[ALL].n_labels == len(train)


def test_parse_budgets():
    assert parse_budgets("100, 25,all,50") == [25, 50, 100, ALL]
    for bad in ("", "25,x", "0", "-5", "25,25", "2.5"):
        with pytest.raises(CurveError, match="--labels"):
            parse_budgets(bad)


# --------------------------------------------------------------------------- the table


def test_the_table_states_means_sd_and_paired_differences_on_known_numbers(tmp_path):
    models = {"round0_teacher": "tiny_cnn", "baseline_probe": "tiny_cnn", "baseline_self_training": "tiny_cnn",
              "round1_tiny_cnn": "tiny_cnn"}
    aucs = {0: {"round0_teacher": 0.70, "baseline_probe": 0.75, "baseline_self_training": 0.72, "round1_tiny_cnn": 0.80},
            1: {"round0_teacher": 0.80, "baseline_probe": 0.78, "baseline_self_training": 0.79, "round1_tiny_cnn": 0.79}}
    budgets = [{"budget": "10", "n_labels": 10, "models": models, "roc_auc": aucs},
               {"budget": ALL, "n_labels": 30, "models": models,
                "roc_auc": {s: {k: v + 0.1 for k, v in a.items()} for s, a in aucs.items()}}]
    rows = curve_rows(budgets)
    assert [(r["budget"], r["run"]) for r in rows][:4] == [("10", name) for name in models]
    teacher, probe, self_training, student = rows[:4]
    assert teacher["supervised"] and probe["supervised"] and not self_training["supervised"]
    assert teacher["roc_auc_mean"] == pytest.approx(0.75) and teacher["roc_auc_sd"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert teacher["n_seeds"] == 2 and "minus_teacher" not in teacher
    assert student["minus_teacher"]["per_seed"] == pytest.approx([0.10, -0.01])
    assert student["minus_teacher"]["mean"] == pytest.approx(0.045) and student["minus_teacher"]["wins"] == 1
    low, high = student["minus_teacher"]["ci"]
    assert low < 0.045 < high
    # best supervised per seed: the probe (0.75) on seed 0, the teacher (0.80) on seed 1
    assert student["minus_best_supervised"]["per_seed"] == pytest.approx([0.05, -0.01])
    assert self_training["minus_best_supervised"]["per_seed"] == pytest.approx([-0.03, -0.01])
    assert self_training["minus_best_supervised"]["wins"] == 0
    assert rows[4]["roc_auc_mean"] == pytest.approx(0.85) and rows[4]["n_labels"] == 30

    result = {"experiment": "x.toml", "subset_seed": 0, "seeds": [0, 1], "auc": "ROC AUC of P(modern)",
              "n_test_images": 40, "budgets": budgets, "rows": rows}
    write_curve_report(result, tmp_path)
    table = (tmp_path / "curve.md").read_text()
    assert "| 10 | student round 1, tiny_cnn | semi-supervised | 2 | 0.795 ± 0.007 | +0.045 [" in table
    assert "| all (30) | linear probe | supervised | 2 | 0.865 ± 0.021 |" in table
    assert "| 1 of 2 seeds |" in table and table == curve_markdown(result)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "curve.json").read_text())["rows"][3]["minus_teacher"]["wins"] == 1


# --------------------------------------------------------------------------- end to end


def _mtimes(out):
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.name in ("model.keras", "pseudo_labels.csv", "metrics.json")}


def test_a_curve_trains_every_budget_and_seed_on_the_kept_labels_only_then_resumes(tmp_path):
    experiment = load_experiment(_demo(tmp_path))
    curve_dir = tmp_path / "curve"
    result = run_curve(experiment, [6, ALL], seeds=[1], out=curve_dir)   # one seed: two chains are minutes already

    budget = curve_dir / "labels-6"
    derived = read_split(budget / "split.csv", experiment.data.root)
    kept = [image for image, _, part in derived.items if part == "train"]
    hidden = {r["image"] for r in _rows(budget / "hidden_truth.csv")}
    assert len(kept) == 6 and len(hidden) == 24
    for seed in (1,):
        out = budget / f"seed-{seed}"
        for run in ("round0_teacher", "baseline_probe", "baseline_self_training", "round1_tiny_cnn"):
            provenance = json.loads((out / run / "provenance.json").read_text())
            assert provenance["split_hash"] == derived.hash and provenance["seed"] == seed
        with np.load(out / "baseline_probe" / "features.npz") as features:
            assert len(features["train_y"]) == 6                 # trained on the kept labels only
        probe = json.loads((out / "baseline_probe" / "metrics.json").read_text())["probe"]
        assert probe["cv"] == 3                                  # 3 labels per class: 3 folds, not 5
        pools = {p["name"]: p for p in json.loads((out / "pools.json").read_text())["pools"]}
        assert pools["curve_hidden"]["counts"]["kept"] + pools["curve_hidden"]["counts"]["excluded"] == 24
        table = {r["image"] for r in _rows(out / "round1_tiny_cnn" / "pseudo_labels.csv")}
        assert hidden & table                                    # the hidden images are pool images
        quality = json.loads((out / "round1_tiny_cnn" / "pseudo_quality.json").read_text())
        known = hidden | set(read_truth([p.truth for p in experiment.pools if p.truth], ["modern", "old"]))
        assert quality["all"]["n"] == len(known & table)
    # 'all' is the experiment itself: its runs are those of `run --seeds`, not trained again.
    all_runs = Path(experiment.output) / "seed-1"
    assert (all_runs / "round1_tiny_cnn" / "metrics.json").exists() and not (curve_dir / "labels-all").exists()
    trained = _mtimes(all_runs)
    run_experiment(experiment, seeds=[1])
    assert _mtimes(all_runs) == trained and len(trained) == 7

    assert result["seeds"] == [1] and [b["n_labels"] for b in result["budgets"]] == [6, 30]
    for row in result["rows"]:
        budget_dir = Path(experiment.output) if row["budget"] == ALL else curve_dir / f"labels-{row['budget']}"
        run = budget_dir / "seed-1" / row["run"]
        assert row["roc_auc"] == [json.loads((run / "metrics.json").read_text())["roc_auc"]] and row["n_seeds"] == 1
    student = {row["budget"]: row for row in result["rows"] if row["run"] == "round1_tiny_cnn"}
    assert student["6"]["pseudo_accuracy"]["all"] == quality["all"]["accuracy"]
    quality_all = json.loads((all_runs / "round1_tiny_cnn" / "pseudo_quality.json").read_text())
    assert student[ALL]["pseudo_accuracy"]["all"] == quality_all["all"]["accuracy"]   # the demo pool's own truth
    table = (curve_dir / "curve.md").read_text()
    assert (curve_dir / "curve.png").exists() and "| 6 | teacher |" in table and "(1 seed) |" in table

    before = {**_mtimes(curve_dir), **_mtimes(all_runs)}
    assert len(before) == 2 * 7   # per chain: 2 models, 4 metrics, 1 table
    run_curve(experiment, [6, ALL], seeds=[1], out=curve_dir)
    assert {**_mtimes(curve_dir), **_mtimes(all_runs)} == before                          # resumed: nothing trained again

    with pytest.raises(CurveError, match="labels-6/split.csv: written for another subset"):
        run_curve(experiment.model_copy(update={"seed": 1}), [6], seeds=[1], out=curve_dir)
    recipe = experiment.teacher_recipe
    changed = experiment.model_copy(update={"teacher_recipe": recipe.model_copy(
        update={"train": recipe.train.model_copy(update={"phase1_lr": 0.5})})})
    with pytest.raises(RunChangedError, match="round0_teacher: was started with another config"):
        run_curve(changed, [6, ALL], seeds=[1], out=curve_dir)
    assert {**_mtimes(curve_dir), **_mtimes(all_runs)} == before                          # refused before any work


# --------------------------------------------------------------------------- the command


def test_curve_command_help_and_bad_budgets_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["curve", "--help"])
    assert result.exit_code == 0 and "--labels" in result.output and "nested" in result.output
    experiment_file = _demo(tmp_path, n_unlabeled=4)
    for bad, code, text in (("25,abc", 2, "--labels '25,abc': expected"),
                            ("3,all", 1, "--labels 3 is below 4 (2 per class x 2 classes"),
                            ("30", 1, "--labels 30 is not below the 30 labeled train images")):
        result = CliRunner().invoke(main, ["curve", str(experiment_file), "--labels", bad,
                                           "--out", str(tmp_path / "curve")])
        assert result.exit_code == code, result.output
        assert len(result.output.strip().splitlines()) == 1 and text in result.output, result.output
    assert not (tmp_path / "curve").exists()                     # nothing started
