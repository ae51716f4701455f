"""images.read_image: every bad input raises ImageError with a reason; every mode becomes RGB."""

import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from pseudolabel import images
from pseudolabel.images import ImageError, hash_distance, perceptual_hash, read_image


def _gradient(h=48, w=64):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) % 256], -1).astype(np.uint8)


def _jpeg_bytes(array=None, **kw):
    buf = io.BytesIO()
    Image.fromarray(_gradient() if array is None else array).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width, height) -> bytes:
    """A few-byte PNG whose header claims width x height 1-bit pixels (its data is not even there)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _raises_image_error(path, match, **kw):
    with pytest.raises(ImageError, match=match) as info:
        read_image(path, **kw)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


# ---------------------------------------------------------------- bad inputs

def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _raises_image_error(p, "empty file")


def test_text_file_with_jpg_extension(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n" * 20)
    _raises_image_error(p, "not a recognised image")


def test_corrupt_jpeg(tmp_path):
    data = bytearray(_jpeg_bytes())
    p = tmp_path / "corrupt.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    _raises_image_error(p, "cannot read image header")
    # a valid start, then the frame header destroyed (height and width 0)
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = b"\x00\x00\x00\x00"
    p.write_bytes(bytes(data))
    _raises_image_error(p, "not a recognised image")
    # Note: random bytes inside the entropy-coded scan are NOT detectable this way: libjpeg
    # resynchronises and Pillow does not surface its warnings, so such a file decodes (damaged).


def test_truncated_jpeg_raises_instead_of_grey_padding(tmp_path):
    p = tmp_path / "truncated.jpg"
    data = _jpeg_bytes(_gradient(200, 200))
    p.write_bytes(data[: len(data) // 2])
    _raises_image_error(p, "truncated")
    _raises_image_error(p, "truncated", size=32)  # also through the draft (reduced-scale) path


def test_truncated_jpeg_raises_even_if_someone_enabled_lenient_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    p = tmp_path / "truncated.jpg"
    data = _jpeg_bytes(_gradient(200, 200))
    p.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="LOAD_TRUNCATED_IMAGES"):
        _raises_image_error(p, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 100, 3), np.uint8)).save(buf, "PNG")
    p = tmp_path / "truncated.png"
    p.write_bytes(buf.getvalue()[:5000])
    _raises_image_error(p, "corrupt or truncated")


@pytest.mark.parametrize("side", [9000, 100_000])  # our own limit; beyond Pillow's own bomb limit
def test_decompression_bomb_refused_from_header_without_decoding(tmp_path, side):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_claiming(side, side))
    assert p.stat().st_size < 200
    start = time.perf_counter()
    _raises_image_error(p, "decompression bomb")
    assert time.perf_counter() - start < 1.0


def test_max_pixels_is_configurable(tmp_path):
    p = tmp_path / "ok.png"
    Image.fromarray(_gradient(40, 50)).save(p)
    _raises_image_error(p, "decompression bomb", max_pixels=1999)
    assert read_image(p, max_pixels=2000).shape == (40, 50, 3)


def test_too_small(tmp_path):
    p = tmp_path / "tiny.png"
    Image.fromarray(_gradient(8, 64)).save(p)
    _raises_image_error(p, "too small")
    assert read_image(p, min_side=8).shape == (8, 64, 3)


def test_directory_and_missing_path(tmp_path):
    d = tmp_path / "folder.jpg"
    d.mkdir()
    _raises_image_error(d, "directory")
    _raises_image_error(tmp_path / "missing.jpg", "no such file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    p = tmp_path / "secret.jpg"
    p.write_bytes(_jpeg_bytes())
    p.chmod(0)
    try:
        _raises_image_error(p, "permission denied")
    finally:
        p.chmod(0o644)


def test_permission_error_at_open_is_wrapped(tmp_path, monkeypatch):
    p = tmp_path / "secret.jpg"
    p.write_bytes(_jpeg_bytes())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images.Image, "open", refuse)
    _raises_image_error(p, "permission denied")


def test_image_error_is_a_value_error_and_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(ImageError("a/b.jpg", "broken")))
    assert isinstance(e, ValueError) and e.path == "a/b.jpg" and e.reason == "broken"
    assert str(e) == "a/b.jpg: broken"


def test_eps_is_not_handed_to_ghostscript(tmp_path):
    p = tmp_path / "drawing.jpg"
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
    _raises_image_error(p, "not a recognised image")


# ---------------------------------------------------------------- conversions

def test_rgb_jpeg_roundtrip(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(_jpeg_bytes())
    out = read_image(p)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - _gradient()).mean() < 4


def test_grayscale(tmp_path):
    p = tmp_path / "gray.png"
    Image.fromarray(np.full((20, 30), 77, np.uint8), "L").save(p)
    out = read_image(p)
    assert out.shape == (20, 30, 3) and (out == 77).all()


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    p = tmp_path / "palette.png"
    im = Image.new("P", (20, 20), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (0, 0, 10, 20))  # left half red, right half index 0 (transparent black)
    im.save(p, transparency=0)
    out = read_image(p)
    assert (out[:, :10] == [255, 0, 0]).all()
    assert (out[:, 10:] == 255).all()


def test_palette_without_transparency(tmp_path):
    p = tmp_path / "palette.gif"
    Image.fromarray(_gradient(20, 20)).convert("P").save(p)
    assert read_image(p).shape == (20, 20, 3)


def test_rgba_composited_on_white(tmp_path):
    p = tmp_path / "rgba.png"
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 2] = 200  # blue everywhere underneath
    rgba[:, :10, 3] = 255  # left half opaque, right half fully transparent
    rgba[:, 10:15, 3] = 128  # ... except a half-transparent band
    Image.fromarray(rgba, "RGBA").save(p)
    out = read_image(p).astype(int)
    assert (out[:, :10] == [0, 0, 200]).all()
    assert (out[:, 15:] == 255).all()
    assert np.allclose(out[:, 10:15], [127, 127, 227], atol=2)


def test_la_mode(tmp_path):
    p = tmp_path / "la.png"
    Image.fromarray(np.stack([np.full((20, 20), 50, np.uint8), np.zeros((20, 20), np.uint8)], -1), "LA").save(p)
    assert (read_image(p) == 255).all()  # fully transparent -> white


@pytest.mark.parametrize("size", [None, 16])  # 16: through the reduced-scale (draft) decode
def test_cmyk_jpeg(tmp_path, size):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (80, 80), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    out = read_image(p, size).astype(int)
    assert out.shape == ((80, 80, 3) if size is None else (16, 16, 3))
    assert np.allclose(out.mean(axis=(0, 1)), [255, 0, 0], atol=6)


def test_grayscale_jpeg_with_reduced_decode(tmp_path):
    p = tmp_path / "gray.jpg"
    Image.new("L", (200, 200), 90).save(p, quality=95)
    out = read_image(p, 20).astype(int)
    assert out.shape == (20, 20, 3) and np.allclose(out, 90, atol=2)


@pytest.mark.parametrize("fmt, dtype", [("PNG", "<u2"), ("TIFF", ">u2")])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, fmt, dtype):
    p = tmp_path / f"deep.{fmt.lower()}"
    grey = np.zeros((20, 30), np.uint16)
    grey[:, 10:20] = 32896  # 128 * 257
    grey[:, 20:] = 65535
    Image.fromarray(grey.astype(dtype)).save(p, fmt)
    out = read_image(p)
    assert (out[:, :10] == 0).all() and (out[:, 10:20] == 128).all() and (out[:, 20:] == 255).all()


def test_32_bit_int_and_float_modes():
    assert (images._to_rgb(Image.fromarray(np.full((4, 4), 200, np.int32), "I")).getpixel((0, 0))) == (200,) * 3
    assert (images._to_rgb(Image.fromarray(np.full((4, 4), 65535, np.int32), "I")).getpixel((0, 0))) == (255,) * 3
    assert (images._to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")).getpixel((0, 0))) == (128,) * 3


def _halves_jpeg(path, orientation):
    """40 wide x 20 high, left half red, right half blue, with an EXIF Orientation tag."""
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = [255, 0, 0]
    array[:, 20:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied(tmp_path):
    p = tmp_path / "rotated.jpg"
    _halves_jpeg(p, orientation=6)  # "rotate 90 CW to display": the left side ends up on top
    out = read_image(p).astype(int)
    assert out.shape == (40, 20, 3)
    assert np.allclose(out[:15].mean(axis=(0, 1)), [255, 0, 0], atol=20)
    assert np.allclose(out[-15:].mean(axis=(0, 1)), [0, 0, 255], atol=20)


def test_exif_orientation_with_resize(tmp_path):
    p = tmp_path / "rotated.jpg"
    _halves_jpeg(p, orientation=6)
    out = read_image(p, (32, 16), min_side=8).astype(int)
    assert out.shape == (32, 16, 3)
    assert out[:12, :, 0].mean() > 200 and out[-12:, :, 2].mean() > 200


@pytest.mark.parametrize("size, shape", [(32, (32, 32, 3)), ((24, 40), (24, 40, 3)), ((300, 100), (300, 100, 3))])
def test_resize_shapes(tmp_path, size, shape):
    p = tmp_path / "a.jpg"
    p.write_bytes(_jpeg_bytes(_gradient(200, 240)))
    out = read_image(p, size)
    assert out.shape == shape and out.dtype == np.uint8


def test_large_jpeg_reduced_decode_matches_full_decode(tmp_path):
    """The draft (1/8-scale) decode must give nearly the image a full decode + resize gives."""
    p = tmp_path / "big.jpg"
    p.write_bytes(_jpeg_bytes(_gradient(800, 800)))
    fast = read_image(p, 64).astype(int)
    with Image.open(p) as im:
        slow = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(fast - slow).mean() < 3


def test_max_side_keeps_the_aspect_and_decodes_large_jpegs_reduced(tmp_path, monkeypatch):
    p = tmp_path / "wide.jpg"
    p.write_bytes(_jpeg_bytes(_gradient(1200, 1600)))
    decoded = []
    load = ImageFile.ImageFile.load

    def recording_load(self):
        result = load(self)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    out = read_image(p, max_side=256)
    assert out.shape == (192, 256, 3)
    assert set(decoded) == {(400, 300)}  # libjpeg's 1/4 scale: the smallest still covering 256 x 256
    small = tmp_path / "small.jpg"
    small.write_bytes(_jpeg_bytes(_gradient(48, 64)))
    assert read_image(small, max_side=256).shape == (48, 64, 3)  # never enlarged
    with pytest.raises(ValueError, match="not both"):
        read_image(p, 64, max_side=64)


def test_bad_size_argument(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(_jpeg_bytes())
    with pytest.raises(ValueError, match="positive"):
        read_image(p, 0)


# ---------------------------------------------------------------- perceptual hash

def test_perceptual_hash_finds_reencoded_copy_not_other_picture(tmp_path):
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    other = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    Image.fromarray(base).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(_jpeg_bytes(base))
    a, b = read_image(tmp_path / "a.png"), read_image(tmp_path / "b.jpg")
    assert hash_distance(perceptual_hash(a), perceptual_hash(b)) <= 4
    assert hash_distance(str(perceptual_hash(a)), str(perceptual_hash(a))) == 0
    assert hash_distance(perceptual_hash(a), perceptual_hash(other)) > 10
