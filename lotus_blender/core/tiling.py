"""Overlapping tiles for high-resolution and seamless predictions (numpy only).

Plain tiling:
    blender = TileBlender(h, w, channels)
    for tile in plan_tiles(h, w, tile_size, overlap):
        prediction = model(image[tile.slices])
        blender.add(tile, prediction, blend_weights(tile.height, tile.width, overlap))
    result = blender.result()

Seamless (the output tiles across the image's opposite edges): tiles are planned on the torus, so the seam
at the image border is blended like any other tile border:
    blender = TileBlender(h, w, channels, wrap=True)
    for tile in plan_tiles_wrapped(h, w, tile_size, overlap):
        prediction = model(extract_tile(image, tile, wrap=True))
        blender.add(tile, prediction, blend_weights(tile.height, tile.width, overlap))

Whole-image seamless without tiling: predict on ``pad_wrap(image, pad)``, then ``fold_wrap(prediction, pad)``
blends the margins into the opposite edges (continuous across the wrap); ``crop_pad`` merely cuts them off.

Weights are accumulated in float64, so the tiny weights at ramp ends never lose precision.
"""

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A tile's pixel box, half-open: rows y0..y1-1, columns x0..x1-1 (row 0 = top).

    Tiles from plan_tiles_wrapped live on the torus: y1/x1 may exceed the image size and the pixels
    wrap around (use extract_tile(..., wrap=True) and TileBlender(..., wrap=True)).
    """

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self):
        return self.y1 - self.y0

    @property
    def width(self):
        return self.x1 - self.x0

    @property
    def slices(self):
        """(row slice, column slice) for indexing an image with a non-wrapped tile."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def _check_tiling(height, width, tile, overlap):
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if int(tile) < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0 <= int(overlap) < int(tile):
        raise ValueError(f"overlap must satisfy 0 <= overlap < tile, got overlap={overlap}, tile={tile}")
    return int(height), int(width), int(tile), int(overlap)


def _starts(size, tile, overlap):
    """Tile starts along one axis: stride tile - overlap, the last tile aligned to the far edge."""
    if size <= tile:
        return [0], size
    stride = tile - overlap
    count = math.ceil((size - tile) / stride) + 1
    return [min(i * stride, size - tile) for i in range(count)], tile


def plan_tiles(height, width, tile, overlap):
    """Tiles covering a height x width image exactly, row-major (top row of tiles first).

    Neighbouring tiles overlap by at least ``overlap`` pixels (more for the last, edge-aligned tile);
    a tile is never larger than the image (a small image is a single tile of its own size).
    """
    height, width, tile, overlap = _check_tiling(height, width, tile, overlap)
    row_starts, tile_h = _starts(height, tile, overlap)
    col_starts, tile_w = _starts(width, tile, overlap)
    return [Tile(y, y + tile_h, x, x + tile_w) for y in row_starts for x in col_starts]


def _wrapped_starts(size, tile, overlap):
    """Evenly spaced starts on a circle of ``size`` pixels, neighbours overlapping by >= overlap."""
    if size + overlap <= tile:
        # One tile wrapping onto itself: its head and tail cover the same pixels and blend across the seam
        return [0], size + overlap
    count = math.ceil(size / (tile - overlap))
    return [round(i * size / count) for i in range(count)], tile


def plan_tiles_wrapped(height, width, tile, overlap):
    """Tiles on the torus (the image repeated in both directions) for seamless predictions.

    Every tile border, including the one at the image's edges, has an overlap of at least ``overlap``
    pixels, so blending with blend_weights makes the result continuous across the opposite edges.
    Tile boxes start inside the image and may run past its far edges (they wrap).
    """
    height, width, tile, overlap = _check_tiling(height, width, tile, overlap)
    if overlap < 1:
        raise ValueError("seamless tiling needs an overlap of at least 1 pixel")
    row_starts, tile_h = _wrapped_starts(height, tile, overlap)
    col_starts, tile_w = _wrapped_starts(width, tile, overlap)
    return [Tile(y, y + tile_h, x, x + tile_w) for y in row_starts for x in col_starts]


def extract_tile(image, tile, wrap=False):
    """The pixels of ``tile`` from an HxW or HxWxC image; wrap=True reads past the edges modulo the size."""
    image = np.asarray(image)
    if not wrap:
        return image[tile.slices]
    rows = np.arange(tile.y0, tile.y1) % image.shape[0]
    cols = np.arange(tile.x0, tile.x1) % image.shape[1]
    return image[rows[:, None], cols[None, :]]


def _ramp(length, overlap):
    """1-D raised-cosine weights: rising over ``overlap`` pixels at both ends, 1 in the middle, > 0."""
    positions = np.arange(length, dtype=np.float64)
    distance_to_edge = np.minimum(positions, length - 1 - positions)
    if overlap < 1:
        return np.ones(length, dtype=np.float64)
    # Sampling at pixel centres keeps the ends strictly positive and makes two overlapping ramps sum to 1
    phase = np.clip((distance_to_edge + 0.5) / overlap, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * phase)


def blend_weights(tile_h, tile_w, overlap):
    """HxW float32 weights for one tile: raised-cosine ramps over ``overlap`` pixels on each side.

    Strictly > 0 everywhere (accumulated weights never divide by zero) and 1 in the middle. Where two tiles
    overlap by exactly ``overlap`` pixels their weights sum to 1.
    """
    tile_h, tile_w, overlap = int(tile_h), int(tile_w), int(overlap)
    if tile_h < 1 or tile_w < 1:
        raise ValueError(f"tile size must be positive, got {tile_h}x{tile_w}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    return np.outer(_ramp(tile_h, overlap), _ramp(tile_w, overlap)).astype(np.float32)


class TileBlender:
    """Accumulates weighted tile predictions and returns their weighted average.

    ``values`` passed to add() are (tile_h, tile_w, channels), or (tile_h, tile_w) when channels == 1;
    result() is (height, width, channels), or (height, width) if 2-D values were added.
    wrap=True: tile boxes may run past the image edges and are accumulated modulo the image size.
    """

    def __init__(self, height, width, channels=1, wrap=False):
        if int(height) < 1 or int(width) < 1 or int(channels) < 1:
            raise ValueError(f"need positive height, width and channels, got {height}, {width}, {channels}")
        self.height = int(height)
        self.width = int(width)
        self.channels = int(channels)
        self.wrap = bool(wrap)
        self._value_sum = np.zeros((self.height, self.width, self.channels), dtype=np.float64)
        self._weight_sum = np.zeros((self.height, self.width), dtype=np.float64)
        self._added_2d = False

    def add(self, tile, values, weights=None):
        """Accumulate one tile's prediction; weights (tile_h, tile_w) default to uniform."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 2 and self.channels == 1:
            values = values[..., None]
            self._added_2d = True
        expected = (tile.height, tile.width, self.channels)
        if values.shape != expected:
            raise ValueError(f"values for {tile} must have shape {expected}, got {values.shape}")
        if weights is None:
            weights = np.ones((tile.height, tile.width), dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (tile.height, tile.width):
            raise ValueError(f"weights for {tile} must have shape {expected[:2]}, got {weights.shape}")
        weighted = values * weights[..., None]
        if not self.wrap:
            if not (0 <= tile.y0 < tile.y1 <= self.height and 0 <= tile.x0 < tile.x1 <= self.width):
                raise ValueError(f"{tile} lies outside the {self.height}x{self.width} image (use wrap=True)")
            self._value_sum[tile.slices] += weighted
            self._weight_sum[tile.slices] += weights
            return
        index = np.ix_(np.arange(tile.y0, tile.y1) % self.height, np.arange(tile.x0, tile.x1) % self.width)
        if tile.height <= self.height and tile.width <= self.width:
            # Indices are unique, so fancy-indexed += is exact (and much faster than np.add.at)
            self._value_sum[index] += weighted
            self._weight_sum[index] += weights
        else:
            # A tile larger than the image hits some pixels twice: np.add.at accumulates repeats
            np.add.at(self._value_sum, index, weighted)
            np.add.at(self._weight_sum, index, weights)

    @property
    def coverage(self):
        """Accumulated weight per pixel (HxW float64); 0 where no tile has been added."""
        return self._weight_sum

    def result(self):
        """Weighted average (float32); raises if some pixel received no weight."""
        if not np.all(self._weight_sum > 0.0):
            missing = int(np.count_nonzero(self._weight_sum <= 0.0))
            raise ValueError(f"{missing} pixels were not covered by any tile")
        out = (self._value_sum / self._weight_sum[..., None]).astype(np.float32)
        return out[..., 0] if self._added_2d else out


def pad_wrap(image, pad):
    """Pad an HxW or HxWxC image by ``pad`` pixels on every side with its opposite edges (periodic)."""
    image = np.asarray(image)
    pad = int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    widths = [(pad, pad), (pad, pad)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="wrap")


def crop_pad(image, pad):
    """Remove ``pad`` pixels from every side of an HxW or HxWxC image (the inverse of pad_wrap)."""
    image = np.asarray(image)
    pad = int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if 2 * pad >= image.shape[0] or 2 * pad >= image.shape[1]:
        raise ValueError(f"cannot crop {pad} pixels from each side of a {image.shape[:2]} image")
    return image[pad:image.shape[0] - pad, pad:image.shape[1] - pad]


def fold_wrap(padded, pad):
    """Blend a prediction made on ``pad_wrap(image, pad)`` back to the image size, seamlessly.

    Each margin is averaged into the opposite edge it was copied from, with raised-cosine weights over
    2 * pad pixels, so the output is continuous across the image's opposite edges (crop_pad is not).
    """
    padded = np.asarray(padded)
    pad = int(pad)
    if pad == 0:
        return padded.astype(np.float32)
    height = padded.shape[0] - 2 * pad
    width = padded.shape[1] - 2 * pad
    if height < 1 or width < 1:
        raise ValueError(f"a {padded.shape[:2]} array has no image inside a {pad}-pixel pad")
    squeeze = padded.ndim == 2
    values = padded[..., None] if squeeze else padded
    blender = TileBlender(height, width, values.shape[2], wrap=True)
    whole = Tile(-pad, height + pad, -pad, width + pad)
    blender.add(whole, values, blend_weights(whole.height, whole.width, 2 * pad))
    out = blender.result()
    return out[..., 0] if squeeze else out
