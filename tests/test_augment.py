"""augment: registry, shapes, magnitude, determinism, thread safety."""

from concurrent.futures import ThreadPoolExecutor

import albumentations as A
import numpy as np
import pytest

from pseudolabel import augment
from pseudolabel.augment import Augmenter, get_augment, list_augments, randaugment_ops, register_augment

SIZE = 48


@pytest.fixture(scope="module")
def image():
    """A structured image (gradients and a bright square), so that every op visibly changes it."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    img = np.stack([xx * 5, yy * 5, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    img[10:20, 5:15] = 250
    return img


def _diff(a, b) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_registry_lists_builtin_policies():
    assert {"none", "flip", "teacher", "randaugment"} <= set(list_augments())
    with pytest.raises(KeyError, match="unknown augmentation 'nope'"):
        get_augment("nope", SIZE)
    with pytest.raises(ValueError, match="already registered"):
        register_augment("flip")(lambda size, magnitude: A.NoOp(p=1))
    with pytest.raises(ValueError, match="magnitude"):
        get_augment("randaugment", SIZE, magnitude=31)


def test_register_a_new_policy(monkeypatch):
    monkeypatch.setattr(augment, "_REGISTRY", dict(augment._REGISTRY))  # leave the real one alone

    @register_augment("test_invert")
    def _invert(size, magnitude):
        return A.InvertImg(p=1.0)

    aug = get_augment("test_invert", SIZE)
    assert isinstance(aug, Augmenter)
    img = np.full((SIZE, SIZE, 3), 10, np.uint8)
    assert (aug(img) == 245).all()


@pytest.mark.parametrize("name, magnitude", [("none", 0), ("flip", 0), ("teacher", 0),
                                             ("randaugment", 0), ("randaugment", 9), ("randaugment", 30)])
def test_shape_and_dtype(image, name, magnitude):
    aug = get_augment(name, SIZE, magnitude=magnitude, seed=0)
    for seed in range(8):
        out = aug(image, seed=seed)
        assert out.shape == image.shape and out.dtype == np.uint8


def test_randaugment_resizes_to_image_size(image):
    out = get_augment("randaugment", (32, 40), magnitude=10)(image, seed=1)
    assert out.shape == (32, 40, 3)


def test_none_is_identity_and_flip_flips(image):
    assert (get_augment("none", SIZE)(image) == image).all()
    flips = [get_augment("flip", SIZE)(image, seed=s) for s in range(16)]
    assert all((f == image).all() or (f == image[:, ::-1]).all() for f in flips)
    assert any((f == image[:, ::-1]).all() for f in flips) and any((f == image).all() for f in flips)


def test_randaugment_magnitude_zero_is_identity_up_to_flip(image):
    assert randaugment_ops(0) == []
    aug = get_augment("randaugment", SIZE, magnitude=0, crop_scale=(1.0, 1.0), flip=False)
    assert all(_diff(aug(image, seed=s), image) < 1 for s in range(8))
    assert len(randaugment_ops(1)) == 14


def test_randaugment_magnitude_grows_the_change(image):
    def mean_change(magnitude):
        aug = get_augment("randaugment", SIZE, magnitude=magnitude, crop_scale=(1.0, 1.0), flip=False)
        return np.mean([_diff(aug(image, seed=s), image) for s in range(40)])

    low, high = mean_change(2), mean_change(27)
    assert high > 3 * low and high > 20  # low is not 0: autocontrast and equalize have no magnitude


def test_teacher_changes_the_image(image):
    aug = get_augment("teacher", SIZE)
    assert np.mean([_diff(aug(image, seed=s), image) for s in range(10)]) > 10


@pytest.mark.parametrize("name", ["teacher", "randaugment"])
def test_deterministic_given_seed(image, name):
    a = get_augment(name, SIZE, magnitude=20, seed=5)
    b = get_augment(name, SIZE, magnitude=20, seed=5)
    c = get_augment(name, SIZE, magnitude=20, seed=6)
    # per-call seed: a pure function of (image, seed)
    assert (a(image, seed=11) == b(image, seed=11)).all()
    assert not (a(image, seed=11) == a(image, seed=12)).all()
    # the augmenter's own stream: same construction seed, same sequence; another seed, another one
    seq_a = [a(image) for _ in range(4)]
    seq_b = [b(image) for _ in range(4)]
    seq_c = [c(image) for _ in range(4)]
    assert all((x == y).all() for x, y in zip(seq_a, seq_b))
    assert not all((x == y).all() for x, y in zip(seq_a, seq_c))
    assert not (seq_a[0] == seq_a[1]).all()


def test_parallel_calls_with_seeds_match_sequential_calls(image):
    aug = get_augment("randaugment", SIZE, magnitude=15)
    sequential = [aug(image, seed=s) for s in range(32)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda s: aug(image, seed=s), range(32)))
    assert all((x == y).all() for x, y in zip(sequential, parallel))


def test_a_dataset_pass_reuses_its_pipelines_instead_of_building_one_per_image(image, tmp_path):
    """tf.data runs every numpy_function call on a thread of its own: a per-thread pipeline was
    rebuilt for every image, which cost ten times the augmenting itself (speed: bench_pipeline.py)."""
    from PIL import Image

    from pseudolabel.pipeline import make_dataset

    paths = []
    for i in range(64):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.roll(image, i, axis=1)).save(paths[-1])
    aug = get_augment("randaugment", SIZE, magnitude=10)
    builds, build = [], aug._build
    aug._build = lambda: builds.append(1) or build()
    for _ in make_dataset(paths, image_size=SIZE, batch_size=8, augment=aug, cache="memory"):
        pass
    assert len(builds) <= 8   # at most one per call in flight, not one per image (64)


def test_weak_flips_and_shifts_and_strong_adds_randaugment_and_cutout(image):
    weak = get_augment("weak", SIZE, seed=0)
    strong = get_augment("strong", SIZE, magnitude=10, seed=0)
    outs = [weak(image, seed=s) for s in range(12)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert any(_diff(o, image) > 1 for o in outs)  # shifted (or flipped)
    # Cutout: every strong view holds a grey square of half the side (a block of 24 x 24 grey pixels).
    for s in range(6):
        out = strong(image, seed=s)
        grey = np.all(out == 128, axis=-1)
        assert grey.sum() >= (SIZE // 2) ** 2, s
    # The strong view changes the image more than the weak one does.
    assert np.mean([_diff(strong(image, seed=s), image) for s in range(12)]) > np.mean([_diff(o, image) for o in outs])
