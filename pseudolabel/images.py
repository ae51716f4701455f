"""Read one image file robustly (Pillow).

`read_image` is the only way pixels enter pseudolabel. It returns an HxWx3 uint8 RGB array or
raises `ImageError` (a `ValueError` naming the file and the reason) -- never a raw PIL/OS error --
so callers can skip bad files of an unlabeled pool and report bad labeled ones by name.

Decisions:
- Pixel budget and minimum side are checked from the header, before any pixel is decoded, so a
  decompression bomb is never decoded.
- Every pixel is decoded (`Image.load`) and truncated files raise. Pillow's global
  `ImageFile.LOAD_TRUNCATED_IMAGES` would silently pad truncated images with grey; if someone
  set it, `read_image` turns it back off (with a warning): a grey-padded picture is a wrong
  training example, not a readable one.
- Only raster formats are opened (`_FORMATS`): Pillow would hand EPS files to Ghostscript.
- Transparency is composited on white (not dropped): the colour under transparent pixels is
  arbitrary (often black), while viewers show such images on a light page.
- 16-bit and 32-bit integer modes are scaled to 8 bit (65535 -> 255), not clipped.
- Resizing squashes to exactly (h, w) -- no crop, the aspect ratio is not kept -- like Keras'
  `image_dataset_from_directory`, which the original tutorial used. JPEGs much larger than the
  target are decoded at a reduced scale (`Image.draft`, 1/2..1/8 in libjpeg), then resized with
  an antialiasing filter.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import imagehash
import numpy as np
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

# Formats Pillow may identify a file as (camera MPO files come through the JPEG opener).
_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # those that swap width and height
_WHITE = (255, 255, 255)

Size = int | Sequence[int] | None


class ImageError(ValueError):
    """An image file that cannot be used; `path` and `reason` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) through pickling (multiprocessing, tf.numpy_function)
        return (type(self), (self.path, self.reason))


def read_image(
    path: str | os.PathLike,
    size: Size = None,
    *,
    max_side: int | None = None,
    min_side: int = 16,
    max_pixels: int = 64_000_000,
) -> np.ndarray:
    """Decode `path` to an HxWx3 uint8 RGB array, optionally resized to `size` (int or (h, w)).

    `max_side` (instead of `size`): shrink, keeping the aspect ratio, so the longer side is at
    most `max_side` (smaller images are left as they are); a large JPEG is decoded at a reduced
    scale, never at full size (what hashing uses).
    Raises ImageError for missing/unreadable paths, empty files, non-images, corrupt or truncated
    data, images over `max_pixels` (checked before decoding) and images with a side < `min_side`.
    """
    if size is not None and max_side is not None:
        raise ValueError("give size or max_side, not both")
    if max_side is not None and max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side!r}")
    target = _target_size(size)
    _check_file(path)
    _require_strict_decoding()
    try:
        image = Image.open(path, formats=_FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"decompression bomb refused ({e})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not a recognised image file (JPEG, PNG, WebP, BMP, GIF, TIFF)") from None
    except PermissionError:
        raise ImageError(path, "cannot read file: permission denied") from None
    except Exception as e:  # noqa: BLE001 -- any header parse failure means an unusable file
        raise ImageError(path, f"cannot read image header: {_describe(e)}") from None
    with image:
        _check_header(path, image, min_side=min_side, max_pixels=max_pixels)
        # A square draft target covers max_side on both sides whatever the EXIF orientation.
        _decode(path, image, target if max_side is None else (max_side, max_side))
        try:
            rgb = _to_rgb(ImageOps.exif_transpose(image))
            if max_side is not None:
                target = _shrunk_size(rgb.size, max_side)
            if target is not None and rgb.size != (target[1], target[0]):
                rgb = rgb.resize((target[1], target[0]), Image.Resampling.BICUBIC)
            return np.array(rgb, dtype=np.uint8)  # a writable copy
        except MemoryError:
            raise ImageError(path, "not enough memory to convert") from None
        except Exception as e:  # noqa: BLE001
            raise ImageError(path, f"cannot convert {image.mode} image to RGB: {_describe(e)}") from None


def _decode(path, image: Image.Image, target: tuple[int, int] | None) -> None:
    """Decode every pixel (at a reduced JPEG scale when that still covers `target`)."""
    try:
        if target is not None:
            _draft(image, target)
        image.load()
    except MemoryError:
        raise ImageError(path, "not enough memory to decode") from None
    except Exception as e:  # noqa: BLE001 -- Pillow raises OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(path, f"corrupt or truncated image data: {_describe(e)}") from None
    _check_fully_decoded(path, image)


def perceptual_hash(image: np.ndarray) -> imagehash.ImageHash:
    """pHash (64 bits) of an HxWx3 uint8 image, for near-duplicate detection.

    The same picture re-encoded or resized gives a distance of 0-4; unrelated pictures ~32.
    `str(hash)` is a 16-digit hex string that `hash_distance` also accepts.
    """
    return imagehash.phash(Image.fromarray(np.asarray(image, dtype=np.uint8)))


def hash_distance(a: imagehash.ImageHash | str, b: imagehash.ImageHash | str) -> int:
    """Hamming distance between two perceptual hashes (ImageHash objects or their hex strings)."""
    return int(_as_hash(a) - _as_hash(b))


def _as_hash(h: imagehash.ImageHash | str) -> imagehash.ImageHash:
    return imagehash.hex_to_hash(h) if isinstance(h, str) else h


def _target_size(size: Size) -> tuple[int, int] | None:
    """None, or (height, width) from an int or a pair."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return h, w


def _shrunk_size(size: tuple[int, int], max_side: int) -> tuple[int, int] | None:
    """(height, width) with the longer side max_side and the aspect ratio kept; None if it fits."""
    width, height = size
    if max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _check_file(path) -> None:
    """Reasons a path cannot be an image, found without opening it as one."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except OSError as e:
        raise ImageError(path, f"cannot access file: {_describe(e)}") from None
    if p.is_dir():
        raise ImageError(path, "is a directory, not an image file")
    if not p.is_file():
        raise ImageError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise ImageError(path, "cannot read file: permission denied")


def _check_header(path, image: Image.Image, *, min_side: int, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            path, f"decompression bomb refused: {width}x{height} = {width * height:,} pixels "
            f"> max_pixels {max_pixels:,}")
    if min(width, height) < min_side:
        raise ImageError(path, f"image too small: {width}x{height}, both sides must be >= {min_side}")


def _require_strict_decoding() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set; pseudolabel turns it off so that truncated "
            "images raise instead of being padded with grey", RuntimeWarning, stacklevel=3)
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def _check_fully_decoded(path, image: Image.Image) -> None:
    # Belt and braces: Pillow's JPEG reader marks an image it padded after a premature end.
    if getattr(image, "_ended", False):
        raise ImageError(path, "corrupt or truncated image data: premature end of JPEG data")


def _draft(image: Image.Image, target: tuple[int, int]) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers the target size.

    `draft` sizes are in stored (pre-EXIF-rotation) pixels, so a rotated target is swapped.
    """
    if image.format not in ("JPEG", "MPO"):
        return
    h, w = target
    if _exif_orientation(image) in _TRANSPOSING_ORIENTATIONS:
        h, w = w, h
    image.draft("RGB", (w, h))


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 -- a broken EXIF block is not a reason to lose the image
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, scaling high bit depths and compositing alpha on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, _WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _scale_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Grey levels of a 16/32-bit integer or float image -> uint8.

    I;16*: 0..65535 -> 0..255. I (32-bit): treated as 8-bit data if it fits, else as 16-bit.
    F: treated as 0..1 if it fits, else as 0..255.
    """
    x = pixels.astype(np.float64)
    if mode == "F":
        x = np.nan_to_num(x)
        scale = 255.0 if x.max(initial=0) <= 1.0 else 1.0
    elif mode == "I" and x.max(initial=0) <= 255:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0
    return np.clip(np.rint(x * scale), 0, 255).astype(np.uint8)


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
