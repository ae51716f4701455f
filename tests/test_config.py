from pathlib import Path

import pytest

from pseudolabel.config import ConfigError, load_experiment, load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_recipe_merges_over_defaults_and_resolves_weight_paths(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nbackbone = "tiny_cnn"\nweights = "w/file.h5"\n[train]\nbatch_size = 8\n')
    r = load_recipe(recipe, "teacher")
    assert r["model"]["backbone"] == "tiny_cnn"
    assert r["model"]["weights"] == str(tmp_path / "w" / "file.h5")
    assert r["train"]["batch_size"] == 8
    assert r["train"]["phase1_lr"] == 1e-3  # a default


def test_recipe_weights_none_means_random_init(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nweights = "none"\n')
    assert load_recipe(recipe, "student")["model"]["weights"] is None


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    recipe = tmp_path / "typo.toml"
    recipe.write_text("[train]\nbatch_sise = 8\n")
    with pytest.raises(ConfigError, match=r"typo.toml: unknown key 'train.batch_sise'"):
        load_recipe(recipe, "teacher")


def test_invalid_toml_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_recipe(bad)


def test_experiment_paths_resolve_against_file_and_data_root(tmp_path):
    exp = tmp_path / "exp" / "e.toml"
    exp.parent.mkdir()
    exp.write_text('[data]\nroot = "../data"\nsplit = "split.csv"\n[[pools]]\npath = "Pool"\n'
                   '[teacher]\nrecipe = "t.toml"\n')
    e = load_experiment(exp)
    assert e["data"]["root"] == str(tmp_path / "data")
    assert e["data"]["labels"] == str(tmp_path / "data" / "labels.csv")
    assert e["data"]["split"] == str(tmp_path / "exp" / "split.csv")
    assert e["pools"] == [{"name": "Pool", "path": str(tmp_path / "data" / "Pool"), "glob": None}]
    assert e["teacher"]["recipe"] == str(tmp_path / "exp" / "t.toml")


def test_data_root_override_moves_labels_and_pools(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text('[data]\nroot = "a"\n[[pools]]\npath = "Pool"\n')
    e = load_experiment(exp, overrides={"data": {"root": str(tmp_path / "b")}})
    assert e["data"]["labels"] == str(tmp_path / "b" / "labels.csv")
    assert e["pools"][0]["path"] == str(tmp_path / "b" / "Pool")


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_experiments_and_their_recipes_load(path):
    e = load_experiment(path)
    load_recipe(e["teacher"]["recipe"], "teacher")
    for student in e["students"]["recipes"]:
        load_recipe(student, "student")
    assert e["pools"]


@pytest.mark.parametrize("path", sorted((REPO / "teachers").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_teacher_recipes_load(path):
    assert load_recipe(path, "teacher")["model"]["backbone"]


@pytest.mark.parametrize("path", sorted((REPO / "students").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_student_recipes_load(path):
    assert load_recipe(path, "student")["model"]["backbone"]


def test_experiment_overrides_reach_every_recipe(tmp_path):
    from pseudolabel.config import ConfigError

    (tmp_path / "s.toml").write_text('[model]\nbackbone = "tiny_cnn"\n')
    exp = tmp_path / "e.toml"
    exp.write_text('[students]\nrecipes = ["s.toml"]\n[students.overrides]\ntrain = { unfreeze_blocks = 3 }\n')
    e = load_experiment(exp)
    recipe = load_recipe(e["students"]["recipes"][0], "student", e["students"]["overrides"])
    assert recipe["train"]["unfreeze_blocks"] == 3
    with pytest.raises(ConfigError, match="unknown key 'train.unfreez'"):
        load_recipe(e["students"]["recipes"][0], "student", {"train": {"unfreez": 1}})
