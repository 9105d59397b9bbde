"""Straight line segments of a photo (numpy only), for its vanishing points (core.vanishing).

Gradients, a structure tensor that keeps straight edges (coherent orientation), the ridge of the
gradient magnitude across each edge (sub-pixel), connected runs of similar orientation fitted as
segments, and runs on one straight line merged into one long segment (a grout line broken at every
tile corner knows its direction far better as one line, which is what nearly parallel lines of a
long lens need). Each segment keeps how well its direction is known (``blur_deg``) and the runs it
is made of (where the line lies in the photo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .maps import block_mean

WORKING_SIZE = 512           # longest edge the photo is averaged down to
COHERENCE_MIN = 0.85         # structure-tensor coherence of a straight edge
JOIN_DEG = 12.0              # neighbouring edge pixels whose orientations differ less are one run
MIN_SEGMENT_PX = 6.0         # at working size
STRAIGHT_PX = 0.7            # RMS distance of a run's pixels from its fitted line
MERGE_PX = 1.0               # runs on one line: each middle this close to the other's line (working px) ...
MERGE_DEG = 0.3              # ... and directions this close, both plus what their blur allows


@dataclass
class Segments:
    """Straight segments in pixels of the full-size image, centred (X right, Y up)."""
    mid: np.ndarray        # (N, 2)
    direction: np.ndarray  # (N, 2) unit
    length: np.ndarray     # (N,) summed length of its pieces
    blur_deg: np.ndarray   # (N,) direction uncertainty of each segment (short ones wobble more)
    reach: np.ndarray | None = None         # (N,) from the middle to the farther end, pixels
    piece_mid: np.ndarray | None = None     # (M, 2) middles of the runs merged into the segments
    piece_length: np.ndarray | None = None  # (M,)
    piece_of: np.ndarray | None = None      # (M,) the segment each run belongs to

    def pieces(self, members):
        """(middles, lengths) of the runs that make up the given segments: where the lines lie."""
        if self.piece_of is None:
            return self.mid[members], self.length[members]
        chosen = np.isin(self.piece_of, members)
        return self.piece_mid[chosen], self.piece_length[chosen]


def _blur(array, taps):
    taps = np.asarray(taps, np.float64) / np.sum(taps)
    radius = len(taps) // 2
    padded = np.pad(array, radius, mode="edge")
    rows, cols = array.shape
    horizontal = sum(w * padded[:, i:i + cols] for i, w in enumerate(taps))
    return sum(w * horizontal[i:i + rows] for i, w in enumerate(taps))


def _shifted(array, d_row, d_col):
    """(this part, the part d_row rows down and d_col columns right) of an array, same shape."""
    rows, cols = array.shape[:2]
    here = array[max(0, -d_row):rows - max(0, d_row), max(0, -d_col):cols - max(0, d_col)]
    there = array[max(0, d_row):rows - max(0, -d_row), max(0, d_col):cols - max(0, -d_col)]
    return here, there


def _components(mask, doubled, join):
    """Connected runs of mask pixels (8 neighbours) whose orientations (doubled-angle unit vectors)
    agree within `join` (a cosine); min-label propagation with pointer jumping. (H, W) labels, -1
    outside the mask."""
    rows, cols = mask.shape
    size = rows * cols
    links = []
    for d_row, d_col in ((0, 1), (1, 0), (1, 1), (1, -1)):
        (m0, m1), (o0, o1) = _shifted(mask, d_row, d_col), _shifted(doubled, d_row, d_col)
        links.append((d_row, d_col, m0 & m1 & (np.sum(o0 * o1, axis=-1) > join)))
    labels = np.where(mask, np.arange(size).reshape(rows, cols), size)
    for _ in range(500):
        before = labels.copy()
        for d_row, d_col, link in links:
            here, there = _shifted(labels, d_row, d_col)     # views into labels
            low = np.where(link, np.minimum(here, there), size)
            np.minimum(here, low, out=here)
            np.minimum(there, low, out=there)
        flat = labels.ravel()
        inside = flat < size
        flat[inside] = np.minimum(flat[inside], flat[flat[inside]])   # pointer jumping
        if np.array_equal(labels, before):
            break
    return np.where(mask, labels, -1)


def line_segments(photo) -> Segments:
    """Straight segments of a photo ((H, W) grey or (H, W, 3|4) RGB, any range)."""
    photo = np.asarray(photo, np.float64)
    grey = photo if photo.ndim == 2 else photo[..., :3] @ np.array([0.2126, 0.7152, 0.0722])
    height, width = grey.shape
    grey = np.sqrt(np.clip(grey / max(float(np.percentile(grey, 99.5)), 1e-9), 0.0, 1.0))  # about perceptual
    factor = max(1, math.ceil(max(height, width) / WORKING_SIZE))
    grey = block_mean(np.nan_to_num(grey), factor)
    rows, cols = grey.shape
    smooth = _blur(grey, (1, 2, 1))
    g_x = np.zeros_like(smooth)
    g_y = np.zeros_like(smooth)
    g_x[:, 1:-1] = 0.5 * (smooth[:, 2:] - smooth[:, :-2])
    g_y[1:-1] = 0.5 * (smooth[:-2] - smooth[2:])          # Y up
    taps = (1, 4, 6, 4, 1)
    j_xx, j_xy, j_yy = _blur(g_x * g_x, taps), _blur(g_x * g_y, taps), _blur(g_y * g_y, taps)
    energy = j_xx + j_yy
    coherence = np.hypot(j_xx - j_yy, 2 * j_xy) / np.maximum(energy, 1e-12)
    gradient_angle = 0.5 * np.arctan2(2 * j_xy, j_xx - j_yy)
    line_angle = gradient_angle + 0.5 * np.pi                # along the edge, modulo pi
    # Edges: energy well above the noise floor (a quarter of a photo is flat, whatever its texture).
    floor = np.percentile(energy, 25)
    magnitude = np.hypot(g_x, g_y)
    edge = (energy > max(8.0 * floor, 1e-5)) & (coherence > COHERENCE_MIN) & (magnitude > 0.01)
    edge[:2] = edge[-2:] = False
    edge[:, :2] = edge[:, -2:] = False
    # Thin: keep the gradient-magnitude ridge across the edge (non-maximum suppression).
    step_x = np.rint(np.cos(gradient_angle)).astype(int)
    step_y = -np.rint(np.sin(gradient_angle)).astype(int)       # rows go down
    r, c = np.nonzero(edge)
    ahead = magnitude[np.clip(r + step_y[r, c], 0, rows - 1), np.clip(c + step_x[r, c], 0, cols - 1)]
    behind = magnitude[np.clip(r - step_y[r, c], 0, rows - 1), np.clip(c - step_x[r, c], 0, cols - 1)]
    ridge = (magnitude[r, c] >= ahead) & (magnitude[r, c] >= behind)
    edge[r[~ridge], c[~ridge]] = False
    # Sub-pixel position across the edge: the vertex of a parabola through the three magnitudes
    # (without it a shallow line is a staircase and its direction comes out quantised).
    centre = magnitude[r, c]
    curvature = ahead - 2.0 * centre + behind
    offset = np.where(curvature < -1e-12, 0.5 * (behind - ahead) / np.where(curvature < -1e-12, curvature, -1.0), 0.0)
    offset = np.clip(offset, -0.5, 0.5)
    shift_x = np.zeros(edge.shape)
    shift_y = np.zeros(edge.shape)
    shift_x[r, c] = offset * step_x[r, c]
    shift_y[r, c] = -offset * step_y[r, c]          # rows down, Y up

    join = math.cos(2 * math.radians(JOIN_DEG))
    doubled = np.stack([np.cos(2 * line_angle), np.sin(2 * line_angle)], axis=-1)
    labels = _components(edge, doubled, join)

    flat = labels.ravel()
    keep = flat >= 0
    ids, inverse, counts = np.unique(flat[keep], return_inverse=True, return_counts=True)
    ys, xs = np.divmod(np.flatnonzero(keep), cols)
    xs = (xs + 0.5 + shift_x.ravel()[keep]) * factor - width / 2.0
    ys = height / 2.0 - (ys + 0.5) * factor + shift_y.ravel()[keep] * factor
    weights = np.sqrt(energy.ravel()[keep])
    total = np.bincount(inverse, weights)
    mean_x = np.bincount(inverse, weights * xs) / total
    mean_y = np.bincount(inverse, weights * ys) / total
    dx, dy = xs - mean_x[inverse], ys - mean_y[inverse]
    s_xx = np.bincount(inverse, weights * dx * dx) / total
    s_xy = np.bincount(inverse, weights * dx * dy) / total
    s_yy = np.bincount(inverse, weights * dy * dy) / total
    _, major, minor = _line_fit(np.stack([s_xx, s_xy, s_yy], axis=1))
    length = np.sqrt(12.0 * major)                            # a uniform run of this length
    good = (counts >= 4) & (length >= MIN_SEGMENT_PX * factor) & (np.sqrt(minor) <= STRAIGHT_PX * factor)
    runs = _Runs(total[good], np.stack([mean_x, mean_y], axis=1)[good],
                 np.stack([s_xx, s_xy, s_yy], axis=1)[good], counts[good].astype(np.float64))
    return _merge_collinear(runs, factor)


@dataclass
class _Runs:
    """Weighted moments of straight runs of edge pixels (centred full-size pixels)."""
    weight: np.ndarray   # (N,) summed pixel weights
    mean: np.ndarray     # (N, 2)
    moments: np.ndarray  # (N, 3) weighted covariance xx, xy, yy
    count: np.ndarray    # (N,) pixels


def _line_fit(moments):
    """(angle, major, minor variance) of covariances (N, 3)."""
    s_xx, s_xy, s_yy = moments.T
    spread = np.hypot(s_xx - s_yy, 2 * s_xy)
    major = 0.5 * (s_xx + s_yy + spread)
    minor = np.maximum(0.5 * (s_xx + s_yy - spread), 0.0)
    return 0.5 * np.arctan2(2 * s_xy, s_xx - s_yy), major, minor


def _merge_collinear(runs, factor):
    """Segments from runs, runs on one straight line merged (a tiled wall's grout line broken at every
    tile corner, an edge broken by an occluder): one long segment knows its direction far better than
    its pieces, which matters most where lines are nearly parallel (long lenses)."""
    angle, major, minor = _line_fit(runs.moments)
    direction = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    length = np.sqrt(12.0 * major)
    wobble = np.maximum(np.sqrt(minor), 0.15 * factor)
    blur = np.arctan2(wobble * math.sqrt(12.0), length * np.sqrt(runs.count))     # radians
    count = len(length)
    owner = np.arange(count)
    if 1 < count <= 4000:
        # Pairs on one line: directions agree within their blur and each middle lies on the other's
        # line within a pixel plus what its direction's blur allows over the distance.
        normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
        apart = runs.mean[None, :, :] - runs.mean[:, None, :]                  # (i, j): j - i
        distance = np.linalg.norm(apart, axis=-1)
        off = np.abs(np.sum(normal[:, None, :] * apart, axis=-1))             # j's middle from i's line
        turn = np.arcsin(np.clip(np.abs(direction[:, 0, None] * direction[None, :, 1]
                                        - direction[:, 1, None] * direction[None, :, 0]), 0.0, 1.0))
        allowed = MERGE_PX * factor + distance * (2.0 * blur[:, None])
        close = (off <= allowed) & (off.T <= allowed.T) & (turn <= 2.0 * (blur[:, None] + blur[None, :])
                                                        + math.radians(MERGE_DEG))
        i, j = np.nonzero(np.triu(close, 1))
        for a, b in zip(i, j):                  # union-find
            root_a, root_b = _root(owner, a), _root(owner, b)
            if root_a != root_b:
                owner[max(root_a, root_b)] = min(root_a, root_b)
        owner = np.array([_root(owner, k) for k in range(count)])
    merged = _grouped(runs, owner)
    # A group that is not straight after all (a chain of near-misses) stays in its pieces.
    bent = np.sqrt(merged[3]) > STRAIGHT_PX * factor
    if bent.any():
        owner = np.where(bent[merged[4]], np.arange(count), owner)
        merged = _grouped(runs, owner)
    mean, merged_angle, merged_major, merged_minor, owner_index = merged
    pixels = np.bincount(owner_index, runs.count)
    span = np.sqrt(12.0 * merged_major)
    wobble = np.maximum(np.sqrt(merged_minor), 0.15 * factor)
    merged_blur = np.degrees(np.arctan2(wobble * math.sqrt(12.0), span * np.sqrt(pixels)))
    direction = np.stack([np.cos(merged_angle), np.sin(merged_angle)], axis=1)
    along = np.abs(np.sum((runs.mean - mean[owner_index]) * direction[owner_index], axis=1)) + 0.5 * length
    reach = np.zeros(len(mean))
    np.maximum.at(reach, owner_index, along)
    return Segments(mean, direction, np.bincount(owner_index, length), merged_blur, reach, runs.mean, length,
                    owner_index)


def _grouped(runs, owner):
    """(mean, angle, major, minor, group of each run) of the runs grouped by owner label."""
    _, index = np.unique(owner, return_inverse=True)
    weight = np.bincount(index, runs.weight)
    mean = np.stack([np.bincount(index, runs.weight * runs.mean[:, k]) for k in range(2)], axis=1) / weight[:, None]
    d = runs.mean - mean[index]
    spread = runs.moments + np.stack([d[:, 0] * d[:, 0], d[:, 0] * d[:, 1], d[:, 1] * d[:, 1]], axis=1)
    moments = np.stack([np.bincount(index, runs.weight * spread[:, k]) for k in range(3)], axis=1) / weight[:, None]
    return (mean, *_line_fit(moments), index)


def _root(owner, k):
    while owner[k] != k:
        owner[k] = owner[owner[k]]
        k = owner[k]
    return k
