import re
from pathlib import Path

import pytest

from pseudolabel.config import ConfigError, load_experiment, load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_recipe_fills_defaults_and_resolves_weight_paths(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nbackbone = "tiny_cnn"\nweights = "w/file.h5"\n[train]\nbatch_size = 8\n')
    r = load_recipe(recipe, "teacher")
    assert r.model.backbone == "tiny_cnn"
    assert r.model.weights == str(tmp_path / "w" / "file.h5")
    assert r.train.batch_size == 8
    assert r.train.phase1_lr == 1e-3  # a default
    assert r.model.image_size == 64   # tiny_cnn's own resolution: the backbone spec is the one source


def test_recipe_weights_none_means_random_init(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nweights = "none"\n')
    assert load_recipe(recipe, "student").model.weights is None


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    recipe = tmp_path / "typo.toml"
    recipe.write_text("[train]\nbatch_sise = 8\n")
    with pytest.raises(ConfigError, match=r"typo.toml: unknown key 'train.batch_sise' \(known here: .*batch_size"):
        load_recipe(recipe, "teacher")


def test_invalid_toml_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_recipe(bad)


@pytest.mark.parametrize("kind, text, message", [
    ("teacher", '[train]\ntta = "bogus"', r"train.tta: should be 'none', 'flip' or 'ten_crop', got 'bogus'"),
    ("teacher", '[train]\nphase2_lr = "3e-3"', r"train.phase2_lr: should be a valid number, got '3e-3' \(a string"),
    ("teacher", "[train]\nbatch_size = 0", r"train.batch_size: should be greater than or equal to 1, got 0"),
    ("teacher", '[train]\nbatch_size = "8"', r"train.batch_size: should be a valid integer"),
    ("teacher", "[train]\nphase1_epochs = -1", r"train.phase1_epochs: should be greater than or equal to 0"),
    ("teacher", '[train]\nclass_weight = "inverse"', r"train.class_weight: should be 'balanced' or 'none'"),
    ("teacher", '[train]\nmixed_precision = "fp16"', r"train.mixed_precision: should be 'auto', 'mixed_float16'"),
    ("teacher", '[train]\naugment = "wobble"', r"train.augment: unknown augmentation 'wobble' \(known: .*randaugment"),
    ("teacher", "[train]\nunfreeze_blocks = 0", r"train.unfreeze_blocks: should be greater than or equal to 1"),
    ("teacher", '[model]\nbackbone = "resnet50"', r"model.backbone: unknown backbone 'resnet50' \(known: tiny_cnn"),
    ("teacher", "[model]\ndropout = 1.0", r"model.dropout: should be less than 1, got 1.0"),
    ("student", "[model]\ndrop_connect_rate = -0.1", r"model.drop_connect_rate: should be greater than or equal to 0"),
    ("student", '[train]\nunfreeze_blocks = "some"', r"train.unfreeze_blocks: should be 'all' or a valid integer"),
    ("student", '[train]\nunlabeled_weight = "half"', r"train.unlabeled_weight: should be 'ratio' or a valid number"),
    ("student", "[noise]\nrandaugment_magnitude = 31", r"noise.randaugment_magnitude: should be less than or equal to 30"),
    ("student", "[train]\nunlabeled_ratio = 0", r"train.unlabeled_ratio: should be greater than 0"),
])
def test_every_wrong_value_is_one_line_naming_file_key_and_what_is_allowed(tmp_path, kind, text, message):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_recipe(recipe, kind)
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"{recipe}: ")
    assert re.search(message, line), line


@pytest.mark.parametrize("text, message", [
    ('[pseudo]\nmode = "soft-ish"', r"pseudo.mode: should be 'soft' or 'hard'"),
    ("[pseudo]\nthreshold = 1.5", r"pseudo.threshold: should be less than or equal to 1"),
    ('[pseudo]\ntta = "x"', r"pseudo.tta: should be 'none', 'flip' or 'ten_crop'"),
    ('[[pools]]\npath = "p"\nglobe = "*.jpg"', r"unknown key 'pools\[0\].globe' \(known here: glob, images, name, path, truth\)"),
    ('[data.classes]\nnames = ["a", "b"]\npositive = "c"', r"data.classes: .*positive 'c' is not in names"),
    ('[data]\nclasses = "rooms"', r"data.classes: should be 'identity' or 'house_rooms'"),
])
def test_experiment_values_are_checked_when_read(tmp_path, text, message):
    exp = tmp_path / "e.toml"
    base = '[data]\nroot = "."\nsplit = "s.csv"\n'
    exp.write_text(text.replace("[data]\n", base) if text.startswith("[data]") else base + text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(exp)
    assert re.search(message, str(caught.value)) and str(caught.value).startswith(f"{exp}: "), caught.value


def test_a_wrong_value_in_a_named_recipe_fails_when_the_experiment_is_read(tmp_path):
    (tmp_path / "t.toml").write_text("")
    (tmp_path / "s.toml").write_text('[train]\ntta = "bogus"\n')
    exp = tmp_path / "e.toml"
    exp.write_text('[data]\nroot = "."\nsplit = "s.csv"\n[teacher]\nrecipe = "t.toml"\n'
                   '[students]\nrecipes = ["s.toml"]\n')
    with pytest.raises(ConfigError, match=r"s.toml: train.tta: should be 'none'"):
        load_experiment(exp)


def test_experiment_paths_are_relative_to_the_experiment_file(tmp_path):
    exp = tmp_path / "exp" / "e.toml"
    exp.parent.mkdir()
    exp.write_text('[data]\nroot = "../data"\nlabels = "../data/labels.csv"\nsplit = "split.csv"\n'
                   '[[pools]]\npath = "../data/Pool"\n[[pools]]\npath = "/abs/Other"\nname = "other"\n')
    e = load_experiment(exp)
    assert e.data.root == str(tmp_path / "data")
    assert e.data.labels == str(tmp_path / "data" / "labels.csv")
    assert e.data.split == str(tmp_path / "exp" / "split.csv")
    assert [(p.name, p.path, p.glob) for p in e.pools] == [("Pool", str(tmp_path / "data" / "Pool"), None),
                                                           ("other", "/abs/Other", None)]
    assert e.output == str(tmp_path / "exp" / "runs" / "experiment")


def test_a_pool_list_is_relative_to_the_experiment_and_checked_when_read(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jpg").write_bytes(b"")
    exp = tmp_path / "e.toml"
    pool = '[[pools]]\npath = "data"\nimages = "list.csv"\n'
    exp.write_text('[data]\nroot = "data"\nsplit = "s.csv"\n' + pool)
    with pytest.raises(ConfigError) as caught:
        load_experiment(exp)                     # no list yet
    assert str(caught.value).startswith(f"{exp}: pools[0]: ") and f"{tmp_path / 'list.csv'}: no such file" in str(caught.value)
    assert "\n" not in str(caught.value)
    (tmp_path / "list.csv").write_text("image\na.jpg\nb.jpg\n")
    with pytest.raises(ConfigError, match=r"list.csv: line 3: b.jpg: no such image file"):
        load_experiment(exp)
    (tmp_path / "list.csv").write_text("image\na.jpg\n")
    (e_pool,) = load_experiment(exp).pools
    assert (e_pool.images, e_pool.path) == (str(tmp_path / "list.csv"), str(tmp_path / "data"))
    exp.write_text('[data]\nroot = "data"\nsplit = "s.csv"\n' + pool + 'glob = "*.jpg"\n')
    with pytest.raises(ConfigError, match="glob .* or images .*, not both"):
        load_experiment(exp)


def test_no_labels_file_is_assumed(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text('[data]\nroot = "data"\n')
    with pytest.raises(ConfigError, match=r"data: name the labels CSV .* nothing is assumed"):
        load_experiment(exp)
    exp.write_text('[data]\nroot = "data"\nsplit = "split.csv"\n')
    assert load_experiment(exp).data.labels is None


def test_data_root_override(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text('[data]\nroot = "a"\nsplit = "s.csv"\n')
    e = load_experiment(exp, overrides={"data": {"root": str(tmp_path / "b")}})
    assert e.data.root == str(tmp_path / "b") and e.data.split == str(tmp_path / "s.csv")


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_experiments_and_their_recipes_load(path):
    e = load_experiment(path)
    assert e.teacher_recipe.kind == "teacher" and e.student_recipes
    assert e.pools and (Path(e.data.labels).name == "labels.csv" if e.data.layout == "csv" else e.data.train)


@pytest.mark.parametrize("path", sorted((REPO / "teachers").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_teacher_recipes_load(path):
    assert load_recipe(path, "teacher").model.backbone


@pytest.mark.parametrize("path", sorted((REPO / "students").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_student_recipes_load(path):
    assert load_recipe(path, "student").model.backbone


def test_experiment_overrides_reach_every_recipe(tmp_path):
    (tmp_path / "s.toml").write_text('[model]\nbackbone = "tiny_cnn"\n')
    exp = tmp_path / "e.toml"
    exp.write_text('[data]\nroot = "."\nsplit = "x.csv"\n[students]\nrecipes = ["s.toml"]\n'
                   '[students.overrides]\ntrain = { unfreeze_blocks = 3 }\n')
    e = load_experiment(exp)
    assert e.student_recipes[0].train.unfreeze_blocks == 3
    exp.write_text(exp.read_text().replace("unfreeze_blocks = 3", "unfreez = 1"))
    with pytest.raises(ConfigError, match=r"s.toml \(with overrides\): unknown key 'train.unfreez'"):
        load_experiment(exp)


def test_reading_an_experiment_builds_nothing_and_imports_no_heavy_library():
    """Config errors come before any model: reading every shipped file needs no TensorFlow."""
    import subprocess
    import sys

    code = ("import sys; from pseudolabel.config import load_experiment; "
            f"[load_experiment(p) for p in {[str(p) for p in sorted((REPO / 'experiments').glob('*.toml'))]!r}]; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'albumentations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False", "False"]   # augmentation names checked without loading them


def test_seeds_in_an_experiment(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text('seeds = [0, 1, 2]\n[data]\nroot = "."\nsplit = "s.csv"\n')
    assert load_experiment(exp).seeds == [0, 1, 2]
    exp.write_text('seeds = [0, -1]\n[data]\nroot = "."\nsplit = "s.csv"\n')
    with pytest.raises(ConfigError, match=r"seeds\[1\]: should be greater than or equal to 0"):
        load_experiment(exp)
