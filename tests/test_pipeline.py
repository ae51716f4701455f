"""pipeline.make_dataset: shapes, targets, determinism, cache, bad files."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pseudolabel import images, pipeline
from pseudolabel.augment import get_augment
from pseudolabel.pipeline import load_images, make_dataset

SIZE = 24


@pytest.fixture
def image_paths(tmp_path):
    """10 small JPEGs of different sizes, each a distinct flat-ish colour."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        h, w = 30 + 3 * i, 40 - i
        array = np.clip(rng.normal(20 * i + 30, 10, (h, w, 3)), 0, 255).astype(np.uint8)
        path = tmp_path / f"img_{i}.jpg"
        Image.fromarray(array).save(path, quality=95)
        paths.append(str(path))
    return paths


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts calls to images.read_image (which the pipeline looks up at each call)."""
    calls = []
    real = images.read_image

    def counting(path, size=None, **kw):
        calls.append(path)
        return real(path, size, **kw)

    monkeypatch.setattr(images, "read_image", counting)
    return calls


def _epoch(ds):
    """One full iteration as a list of numpy tuples (or arrays)."""
    return [tuple(t.numpy() for t in e) if isinstance(e, tuple) else e.numpy() for e in ds]


def _stack(epoch, part=None):
    return np.concatenate([e if part is None else e[part] for e in epoch])


def test_images_only_shapes_dtype_range_order(image_paths):
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=4)
    assert ds.element_spec.shape.as_list() == [None, SIZE, SIZE, 3]
    assert ds.element_spec.dtype == tf.float32
    batches = _epoch(ds)
    assert [len(b) for b in batches] == [4, 4, 2]
    pixels = _stack(batches)
    assert pixels.min() >= 0 and pixels.max() <= 255 and pixels.max() > 1  # 0..255, not 0..1
    expected = np.stack([images.read_image(p, SIZE) for p in image_paths]).astype(np.float32)
    np.testing.assert_array_equal(pixels, expected)  # unshuffled: the order of `paths`


def test_rectangular_size_and_drop_remainder(image_paths):
    ds = make_dataset(image_paths, image_size=(16, 20), batch_size=4, drop_remainder=True)
    assert ds.element_spec.shape.as_list() == [4, 16, 20, 3]
    assert [b.shape for b in _epoch(ds)] == [(4, 16, 20, 3)] * 2


def test_int_labels_become_one_hot_and_index_maps_back(image_paths):
    labels = np.arange(10) % 3
    ds = make_dataset(image_paths, labels, image_size=SIZE, batch_size=4, num_classes=3,
                      shuffle=True, seed=1, with_index=True)
    x_spec, y_spec, i_spec = ds.element_spec
    assert y_spec.dtype == tf.float32 and y_spec.shape.as_list() == [None, 3]
    assert i_spec.dtype == tf.int64
    epoch = _epoch(ds)
    targets, index = _stack(epoch, 1), _stack(epoch, 2)
    assert sorted(index) == list(range(10)) and list(index) != list(range(10))
    np.testing.assert_array_equal(targets, np.eye(3, dtype=np.float32)[labels[index]])
    expected = np.stack([images.read_image(image_paths[i], SIZE) for i in index]).astype(np.float32)
    np.testing.assert_array_equal(_stack(epoch, 0), expected)


def test_soft_targets_pass_through(image_paths):
    soft = np.random.default_rng(0).dirichlet([1, 1], 10).astype(np.float64)
    ds = make_dataset(image_paths, soft, image_size=SIZE, batch_size=3, with_index=True)
    epoch = _epoch(ds)
    np.testing.assert_allclose(_stack(epoch, 1), soft[_stack(epoch, 2)].astype(np.float32))


@pytest.mark.parametrize("labels, num_classes, match", [
    (np.arange(10) % 2, None, "num_classes"),
    (np.arange(10), 2, r"\[0, 2\)"),
    (np.arange(9) % 2, 2, "9 labels for 10 images"),
    (np.zeros(10, np.float32), 2, "integer class indices"),
    (np.full((10, 2), 0.5), 3, "columns"),
    (np.zeros((10, 2, 2)), None, "shape"),
])
def test_bad_labels_are_refused(image_paths, labels, num_classes, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(image_paths, labels, image_size=SIZE, batch_size=4, num_classes=num_classes)


def test_same_seed_same_epochs_different_seed_differs(image_paths):
    def build(seed):
        aug = get_augment("randaugment", SIZE, magnitude=15, seed=123)
        return make_dataset(image_paths, np.arange(10) % 2, image_size=SIZE, batch_size=4, num_classes=2,
                            shuffle=True, seed=seed, augment=aug, with_index=True)

    a, b, c = build(7), build(7), build(8)
    a1, a2, b1, b2, c1 = _epoch(a), _epoch(a), _epoch(b), _epoch(b), _epoch(c)
    for x, y in ((a1, b1), (a2, b2)):
        for part in range(3):
            np.testing.assert_array_equal(_stack(x, part), _stack(y, part))
    assert not np.array_equal(_stack(a1, 2), _stack(a2, 2))  # reshuffled each iteration
    assert not np.array_equal(_stack(a1, 2), _stack(c1, 2))  # another seed, another order
    # the same image is augmented differently in another epoch and under another seed
    first_image = lambda epoch: _stack(epoch, 0)[np.argmax(_stack(epoch, 2) == 0)]  # noqa: E731
    assert not np.array_equal(first_image(a1), first_image(a2))
    assert not np.array_equal(first_image(a1), first_image(c1))


def test_augment_without_seed_keyword_is_called_plainly(image_paths):
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=5, augment=lambda image: 255 - image)
    expected = 255 - np.stack([images.read_image(p, SIZE) for p in image_paths])
    np.testing.assert_array_equal(_stack(_epoch(ds)), expected.astype(np.float32))


def test_augment_returning_wrong_shape_fails_clearly(image_paths):
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=5, augment=lambda image: image[:10])
    with pytest.raises(tf.errors.InvalidArgumentError, match="augmentation returned"):
        _epoch(ds)


def test_no_cache_decodes_every_epoch(image_paths, count_decodes):
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=4)
    _epoch(ds), _epoch(ds)
    assert len(count_decodes) == 20


def test_memory_cache_decodes_each_image_once(image_paths, count_decodes):
    aug = get_augment("flip", SIZE)
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=4, cache="memory", shuffle=True, augment=aug)
    first, second = _epoch(ds), _epoch(ds)
    assert len(count_decodes) == 10
    assert sorted(count_decodes) == sorted(image_paths)
    assert _stack(first).shape == _stack(second).shape == (10, SIZE, SIZE, 3)


def test_file_cache_is_written_and_reused_across_datasets(image_paths, count_decodes, tmp_path):
    prefix = tmp_path / "cache" / "train"
    prefix.parent.mkdir()
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=4, cache=prefix)
    reference = _stack(_epoch(ds))
    written = sorted(p.name for p in prefix.parent.iterdir())
    assert len(written) == 2 and all(n.startswith(f"train-{SIZE}x{SIZE}-") for n in written)
    again = make_dataset(image_paths, image_size=SIZE, batch_size=4, cache=prefix)  # e.g. a new process
    np.testing.assert_array_equal(_stack(_epoch(again)), reference)
    assert len(count_decodes) == 10
    # another size, or a changed file, gets its own cache rather than stale pixels
    make_dataset(image_paths, image_size=SIZE + 1, batch_size=4, cache=prefix)
    Image.new("RGB", (40, 40), (255, 0, 0)).save(image_paths[0])
    changed = make_dataset(image_paths, image_size=SIZE, batch_size=4, cache=prefix)
    np.testing.assert_allclose(_stack(_epoch(changed))[0].mean(axis=(0, 1)), [255, 0, 0], atol=3)
    assert len(list(prefix.parent.iterdir())) == 6


def test_cached_dataset_can_be_repeated(image_paths, count_decodes):
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=4, cache="memory", repeat=True, shuffle=True)
    index_batches = [b for b in ds.take(7)]
    assert sum(len(b) for b in index_batches) == 28
    assert len(count_decodes) <= 10 + 8  # decodes stay bounded (<= in-flight prefetch overlap)


def _with_bad_files(image_paths, tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    paths = list(image_paths)
    paths.insert(3, str(tmp_path / "bad.jpg"))
    paths.append(str(tmp_path / "empty.jpg"))
    return paths


def test_skip_drops_bad_files_and_index_reveals_which(image_paths, tmp_path):
    paths = _with_bad_files(image_paths, tmp_path)
    ds = make_dataset(paths, image_size=SIZE, batch_size=4, on_error="skip", with_index=True)
    epoch = _epoch(ds)
    index = _stack(epoch, 1)
    assert set(range(len(paths))) - set(index.tolist()) == {3, len(paths) - 1}
    assert _stack(epoch, 0).shape == (10, SIZE, SIZE, 3)


def test_skip_with_cache_remembers_bad_files(image_paths, tmp_path, count_decodes):
    paths = _with_bad_files(image_paths, tmp_path)
    ds = make_dataset(paths, image_size=SIZE, batch_size=4, on_error="skip", cache="memory")
    assert len(_stack(_epoch(ds))) == len(_stack(_epoch(ds))) == 10
    assert len(count_decodes) == 12


def test_raise_names_the_bad_file(image_paths, tmp_path):
    paths = _with_bad_files(image_paths, tmp_path)
    ds = make_dataset(paths, np.zeros(len(paths), int), image_size=SIZE, batch_size=4, num_classes=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"bad\.jpg: not a recognised image"):
        _epoch(ds)


def test_argument_errors(image_paths):
    with pytest.raises(ValueError, match="on_error"):
        make_dataset(image_paths, image_size=SIZE, batch_size=4, on_error="ignore")
    with pytest.raises(ValueError, match="at least one"):
        make_dataset([], image_size=SIZE, batch_size=4)


def test_load_images(image_paths):
    stack = load_images(image_paths, SIZE)
    assert stack.shape == (10, SIZE, SIZE, 3) and stack.dtype == np.uint8
    np.testing.assert_array_equal(stack[4], images.read_image(image_paths[4], SIZE))


def test_streaming_without_cache_keeps_no_images(image_paths):
    """No cache object exists without `cache=`: nothing can accumulate across images."""
    assert pipeline._make_cache(None, image_paths, (SIZE, SIZE)) is None


@pytest.mark.slow
def test_real_house_rooms_jpegs_decode(house_rooms):
    paths = sorted(house_rooms.glob("*/*.jpg"))[:64]
    ds = make_dataset(paths, image_size=224, batch_size=32, on_error="skip", with_index=True)
    epoch = _epoch(ds)
    assert _stack(epoch, 0).shape == (64, 224, 224, 3)
    assert sorted(_stack(epoch, 1).tolist()) == list(range(64))


def test_views_augment_the_same_image_each_its_own_way(image_paths):
    identity = lambda image, seed=None: image  # noqa: E731
    invert = lambda image, seed=None: 255 - image  # noqa: E731
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=4, views=[identity, invert], with_index=True)
    (first, second), index = next(iter(ds))
    assert first.shape == second.shape == (4, SIZE, SIZE, 3) and list(index.numpy()) == [0, 1, 2, 3]
    np.testing.assert_allclose(first.numpy() + second.numpy(), 255.0)
    # Seeded views: the two views of an image get different seeds, both reproducible.
    weak = get_augment("weak", SIZE, seed=0)
    ds = make_dataset(image_paths, image_size=SIZE, batch_size=10, views=[weak, weak], seed=3)
    a, b = next(iter(ds))
    again, _ = next(iter(make_dataset(image_paths, image_size=SIZE, batch_size=10, views=[weak, weak], seed=3)))
    np.testing.assert_array_equal(a.numpy(), again.numpy())
    assert not np.array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="not both"):
        make_dataset(image_paths, image_size=SIZE, batch_size=2, views=[identity], augment=identity)


def test_autotuning_is_off_unless_asked_and_changes_no_element(image_paths):
    # Releasing an autotuned iterator waits for the autotuner's next tick (BENCHMARKS.md,
    # "tf.data autotuning on vs off"), so the package's datasets run without it.
    def build(autotune):
        aug = get_augment("randaugment", SIZE, magnitude=15, seed=3)
        return make_dataset(image_paths, np.arange(10) % 2, image_size=SIZE, batch_size=4, num_classes=2,
                            shuffle=True, seed=5, augment=aug, with_index=True, autotune=autotune)

    default = make_dataset(image_paths, image_size=SIZE, batch_size=4)
    off, on = build(False), build(True)
    assert default.options().autotune.enabled is False and off.options().autotune.enabled is False
    assert on.options().autotune.enabled is True
    for part in range(3):
        np.testing.assert_array_equal(_stack(_epoch(off), part), _stack(_epoch(on), part))


def test_array_dataset_batches_shuffles_per_epoch_by_seed_and_refuses_ragged_arrays():
    x, y = np.arange(10, dtype=np.float32)[:, None], np.arange(10) % 2
    plain = pipeline.array_dataset((x, y), batch_size=4)
    assert plain.options().autotune.enabled is False
    assert [len(b) for b, _ in _epoch(plain)] == [4, 4, 2]
    np.testing.assert_array_equal(_stack(_epoch(plain), 0)[:, 0], np.arange(10))

    def orders(seed):
        ds = pipeline.array_dataset((x, y), batch_size=4, shuffle=True, seed=seed)
        return [_stack(_epoch(ds), 0)[:, 0] for _ in range(2)]

    (a1, a2), (b1, b2), (c1, _) = orders(1), orders(1), orders(2)
    assert sorted(a1) == list(range(10))
    shuffled = _epoch(pipeline.array_dataset((x, y), batch_size=4, shuffle=True, seed=1))
    np.testing.assert_array_equal(_stack(shuffled, 1), _stack(shuffled, 0)[:, 0] % 2)   # rows stay whole
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2) and not np.array_equal(a1, c1)
    with pytest.raises(ValueError, match="different lengths"):
        pipeline.array_dataset((x, y[:5]), batch_size=4)
