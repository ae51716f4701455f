"""`pseudolabel demo`: the whole method end to end on synthetic images, in minutes on a CPU.

It writes everything a real experiment has, so a newcomer can read and reuse the files:
OUT/data (images + labels.csv), OUT/split.csv, OUT/recipes/{teacher,student}.toml,
OUT/experiment.toml, and the runs under OUT/runs (teacher, one student round, report).
"""

from __future__ import annotations

from pathlib import Path

TEACHER_RECIPE = """# Demo teacher: a tiny CNN, no pretrained weights, 32 px. With random weights the frozen
# backbone of phase 1 gives weak features, so phase 2 trains every block (unfreeze_blocks = 99).
[model]
backbone = "tiny_cnn"
image_size = {size}
weights = "none"
dropout = 0.2

[train]
batch_size = 16
phase1_epochs = 5
phase2_epochs = {epochs}
phase2_lr = 3e-3
phase2_patience = 5
unfreeze_blocks = 99
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
lr = 1e-3

[noise]
augment = "randaugment"
randaugment_magnitude = 5
"""

EXPERIMENT = """# Demo experiment: synthetic two-class images, one Noisy Student round.
name = "demo"
seed = {seed}
output = "runs"

[data]
root = "data"
labels = "data/labels.csv"
split = "split.csv"

[data.classes]
names = ["old", "modern"]
map = {{ M = "modern", O = "old" }}
positive = "modern"

[[pools]]
name = "synthetic"
path = "data/Pool"

[teacher]
recipe = "recipes/teacher.toml"

[students]
recipes = ["recipes/student.toml"]
"""


def write_demo(out: str | Path, *, n_labeled: int = 120, n_unlabeled: int = 240, size: int = 32,
               epochs: int = 8, seed: int = 0) -> Path:
    """Write the demo's data, split, recipes and experiment; return the experiment path."""
    from pseudolabel.data import ClassMap, make_split, read_labels_csv, write_split
    from pseudolabel.synthetic import write_synthetic_dataset

    out = Path(out)
    labels_csv = write_synthetic_dataset(out / "data", n_labeled=n_labeled, n_unlabeled=n_unlabeled,
                                         size=size, seed=seed)
    class_map = ClassMap(names=["old", "modern"], mapping={"M": "modern", "O": "old"}, positive="modern")
    labeled = read_labels_csv(labels_csv, class_map=class_map)
    write_split(make_split(labeled, class_map, test_size=0.25, val_size=0.2, seed=seed), out / "split.csv")
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    (out / "recipes" / "teacher.toml").write_text(TEACHER_RECIPE.format(size=size, epochs=epochs * 2))
    (out / "recipes" / "student.toml").write_text(STUDENT_RECIPE.format(size=size, epochs=epochs))
    experiment = out / "experiment.toml"
    experiment.write_text(EXPERIMENT.format(seed=seed))
    return experiment


def run_demo(out: str | Path, **kwargs) -> dict:
    from pseudolabel.config import load_experiment
    from pseudolabel.rounds import run_experiment

    experiment = write_demo(out, **kwargs)
    return run_experiment(load_experiment(experiment))
