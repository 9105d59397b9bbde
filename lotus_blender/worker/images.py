"""Reading input images into float32 RGB arrays in [0, 1], top row first.

The Blender side writes ``.npy`` files (sRGB-encoded display values, HxWx3 or HxWx4); plain image
files (PNG, JPEG, TIFF, BMP, WebP; 8 or 16 bit; grey, RGBA, palette) are read with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ImageReadError(ValueError):
    """An input that cannot be read as an image (one clear message for that job)."""


def read_image(path: str | Path) -> np.ndarray:
    """HxWx3 float32 in [0, 1]; alpha is dropped, grey is repeated into RGB."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"input image not found: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"input image is an empty file: {path.name}")
    if path.suffix.lower() == ".npy":
        array = _read_npy(path)
    else:
        array = _read_with_pillow(path)
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageReadError(f"input image has no pixels: {path.name}")
    array = np.nan_to_num(array.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(np.clip(array, 0.0, 1.0))


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as ex:
        raise ImageReadError(f"cannot read {path.name}: {ex}") from ex
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{path.name}: expected an HxWx3 or HxWx4 array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise ImageReadError(f"{path.name}: expected numbers, got {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    channels = array.shape[2]
    if channels in (1, 2):  # grey (+ alpha)
        return np.repeat(array[:, :, :1], 3, axis=2)
    return array[:, :, :3]


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return _pillow_to_float(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as ex:
        raise ImageReadError(f"cannot read image {path.name}: {ex}") from ex


def _pillow_to_float(image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grey: keep the full precision.
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        grey = np.asarray(image, dtype=np.float32)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGB;16", "RGBA;16", "RGB;16B", "RGBA;16B") or mode.endswith(";16"):
        array = np.asarray(image).astype(np.float32) / 65535.0
        return array[:, :, :3] if array.ndim == 3 else np.repeat(array[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    rgb = image.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0
