"""`pseudolabel demo`: the whole method end to end on synthetic images, in minutes on a CPU.

The task (`synthetic.texture_image`, at `TASK`): two classes that differ only by the fineness of a
faint texture, under heavy nuisance variation (colours, position, size, blobs, noise), hard to
learn from 150 labeled training images. Three models are trained and compared on one test split:
the two-phase teacher, the labels-only control (`[baselines] labels_only_student`: the student's
recipe, noise and training length on the labels alone) and the Noisy Student trained on labels +
the pool's pseudo-labels. The control answers "did the pool help, or the student's recipe?"; it is
also the stronger of the two labels-only models (the two-phase teacher is made for pretrained
backbones: its head first learns a random backbone's features, then it fine-tunes with every
BatchNorm in inference mode, and on this randomly initialised CNN it ends well behind), so it
labels the pool (`first_teacher = "labels_only"`). README "Quick start: the demo" has the
measured figures.

It writes everything a real experiment has, so a newcomer can read and reuse the files:
OUT/data (images, labels.csv, pool_truth.csv: the pool's true classes, which the report measures
the pseudo-labels by), OUT/split.csv, OUT/recipes/{teacher,student}.toml, OUT/experiment.toml,
OUT/demo.json (the demo's settings), and the runs under OUT/runs (teacher, one student round,
report). The experiment names its data by absolute paths, so it means the
same whichever folder relative paths are read against.
"""

from __future__ import annotations

import json
from pathlib import Path

TEACHER_RECIPE = """# Demo teacher: a tiny CNN, no pretrained weights, {size} px. With random weights the frozen
# backbone of phase 1 gives weak features, so phase 2 trains every block (unfreeze_blocks = 99).
[model]
backbone = "tiny_cnn"
image_size = {size}
weights = "none"
dropout = 0.2

[train]
batch_size = 8
phase1_epochs = 5
phase2_epochs = {epochs}
phase2_lr = 3e-3
phase2_patience = 40          # the tiny CNN can sit on a plateau for tens of epochs before it learns
unfreeze_blocks = 99
augment = "randaugment"     # at magnitude 0: random resized crops and flips only
"""

STUDENT_RECIPE = """# Demo student: the same tiny CNN, with noise (dropout, stochastic depth, RandAugment).
[model]
backbone = "tiny_cnn"
image_size = {size}
weights = "none"
dropout = 0.3

[train]
batch_size = 16
epochs = {epochs}
lr = 3e-3                   # as the teacher's phase 2
patience = 4

[noise]
augment = "randaugment"
randaugment_magnitude = 5
"""

EXPERIMENT = """# Demo experiment: synthetic two-class texture images, one Noisy Student round.
name = "demo"
seed = {seed}
output = {output}

[data]
root = {root}
labels = {labels}
split = {split}

[data.classes]
names = ["old", "modern"]
map = {{ M = "modern", O = "old" }}
positive = "modern"

[[pools]]
name = "synthetic"
path = {pool}
truth = {truth}   # the pool's true classes: the report measures the pseudo-labels by them (never trained on)

[teacher]
recipe = {teacher}
{baselines}
[students]
recipes = [{student}]
{first_teacher}"""

# The control (`pseudolabel demo` turns it on): the student's recipe on the labels alone, which
# then labels the pool too, being a stronger teacher than the two-phase one (made for pretrained
# backbones: its frozen BatchNorm statistics hold a randomly initialised CNN back).
CONTROL_BASELINE = """
[baselines]
labels_only_student = true      # the student's recipe on the labels alone: did the pool help, or the recipe?
"""
CONTROL_TEACHES = 'first_teacher = "labels_only"   # round 1 is taught by it: the best model of the labels alone\n'

# The texture task's difficulty (`synthetic.texture_image`): two periods 1.6x apart, a faint grating.
TASK = {"period_ratio": 1.6, "contrast": [20, 45], "noise": [12, 28]}

SETTINGS_FILE = "demo.json"


class DemoError(ValueError):
    """OUT holds something other than the demo asked for."""


def demo_settings(*, n_labeled: int, n_unlabeled: int, n_test: int, size: int, epochs: int, seed: int,
                  control: bool) -> dict:
    return {"kind": "texture", "n_labeled": n_labeled, "n_unlabeled": n_unlabeled, "n_test": n_test,
            "size": size, "epochs": epochs, "seed": seed, "task": TASK, "control": control}


def check_out_dir(out: Path, settings: dict) -> bool:
    """True when OUT already holds this very demo (its runs resume); False when OUT is new or empty.
    A different demo, or other files, in OUT: DemoError, before anything is written."""
    if not out.exists() or not any(out.iterdir()):
        return False
    recorded = out / SETTINGS_FILE
    if not recorded.is_file():
        raise DemoError(f"{out}: not empty and holds no demo ({SETTINGS_FILE}); give an empty or new --out")
    earlier = json.loads(recorded.read_text())
    if earlier != settings:
        changed = ", ".join(f"{k} {earlier.get(k)} -> {v}" for k, v in settings.items() if earlier.get(k) != v)
        raise DemoError(f"{out} holds a different demo ({changed}); its runs would not match: "
                        "give another --out or delete that folder")
    return True


def write_demo(out: str | Path, *, n_labeled: int = 200, n_unlabeled: int = 2000, n_test: int = 300,
               size: int = 32, epochs: int = 10, seed: int = 0, control: bool = False) -> Path:
    """Write the demo's data, split, recipes and experiment; return the experiment path.

    `n_labeled` images (three quarters train, a quarter validation) are all the teacher learns
    from; `n_test` more labeled images are the fixed test split; `n_unlabeled` form the pool.
    `control` (on in `run_demo` and `pseudolabel demo`; off here, so the tests that build small
    experiments from the demo train no extra model): the labels-only student, which then also
    labels the pool. Rewriting OUT with the same settings leaves it as it is; other settings raise
    DemoError.
    """
    from pseudolabel.data import ClassMap, make_split, read_labels_csv, write_split
    from pseudolabel.rundir import atomic_write_json, atomic_write_text
    from pseudolabel.synthetic import write_synthetic_dataset

    out = Path(out).resolve()
    settings = demo_settings(n_labeled=n_labeled, n_unlabeled=n_unlabeled, n_test=n_test, size=size,
                             epochs=epochs, seed=seed, control=control)
    experiment = out / "experiment.toml"
    if check_out_dir(out, settings) and experiment.is_file():
        return experiment
    total = n_labeled + n_test
    labels_csv = write_synthetic_dataset(out / "data", n_labeled=total, n_unlabeled=n_unlabeled,
                                         size=size, seed=seed, kind="texture", truth_names=("modern", "old"),
                                         draw_options=TASK)
    class_map = ClassMap(names=["old", "modern"], mapping={"M": "modern", "O": "old"}, positive="modern")
    labeled = read_labels_csv(labels_csv, class_map=class_map)
    split = make_split(labeled, class_map, test_size=n_test / total, val_size=0.25 * n_labeled / total, seed=seed)
    write_split(split, out / "split.csv")
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipes" / "teacher.toml", TEACHER_RECIPE.format(size=size, epochs=epochs * 8))
    atomic_write_text(out / "recipes" / "student.toml", STUDENT_RECIPE.format(size=size, epochs=epochs))
    paths = {"output": out / "runs", "root": out / "data", "labels": labels_csv.resolve(), "split": out / "split.csv",
             "pool": out / "data" / "Pool", "truth": out / "data" / "pool_truth.csv", "teacher": out / "recipes" / "teacher.toml",
             "student": out / "recipes" / "student.toml"}
    atomic_write_text(experiment, EXPERIMENT.format(
        seed=seed, baselines=CONTROL_BASELINE if control else "", first_teacher=CONTROL_TEACHES if control else "",
        **{k: json.dumps(str(v)) for k, v in paths.items()}))
    atomic_write_json(out / SETTINGS_FILE, settings)  # last: its presence means the demo's files are complete
    return experiment


def run_demo(out: str | Path, *, control: bool = True, **kwargs) -> dict:
    """Write (or find) the demo in OUT (with the labels-only control unless `control=False`) and
    run it; print the results table; return the summary."""
    from pseudolabel.config import load_experiment
    from pseudolabel.report import format_results_table
    from pseudolabel.rounds import run_experiment

    experiment = write_demo(out, control=control, **kwargs)
    summary = run_experiment(load_experiment(experiment))
    if summary is not None:  # None on a non-chief worker, which writes no report
        print("\n" + format_results_table(summary))
    return summary
