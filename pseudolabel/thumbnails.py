"""Small JPEG thumbnails of image files, for pages that embed or serve them.

Pixels come through `images.read_image` (so a bad file is an `ImageError`, never a crash); the
thumbnail keeps the aspect ratio and is at most `size` pixels on its longer side.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from pseudolabel.images import ImageError, read_image

THUMBNAIL_SIZE = 96
MAX_SOURCE_PIXELS = 40_000_000  # larger files are refused from the header (not decoded)


def thumbnail_jpeg(path: str | Path, size: int = THUMBNAIL_SIZE, quality: int = 80) -> bytes:
    """JPEG bytes of `path` shrunk to fit `size` x `size`; raises ImageError for unusable files."""
    return jpeg_bytes(read_image(path, max_pixels=MAX_SOURCE_PIXELS), size, quality)


def jpeg_bytes(pixels: np.ndarray, size: int = THUMBNAIL_SIZE, quality: int = 80) -> bytes:
    """An HxWx3 uint8 array as a JPEG of at most `size` pixels per side."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class ThumbnailCache:
    """`data_uri(path)` of each image once per page (an image can appear in several sections);
    None for a missing or unreadable file."""

    def __init__(self, size: int = THUMBNAIL_SIZE):
        self.size = size
        self._uris: dict[str, str | None] = {}

    def uri(self, path: str | Path | None) -> str | None:
        if path is None:
            return None
        key = str(path)
        if key not in self._uris:
            try:
                self._uris[key] = data_uri(thumbnail_jpeg(key, self.size))
            except ImageError:
                self._uris[key] = None
        return self._uris[key]
