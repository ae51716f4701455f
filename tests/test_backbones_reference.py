"""The Keras EfficientNet-Lite port against the PyTorch reference implementation.

Slow and optional: needs `torch` and `efficientnet-lite-pytorch` (the `reference` extra:
pip install torch==2.13.0 efficientnet-lite-pytorch). Skipped when they are missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from pseudolabel.backbones import create_backbone, create_imagenet_classifier
from pseudolabel.backbones.lite import LITE_PARAMS
from pseudolabel.backbones.torch_legacy import load_state_dict
from pseudolabel.backbones.weights import lite_pth_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    torch.set_num_threads(2)
    return torch


def reference_model(torch, variant):
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(f"efficientnet-lite{variant}")
    model.load_state_dict(torch.load(lite_pth_path(variant), map_location="cpu"))
    return model.eval()


def torch_logits(torch, model, pixels_nhwc):
    x = torch.from_numpy((pixels_nhwc - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_keras_lite_reproduces_the_pytorch_reference(torch, variant, tmp_path, monkeypatch):
    monkeypatch.setenv("PSEUDOLABEL_CACHE", str(tmp_path))
    size = LITE_PARAMS[variant][2]
    pixels = np.random.default_rng(variant).uniform(0, 255, (4, size, size, 3)).astype("float32")
    expected = torch_logits(torch, reference_model(torch, variant), pixels)
    keras_model = create_imagenet_classifier(f"efficientnet_lite{variant}")
    actual = keras_model.predict(pixels, verbose=0)
    diff = float(np.max(np.abs(actual - expected)))
    print(f"Lite{variant}: max |logit difference| = {diff:.2e} (logits span {np.ptp(expected):.1f})")
    assert diff < 1e-4
    assert np.array_equal(actual.argmax(axis=1), expected.argmax(axis=1))


def test_backbone_features_match_reference_features(torch):
    ref = reference_model(torch, 0)
    pixels = np.random.default_rng(5).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    x = torch.from_numpy((pixels - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        expected = ref.extract_features(x).mean(dim=(2, 3)).numpy()
    actual = np.asarray(create_backbone("efficientnet_lite0")(pixels))
    assert np.max(np.abs(actual - expected)) < 1e-4


def test_reader_matches_torch_load_for_legacy_and_zip_files(torch, tmp_path):
    legacy = lite_pth_path(0)
    expected = torch.load(legacy, map_location="cpu")
    zipped = tmp_path / "lite0_zip.pth"
    torch.save(expected, zipped)   # the current (zip) format
    for path in (legacy, zipped):
        ours = load_state_dict(path)
        assert list(ours) == list(expected)
        for key, tensor in expected.items():
            assert np.array_equal(ours[key], tensor.numpy()), key
