"""pseudolabel.data.duplicates: mirrored, cropped and rotated copies of labeled images leave the pool.

Images are small synthetic "scenes" (random rectangles and discs on a gradient, 224 px like House Rooms) made here:
unlike stripes they have corners for keypoints, and two seeds give two distinct pictures.
"""

import json
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, ImageOps

from pseudolabel import data as D
from pseudolabel.data import duplicates


@pytest.fixture(autouse=True)
def fresh_hash_cache(monkeypatch):
    monkeypatch.setattr(duplicates, "_DEFAULT_CACHE", D.HashCache())


def scene(seed: int, size: int = 224) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = (60 + 120 * (rng.uniform() * xx + rng.uniform() * yy) / 2)[..., None] * rng.uniform(0.5, 1, 3)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = rng.integers(0, size - 20, 2)
        w, h = rng.integers(8, 50, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.rectangle if rng.uniform() < 0.6 else draw.ellipse
        shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=colour)
    noise = rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def crop(image: Image.Image, fraction: float, where: str = "centre") -> Image.Image:
    w, h = image.size
    cw, ch = round(w * fraction), round(h * fraction)
    x, y = {"centre": ((w - cw) // 2, (h - ch) // 2), "top-left": (0, 0), "bottom-right": (w - cw, h - ch)}[where]
    return image.crop((x, y, x + cw, y + ch))


@pytest.fixture
def scenes(tmp_path):
    """root/Labeled/s_{0..9}.jpg (labels.csv, all 'A'/'B') and root/Pool/other_{0..11}.jpg (distinct)."""
    root = tmp_path / "scenes"
    (root / "Labeled").mkdir(parents=True)
    (root / "Pool").mkdir()
    rows = ["image,label"]
    for i in range(10):
        scene(i).save(root / "Labeled" / f"s_{i}.jpg", quality=92)
        rows.append(f"Labeled/s_{i}.jpg,{'AB'[i % 2]}")
    for i in range(12):
        scene(100 + i).save(root / "Pool" / f"other_{i}.jpg", quality=92)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def excluded_reasons(pool):
    return {p.name: reason for p, reason in pool.excluded}


def test_mirrored_copy_of_a_test_image_is_excluded(scenes):
    labeled = D.read_labels_csv(scenes / "labels.csv")
    test_paths, _ = D.make_split(labeled, test_size=0.3, val_size=0.2).subset("test")
    with Image.open(test_paths[0]) as image:
        ImageOps.mirror(image).save(scenes / "Pool" / "mirrored.jpg", quality=85)
    pool = D.filter_pool(D.scan_pool(scenes / "Pool"), labeled.paths, min_inliers=None)  # the hash alone
    reasons = excluded_reasons(pool)
    assert set(reasons) == {"mirrored.jpg"}
    assert reasons["mirrored.jpg"].startswith(f"{D.NEAR_DUPLICATE} {test_paths[0]} (phash distance ")
    assert "mirror vs labeled whole" in reasons["mirrored.jpg"]
    assert len(pool) == 12  # the distinct pictures stay


def test_crops_and_rotations_of_labeled_images_are_excluded(scenes):
    labeled = D.read_labels_csv(scenes / "labels.csv")
    source = scenes / "Labeled" / "s_3.jpg"
    with Image.open(source) as image:
        image = image.convert("RGB")
        crop(image, 0.8).save(scenes / "Pool" / "crop80_centre.jpg", quality=90)
        crop(image, 0.8, "top-left").save(scenes / "Pool" / "crop80_corner.jpg", quality=90)
        image.rotate(5, resample=Image.Resampling.BICUBIC).save(scenes / "Pool" / "rotated5.jpg", quality=90)
        # rotated AND cropped off-centre: no hash view matches it, keypoints do
        crop(image.rotate(-5, resample=Image.Resampling.BICUBIC), 0.85, "bottom-right").save(
            scenes / "Pool" / "rotated_cropped.jpg", quality=90)
    copies = {"crop80_centre.jpg", "crop80_corner.jpg", "rotated5.jpg", "rotated_cropped.jpg"}
    pool = D.filter_pool(D.scan_pool(scenes / "Pool"), labeled.paths)
    reasons = excluded_reasons(pool)
    assert set(reasons) == copies
    assert all(reason.startswith(f"{D.NEAR_DUPLICATE} {source} (") for reason in reasons.values())
    angle = re.search(r"keypoint inliers, rotation ([-+][0-9.]+) deg", reasons["rotated_cropped.jpg"])
    assert angle and 4 <= abs(float(angle.group(1))) <= 6  # the transform found is the 5 degrees made
    assert len(pool) == 12 and pool.counts()["excluded_near_duplicate"] == 4
    # without the keypoint check the rotated crop gets through: that check is what catches it
    hashes_only = D.filter_pool(D.scan_pool(scenes / "Pool"), labeled.paths, min_inliers=None)
    assert "rotated_cropped.jpg" in {p.name for p in hashes_only.images}
    assert D.pool_summary(pool)["min_inliers"] == D.DEFAULT_MIN_INLIERS


def test_distinct_pictures_are_kept_even_when_similar_in_layout(scenes):
    labeled = D.read_labels_csv(scenes / "labels.csv")
    # the same objects on a different background, shifted: a different picture of the "same room"
    with Image.open(scenes / "Labeled" / "s_5.jpg") as image:
        shifted = Image.new("RGB", image.size, (200, 190, 180))
        shifted.paste(image.convert("RGB").resize((120, 120)), (40, 0))
        shifted.save(scenes / "Pool" / "rearranged.jpg", quality=90)
    pool = D.filter_pool(D.scan_pool(scenes / "Pool"), labeled.paths)
    assert pool.excluded == [] and len(pool) == 13


def test_large_jpeg_is_hashed_from_a_reduced_decode(tmp_path, monkeypatch):
    big = tmp_path / "big.jpg"
    scene(7).resize((2400, 1800)).save(big, quality=80)
    decoded = []
    original_load = ImageFile.ImageFile.load

    def recording_load(self):
        result = original_load(self)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    signature = D.HashCache().get(big)
    assert decoded and max(decoded) <= (600, 450)  # libjpeg's 1/4 (or smaller) scale, not 2400x1800
    assert len(signature.hashes) == len(D.VIEWS)
    # ... and the hash still matches the picture's small copy
    small = tmp_path / "small.jpg"
    scene(7).save(small, quality=90)
    assert bin(D.HashCache().get(small).whole_hash ^ signature.whole_hash).count("1") <= 4


def test_hash_cache_file_is_versioned(scenes, tmp_path, monkeypatch):
    cache_file = tmp_path / "hashes.json"
    image = scenes / "Labeled" / "s_1.jpg"
    cache = D.HashCache(cache_file)
    first = cache.get(image)
    cache.save()
    saved = json.loads(cache_file.read_text())
    assert saved["version"] == D.SIGNATURE_VERSION
    monkeypatch.setattr(duplicates, "read_image", lambda *a, **k: pytest.fail("decoded although cached"))
    assert D.HashCache(cache_file).get(image) == first
    # a cache of another version is not trusted: the image is decoded again
    saved["version"] = D.SIGNATURE_VERSION - 1
    cache_file.write_text(json.dumps(saved))
    with pytest.raises(pytest.fail.Exception, match="decoded although cached"):
        D.HashCache(cache_file).get(image)


def test_feature_check_is_optional_and_reports_the_cosine(scenes):
    labeled = D.read_labels_csv(scenes / "labels.csv")
    features = {p.name: np.random.default_rng(i).normal(size=8) for i, p in enumerate(
        sorted((scenes / "Pool").iterdir()) + labeled.paths)}
    features["other_4.jpg"] = features["s_2.jpg"] * 3 + 0.01  # same direction: a twin by features

    def embed(paths):
        return np.stack([features[p.name] for p in paths])

    plain = D.filter_pool(D.scan_pool(scenes / "Pool"), labeled.paths)
    assert plain.excluded == []
    pool = D.filter_pool(D.scan_pool(scenes / "Pool"), labeled.paths, embed=embed, min_cosine=0.99)
    reasons = excluded_reasons(pool)
    assert set(reasons) == {"other_4.jpg"}
    assert "s_2.jpg (feature cosine 1.000)" in reasons["other_4.jpg"]


def test_feature_near_duplicates_pure_numpy():
    labeled = np.array([[1.0, 0.0], [0.0, 1.0]])
    pool = np.array([[0.99, 0.05], [0.7, 0.7], [0.0, -1.0]])
    found = D.feature_near_duplicates(pool, labeled, min_cosine=0.95)
    assert set(found) == {0} and found[0].labeled_index == 0 and found[0].method == "features"
    assert D.feature_near_duplicates(np.zeros((0, 2)), labeled) == {}
    with pytest.raises(ValueError, match="features must be"):
        D.feature_near_duplicates(pool, np.ones((2, 3)))


def test_prepare_pools_passes_near_duplicate_options(scenes, tmp_path):
    labeled = D.read_labels_csv(scenes / "labels.csv").paths
    with Image.open(scenes / "Labeled" / "s_0.jpg") as image:
        ImageOps.mirror(image).save(scenes / "Pool" / "mirrored.jpg")
    cfgs = [{"name": "pool", "path": scenes / "Pool"}]
    (default,) = D.prepare_pools(cfgs, labeled, tmp_path / "a")  # the old call form
    assert [p.name for p, _ in default.excluded] == ["mirrored.jpg"]
    (paths_only,) = D.prepare_pools(cfgs, labeled, tmp_path / "b", hash_distance=None)
    assert paths_only.excluded == [] and len(paths_only) == 13
