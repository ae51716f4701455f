"""Perceptual hashes of image files and near-duplicate detection.

Every image gets a signature (`image_signature`): the 64-bit pHash and a low-frequency DCT
descriptor of eight views of it -- the whole image, its mirror, the centre 80% crop and its
mirror, and the four 80% corner crops. A pool image is a near-duplicate of a labeled image when
(`match_near_duplicates`):
1. hashes: the whole images' pHashes are within `hash_distance` bits, or a view of the pool
   image (whole, mirror, centre crop, mirrored crop) is within half that of a view of the
   labeled image (whole, centre or corner crop). This catches re-encoded, resized, recoloured,
   mirrored and 80%-cropped copies. Views must agree more closely than whole images: on House
   Rooms, other photos of the same room reach 6-8 bits between a mirror or crop view and the
   labeled image, copies 0-2; or
2. geometry: for its 3 most similar labeled images (cosine of the DCT descriptors), ORB keypoints
   of the pool image (or its mirror) match the labeled image's under one rotation + scale +
   shift with at least `min_inliers` RANSAC inliers (OpenCV). This catches rotated and
   off-centre cropped copies, which change a global hash too much. Distinct photos of similar
   rooms share few consistent keypoints (see DEFAULT_MIN_INLIERS).
3. optionally, features: the caller's embeddings (e.g. a backbone's pooled features) have a
   cosine similarity >= `min_cosine` (`feature_near_duplicates`, pure NumPy).

Images are decoded for this at most SIGNATURE_SIDE pixels on the longer side: large JPEGs are
decoded at 1/2..1/8 scale by libjpeg (`read_image(max_side=...)`), never at full size.
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pseudolabel.data.errors import DataWarning, problems_error
from pseudolabel.images import ImageError, read_image
from pseudolabel.rundir import atomic_write_json

# Largest pHash Hamming distance treated as "the same picture". Measured on House Rooms (5201
# images, 13.5M pairs): distances are 0 (121 pairs), 2 (16), 4 (2), 6 (3), 8 (11), then 10 (30),
# 12 (193), ... Pairs up to 8 are re-encodes or near-identical shots (2 unrelated pairs among the
# 14 at 6-8); from 10 on they are mostly unrelated. A false positive costs one pool image, a miss
# can leak a test image into training, so the threshold sits at the top of the duplicate mass.
DEFAULT_HASH_DISTANCE = 8

# Fewest RANSAC inliers of ORB keypoint matches that make a geometric near-duplicate. Measured on
# House Rooms at 224 px (~400 keypoints an image; BENCHMARKS.md, docs/near_duplicates.png): 5-degree
# rotations of labeled images keep 177+ inliers, 90% corner crops 138+, rotated + 85% cropped
# copies 45+ (10% under 163); copies found in the pools 119-190. Distinct photos: another shot of
# the same (symmetric) room reached 47, a letterboxed image 26, most fewer than 10. A missed copy
# leaks a test image, a false match costs one pool image: the threshold sits under the copies.
DEFAULT_MIN_INLIERS = 40

# Images are decoded for signatures and keypoints at most this many pixels on the longer side.
SIGNATURE_SIDE = 256
CROP_FRACTION = 0.8
VIEWS = ("whole", "mirror", "centre crop", "mirrored centre crop",
         "top-left crop", "top-right crop", "bottom-left crop", "bottom-right crop")
POOL_VIEWS = (0, 1, 2, 3)  # views of the pool image compared ...
LABELED_VIEWS = (0, 2, 4, 5, 6, 7)  # ... with these views of the labeled image
GEOMETRIC_CANDIDATES = 3  # labeled images per pool image checked by keypoints
CANDIDATE_MIN_COSINE = 0.7  # below this descriptor similarity a pair is not worth checking
_DESCRIPTOR_DIMS = 63  # 8x8 low-frequency DCT block without its DC term

SIGNATURE_VERSION = 2  # bump when the views, the hash or the descriptor change


@dataclass(frozen=True)
class ImageSignature:
    """pHash (as int) and DCT descriptor (float16 bytes) of each of the VIEWS of one image."""

    hashes: tuple[int, ...]
    descriptors: bytes

    @property
    def whole_hash(self) -> int:
        return self.hashes[0]

    def descriptor_array(self) -> np.ndarray:
        """[len(VIEWS), 63] float32, each row L2-normalised."""
        return np.frombuffer(self.descriptors, dtype=np.float16).reshape(len(VIEWS), -1).astype(np.float32)


def image_views(pixels: np.ndarray) -> list[np.ndarray]:
    """The VIEWS of an HxWx3 image, in order."""
    h, w = pixels.shape[:2]
    ch, cw = max(1, round(h * CROP_FRACTION)), max(1, round(w * CROP_FRACTION))
    top, left = (h - ch) // 2, (w - cw) // 2
    centre = pixels[top:top + ch, left:left + cw]
    corners = [pixels[y:y + ch, x:x + cw] for y, x in ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw))]
    return [pixels, pixels[:, ::-1], centre, centre[:, ::-1], *corners]


def image_signature(pixels: np.ndarray) -> ImageSignature:
    """The signature of an HxWx3 uint8 image (see the module docstring)."""
    import imagehash
    from PIL import Image
    from scipy.fft import dctn

    hashes, descriptors = [], []
    for view in image_views(pixels):
        image = Image.fromarray(np.ascontiguousarray(view))
        hashes.append(int(str(imagehash.phash(image)), 16))
        grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
        low = dctn(grey)[:8, :8].ravel()[1:]
        descriptors.append(low / (np.linalg.norm(low) or 1.0))
    return ImageSignature(tuple(hashes), np.array(descriptors, dtype=np.float16).tobytes())


def read_signature_image(path: str | Path) -> np.ndarray:
    """The pixels signatures and keypoints are computed from (reduced; JPEGs decoded via draft)."""
    return read_image(path, max_side=SIGNATURE_SIDE)


class HashCache:
    """Image signature per file, keyed by resolved path, size and mtime.

    In memory by default (one per process, shared by every caller that passes no cache); with
    `path`, loaded from and `save()`d to a JSON file, so repeated runs on a large pool skip the
    decoding. A file of another SIGNATURE_VERSION is ignored (signatures are recomputed).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, tuple[int, int, ImageSignature]] = {}  # path -> (size, mtime_ns, signature)
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("version") != SIGNATURE_VERSION:
                return  # an older cache: recompute everything
            self._entries = {
                k: (int(s), int(m), ImageSignature(tuple(int(h, 16) for h in hashes), base64.b64decode(d)))
                for k, (s, m, hashes, d) in raw["signatures"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            warnings.warn(DataWarning(f"{self.path}: ignoring unreadable hash cache ({e})"), stacklevel=3)

    def get(self, path: str | Path) -> ImageSignature:
        """The image's signature; ImageError if it cannot be read."""
        resolved = Path(path).resolve()
        try:
            st = resolved.stat()
        except OSError:
            st = None
        key = str(resolved)
        if st is not None:
            cached = self._entries.get(key)
            if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
                return cached[2]
        value = image_signature(read_signature_image(path))
        if st is not None:
            with self._lock:
                self._entries[key] = (st.st_size, st.st_mtime_ns, value)
        return value

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            entries = {k: [s, m, [f"{h:016x}" for h in sig.hashes], base64.b64encode(sig.descriptors).decode()]
                       for k, (s, m, sig) in sorted(self._entries.items())}
        atomic_write_json(self.path, {"kind": "pseudolabel image signature cache", "version": SIGNATURE_VERSION,
                                      "signatures": entries})


_DEFAULT_CACHE = HashCache()


def _parallel(function, items: Sequence, progress: bool | None, what: str) -> list:
    from tqdm.auto import tqdm

    # Decoding and OpenCV release the GIL for the most part: two threads are ~1.5x faster on 2 cores.
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(function, items), total=len(items), desc=what, unit="img",
                         disable=None if progress is None else not progress, leave=False))


def hash_images(paths: Sequence[Path], cache: HashCache | None, progress: bool | None, what: str):
    """(signatures, errors): ImageSignature per path (None if unreadable), and {index: ImageError}."""
    cache = cache or _DEFAULT_CACHE

    def one(path):
        try:
            return cache.get(path)
        except ImageError as e:
            return e

    results = _parallel(one, paths, progress, what)
    errors = {i: r for i, r in enumerate(results) if isinstance(r, ImageError)}
    signatures = [None if isinstance(r, ImageError) else r for r in results]
    return signatures, errors


def min_hash_distances(query: np.ndarray, reference: np.ndarray, chunk: int = 4096):
    """For each query hash: (smallest Hamming distance to a reference hash, its index).

    `query` [n] or [n, q] and `reference` [m] or [m, r] uint64: with several hashes per image,
    the distance of two images is the smallest over all pairs of their hashes.
    """
    query = query.reshape(len(query), -1)
    reference = reference.reshape(len(reference), -1)
    best = np.full(len(query), 65, dtype=np.int64)
    where = np.zeros(len(query), dtype=np.int64)
    if len(reference) == 0:
        return best, where
    for start in range(0, len(query), chunk):
        block = query[start:start + chunk]
        distance = np.full((len(block), len(reference)), 65, dtype=np.int64)
        for i in range(query.shape[1]):
            for j in range(reference.shape[1]):
                np.minimum(distance, np.bitwise_count(block[:, i, None] ^ reference[None, :, j]), out=distance)
        where[start:start + chunk] = distance.argmin(axis=1)
        best[start:start + chunk] = distance.min(axis=1)
    return best, where


@dataclass(frozen=True)
class NearDuplicate:
    """Why a pool image counts as a copy of labeled image `labeled_index`."""

    labeled_index: int
    method: str  # "phash", "keypoints" or "features"
    detail: str  # the distance, for the report

    def reason(self, labeled_path) -> str:
        return f"{labeled_path} ({self.detail})"


def match_near_duplicates(
    candidates: Sequence[Path],
    labeled: Sequence[Path],
    hash_distance: int = DEFAULT_HASH_DISTANCE,
    *,
    min_inliers: int | None = DEFAULT_MIN_INLIERS,
    embed: Callable[[Sequence[Path]], np.ndarray] | None = None,
    min_cosine: float = 0.95,
    cache: HashCache | None = None,
    progress: bool | None = None,
    what: str = "pool",
) -> tuple[dict[int, NearDuplicate], dict[int, ImageError]]:
    """({candidate index: NearDuplicate}, {candidate index: ImageError}) for `candidates` vs `labeled`.

    `min_inliers` None skips the keypoint check; `embed` (paths -> [n, d] features), when given,
    adds the feature check. A labeled image that cannot be read is a DataError (it could not be
    checked for twins); an unreadable candidate is returned in the errors.
    """
    labeled_sigs, errors = hash_images(labeled, cache, progress, "hashing labeled images")
    if errors:
        raise problems_error("labeled images", "cannot check the pool for duplicates of unreadable images",
                             [str(e) for e in errors.values()])
    pool_sigs, pool_errors = hash_images(candidates, cache, progress, f"hashing pool {what}")
    readable = [i for i in range(len(candidates)) if i not in pool_errors]
    matches = _hash_matches(readable, pool_sigs, labeled_sigs, hash_distance)
    if min_inliers is not None:
        rest = [i for i in readable if i not in matches]
        matches.update(_keypoint_matches(rest, candidates, pool_sigs, labeled, labeled_sigs, min_inliers,
                                         progress, what))
    if embed is not None:
        rest = [i for i in readable if i not in matches]
        if rest:
            found = feature_near_duplicates(embed([candidates[i] for i in rest]), embed(labeled), min_cosine)
            matches.update({rest[k]: m for k, m in found.items()})
    return matches, pool_errors


def _hash_matches(readable, pool_sigs, labeled_sigs, hash_distance) -> dict[int, NearDuplicate]:
    """Whole images within `hash_distance`, or any other pair of views within half of it."""
    if not readable or not labeled_sigs:
        return {}
    query = np.array([[pool_sigs[i].hashes[v] for v in POOL_VIEWS] for i in readable], dtype=np.uint64)
    reference = np.array([[s.hashes[v] for v in LABELED_VIEWS] for s in labeled_sigs], dtype=np.uint64)
    whole, whole_nearest = min_hash_distances(query[:, 0], reference[:, 0])
    views, views_nearest = min_hash_distances(query, reference)
    out = {}
    for k, i in enumerate(readable):
        if whole[k] <= hash_distance:
            out[i] = NearDuplicate(int(whole_nearest[k]), "phash", f"phash distance {whole[k]}")
        elif views[k] <= hash_distance // 2:
            j = int(views_nearest[k])
            out[i] = NearDuplicate(j, "phash", f"phash distance {views[k]}"
                                   + _views_note(pool_sigs[i], labeled_sigs[j], views[k]))
    return out


def _views_note(pool_sig: ImageSignature, labeled_sig: ImageSignature, distance: int) -> str:
    """Which views matched, when not the two whole images ('', ', mirror vs top-left crop')."""
    for p in POOL_VIEWS:
        for v in LABELED_VIEWS:
            if bin(pool_sig.hashes[p] ^ labeled_sig.hashes[v]).count("1") == distance:
                return "" if p == v == 0 else f", {VIEWS[p]} vs labeled {VIEWS[v]}"
    return ""


def geometric_candidates(pool_sigs: Sequence[ImageSignature], labeled_sigs: Sequence[ImageSignature],
                         k: int = GEOMETRIC_CANDIDATES, min_cosine: float = CANDIDATE_MIN_COSINE,
                         chunk: int = 2048) -> list[list[int]]:
    """For each pool signature, up to `k` labeled indices, most similar first (DCT descriptors,
    best over view pairs), with similarity >= `min_cosine`."""
    if not labeled_sigs:
        return [[] for _ in pool_sigs]
    reference = np.stack([s.descriptor_array()[list(LABELED_VIEWS)] for s in labeled_sigs])  # [m, 6, d]
    out = []
    for start in range(0, len(pool_sigs), chunk):
        query = np.stack([s.descriptor_array()[list(POOL_VIEWS)] for s in pool_sigs[start:start + chunk]])
        similarity = np.einsum("nqd,mrd->nmqr", query, reference).reshape(len(query), len(reference), -1).max(axis=2)
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        out += [[int(j) for j in row if similarity[n, j] >= min_cosine] for n, row in enumerate(order)]
    return out


def _keypoint_matches(indices, candidates, pool_sigs, labeled, labeled_sigs, min_inliers, progress, what):
    """Keypoint-verified near-duplicates among candidates[indices] (see the module docstring)."""
    shortlist = geometric_candidates([pool_sigs[i] for i in indices], labeled_sigs)
    labeled_keypoints: dict[int, tuple] = {}

    def labeled_features(j):
        # Two threads may compute the same entry once each: harmless, and no lock held while decoding.
        if j not in labeled_keypoints:
            labeled_keypoints.setdefault(j, keypoints(read_signature_image(labeled[j])))
        return labeled_keypoints[j]

    def one(n):
        if not shortlist[n]:
            return None
        try:
            pixels = read_signature_image(candidates[indices[n]])
        except ImageError:
            return None  # read before; a file changed since is kept (it was checked by hash)
        own = (keypoints(pixels), keypoints(pixels[:, ::-1]))
        best = None
        for j in shortlist[n]:
            for mirrored, features in enumerate(own):
                found = match_keypoints(features, labeled_features(j))
                if found and (best is None or found[0] > best[1][0]):
                    best = (j, found, mirrored)
        if best is None or best[1][0] < min_inliers:
            return None
        j, (inliers, angle, scale), mirrored = best
        detail = (f"{inliers} keypoint inliers{', mirrored' if mirrored else ''}, rotation {angle:+.1f} deg, "
                  f"scale {scale:.2f}")
        return NearDuplicate(j, "keypoints", detail)

    results = _parallel(one, range(len(indices)), progress, f"checking pool {what} by keypoints")
    return {indices[n]: r for n, r in enumerate(results) if r is not None}


def keypoints(pixels: np.ndarray):
    """(points [n, 2] float32, ORB descriptors [n, 32] uint8 or None) of an HxWx3 image."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
    found, descriptors = cv2.ORB_create(nfeatures=500, fastThreshold=10).detectAndCompute(grey, None)
    points = np.float32([k.pt for k in found]).reshape(-1, 2)
    return points, descriptors


def match_keypoints(a, b, ratio: float = 0.8) -> tuple[int, float, float] | None:
    """(RANSAC inliers, rotation in degrees, scale) of the best rotation + scale + shift taking
    keypoints `a` onto `b` (Lowe's ratio test first); None when too few keypoints match."""
    import cv2

    (points_a, desc_a), (points_b, desc_b) = a, b
    if desc_a is None or desc_b is None or len(desc_a) < 8 or len(desc_b) < 8:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc_a, desc_b, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    if len(good) < 6:
        return None
    source = points_a[[m.queryIdx for m in good]]
    target = points_b[[m.trainIdx for m in good]]
    transform, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=4.0)
    if transform is None or inliers is None:
        return None
    angle = math.degrees(math.atan2(transform[1, 0], transform[0, 0]))
    return int(inliers.sum()), angle, math.hypot(transform[0, 0], transform[1, 0])


def feature_near_duplicates(pool_features: np.ndarray, labeled_features: np.ndarray,
                            min_cosine: float = 0.95) -> dict[int, NearDuplicate]:
    """{pool row: NearDuplicate} for rows whose cosine similarity to a labeled row is >= min_cosine.

    Pure NumPy on precomputed features (e.g. a backbone's pooled embeddings), [n, d] and [m, d].
    """
    pool_features = np.asarray(pool_features, dtype=np.float64)
    labeled_features = np.asarray(labeled_features, dtype=np.float64)
    if pool_features.ndim != 2 or labeled_features.ndim != 2 or pool_features.shape[1] != labeled_features.shape[1]:
        raise ValueError(f"features must be [n, d] and [m, d], got {pool_features.shape} and {labeled_features.shape}")
    if len(pool_features) == 0 or len(labeled_features) == 0:
        return {}

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(pool_features) @ unit(labeled_features).T
    nearest = similarity.argmax(axis=1)
    best = similarity[np.arange(len(similarity)), nearest]
    return {int(i): NearDuplicate(int(nearest[i]), "features", f"feature cosine {best[i]:.3f}")
            for i in np.nonzero(best >= min_cosine)[0]}


def find_near_duplicates(
    paths: Sequence[str | Path],
    hash_distance: int = DEFAULT_HASH_DISTANCE,
    *,
    cache: HashCache | None = None,
    progress: bool | None = None,
) -> list[list[int]]:
    """Groups (indices into `paths`, sorted) of images whose whole-image pHashes are within
    `hash_distance` of each other (labeled twins kept in one split part).

    Transitive (union-find): a~b and b~c puts a, b, c together. Only groups of 2+ are returned.
    DataError if an image cannot be read.
    """
    paths = [Path(p) for p in paths]
    signatures, errors = hash_images(paths, cache, progress, "hashing labeled images")
    if errors:
        raise problems_error("near-duplicate check", "unreadable images", [str(e) for e in errors.values()])
    h = np.array([s.whole_hash for s in signatures], dtype=np.uint64)
    parent = list(range(len(h)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(h)):
        close = np.nonzero(np.bitwise_count(h[i + 1:] ^ h[i]) <= hash_distance)[0] + i + 1
        for j in close:
            parent[find(int(j))] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(h)):
        groups.setdefault(find(i), []).append(i)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)
