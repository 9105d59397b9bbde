"""The samples the camera estimate (core.camera_estimate) fits: the Lotus map and the normals
averaged down, the map smoothed a little and differentiated, each pixel with its position from the
image centre; the pixels that would mislead the fit left out: invalid ones, isolated spikes, tears
and creases (the two one-sided steps disagree, or the normal turns within two pixels) and grazing
pixels (normals nearly across the view). Also the shift that gives the samples a near/far depth
ratio, and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .maps import block_mean

MAX_SAMPLES = 6000
SLANT_MIN = math.sin(math.radians(8.0))   # normals turned at least this far tell something


@dataclass
class MapSamples:
    """One entry per sample pixel (the last two: the range of the map's values over them)."""
    x: np.ndarray         # pixels right of the image centre (full-size pixel units)
    y: np.ndarray         # pixels above the centre
    v: np.ndarray
    v_x: np.ndarray       # map gradient per full-size pixel, X right
    v_y: np.ndarray       # Y up
    n: np.ndarray         # (N, 3) unit normals, Blender camera space
    slanted: np.ndarray   # bool: normal turned away from the axis
    sign: float           # -1 disparity, +1 depth
    v_low: float
    v_high: float


def _smooth121(array):
    out = array.copy()
    out[1:-1] = 0.25 * array[:-2] + 0.5 * array[1:-1] + 0.25 * array[2:]
    smoothed = out.copy()
    smoothed[:, 1:-1] = 0.25 * out[:, :-2] + 0.5 * out[:, 1:-1] + 0.25 * out[:, 2:]
    return smoothed


def _median3x3(array):
    if min(array.shape) < 3:
        return array
    padded = np.pad(array, 1, mode="edge")
    rows, cols = array.shape
    stack = np.stack([padded[r:r + rows, c:c + cols] for r in range(3) for c in range(3)])
    return np.median(stack, axis=0)


def _erode(mask, steps):
    for _ in range(steps):
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        mask = inner
    return mask


def _normal_steady(normals, min_cosine):
    """Pixels whose normal agrees with its four neighbours two pixels away (no crease near)."""
    steady = np.zeros(normals.shape[:2], bool)
    centre = normals[2:-2, 2:-2]
    agree = np.ones(centre.shape[:2], bool)
    for rows, cols in ((slice(2, -2), slice(None, -4)), (slice(2, -2), slice(4, None)),
                       (slice(None, -4), slice(2, -2)), (slice(4, None), slice(2, -2))):
        agree &= np.sum(centre * normals[rows, cols], axis=-1) >= min_cosine
    steady[2:-2, 2:-2] = agree
    return steady


def samples_from_maps(values, normals, kind, valid, max_size) -> MapSamples:
    """The maps' samples: (H, W) values of a map of the given kind, (H, W, 3) Blender camera-space
    normals, an optional (H, W) bool mask of valid pixels, averaged down to ``max_size`` pixels on
    the longest edge (full-size pixel units kept), at most MAX_SAMPLES of them."""
    values = np.asarray(values, dtype=np.float64)
    normals = np.asarray(normals, dtype=np.float64)
    if values.ndim != 2 or normals.shape != values.shape + (3,):
        raise ValueError("values (H, W) and normals (H, W, 3) must have the same size")
    height, width = values.shape
    ok = np.isfinite(values) & np.isfinite(normals).all(axis=-1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    factor = max(1, math.ceil(max(height, width) / max_size))
    # Invalid pixels spoil their block (its mean would mix in garbage).
    v = block_mean(np.where(ok, values, 0.0), factor)
    n = block_mean(np.where(ok[..., None], normals, 0.0), factor)
    good = block_mean(ok.astype(np.float64), factor) > 0.999
    rows, cols = v.shape
    # Block centres in full-size pixels from the image centre: the principal point stays put.
    x = (np.arange(cols) + 0.5) * factor - width / 2.0
    y = height / 2.0 - (np.arange(rows) + 0.5) * factor
    length = np.linalg.norm(n, axis=-1)
    good &= length > 0.5
    n = n / np.maximum(length, 1e-9)[..., None]

    # Isolated outliers (spikes) go first: a 3x3 median leaves planes (linear in the pixel position)
    # as they are.
    v = _median3x3(v)
    # Tears and creases: the two one-sided steps disagree, or the normal turns within two pixels.
    left, right = v[1:-1, 1:-1] - v[1:-1, :-2], v[1:-1, 2:] - v[1:-1, 1:-1]
    up, down = v[1:-1, 1:-1] - v[:-2, 1:-1], v[2:, 1:-1] - v[1:-1, 1:-1]
    inner = good[1:-1, 1:-1] & good[1:-1, :-2] & good[1:-1, 2:] & good[:-2, 1:-1] & good[2:, 1:-1]
    bend_x, bend_y = np.abs(right - left), np.abs(down - up)
    noise = 1.4826 * np.median(np.concatenate([bend_x[inner], bend_y[inner]])) if inner.any() else 0.0
    steady = np.zeros(v.shape, bool)
    steady[1:-1, 1:-1] = inner & (bend_x <= 0.25 * (np.abs(left) + np.abs(right)) + 3.0 * noise) \
        & (bend_y <= 0.25 * (np.abs(up) + np.abs(down)) + 3.0 * noise)
    steady &= _normal_steady(n, math.cos(math.radians(10.0)))
    steady = _erode(steady, 2)      # what the smoothing below reaches
    # Smoothing against noise ([1 2 1] twice): inverse depth on a plane is linear in the pixel
    # position, so it does not bend planes.
    v = _smooth121(_smooth121(v))
    v_x = (v[1:-1, 2:] - v[1:-1, :-2]) / (2.0 * factor)
    v_y = (v[:-2, 1:-1] - v[2:, 1:-1]) / (2.0 * factor)      # rows go down, Y goes up
    n_in = n[1:-1, 1:-1]
    xx = np.broadcast_to(x[None, 1:-1], v_x.shape)
    yy = np.broadcast_to(y[1:-1, None], v_x.shape)
    # Facing the camera: -n . ray > 0 (ray = (x / f, y / f, -1) for any reasonable f: n_z dominates).
    keep = steady[1:-1, 1:-1] & (n_in[..., 2] > 0.05)
    index = np.flatnonzero(keep)
    if index.size > MAX_SAMPLES:
        index = index[np.linspace(0, index.size - 1, MAX_SAMPLES).astype(np.int64)]
    pick = lambda a: a.reshape(-1, *a.shape[2:])[index]   # noqa: E731
    v_in = v[1:-1, 1:-1]
    chosen_n = pick(n_in)
    chosen_v = pick(v_in)
    return MapSamples(x=pick(xx), y=pick(yy), v=chosen_v, v_x=pick(v_x), v_y=pick(v_y), n=chosen_n,
                      slanted=np.hypot(chosen_n[:, 0], chosen_n[:, 1]) > SLANT_MIN,
                      sign=-1.0 if kind == "disparity" else 1.0,
                      v_low=float(chosen_v.min()) if chosen_v.size else 0.0,
                      v_high=float(chosen_v.max()) if chosen_v.size else 1.0)


def shift_for_ratio(samples, ratio):
    """Shift making the nearest/farthest sample depth ratio equal `ratio` (both kinds)."""
    ratio = np.asarray(ratio, dtype=np.float64)
    return (ratio * samples.v_high - samples.v_low) / (1.0 - ratio)


def ratio_for_shift(samples, shift):
    """The nearest/farthest sample depth ratio a shift gives (the inverse of shift_for_ratio)."""
    return (samples.v_low + shift) / (samples.v_high + shift)
