"""Temporal stabilization of affine-invariant depth over a sequence (numpy only).

Lotus depth and disparity are defined only up to a per-frame scale and shift: each frame of a
sequence comes out with its own, and that is the main source of flicker. The stabilizer maps each
new frame onto the frames before it with one scale and shift, ``aligned = scale * raw + shift``,
fitted robustly against a reference made of the previous aligned frames:

- the reference is the per-pixel median of the last ``history`` aligned frames, so a moving object
  that passes through one of them does not enter the reference;
- the fit is iteratively reweighted least squares with Tukey's biweight (residual scale from the
  median absolute deviation), so pixels that really changed (moving objects, parallax and
  disocclusions from camera motion) get no say;
- fits run on a small grid (area-averaged), so a frame costs milliseconds at any size.

It is causal (a frame depends only on earlier ones) so frames can be written as soon as they are
predicted, and a run resumed after a stop continues from the frames already on disk
(``add_reference``). The first frame, or the first after a gap longer than ``history``, sets the
scale of what follows and is kept as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_HISTORY = 3
DEFAULT_GRID = 96
TUKEY_C = 4.685
MAD_TO_SIGMA = 1.4826
IRLS_ITERATIONS = 8


@dataclass
class Alignment:
    scale: float
    shift: float
    inliers: float = 1.0       # fraction of grid pixels with a non-zero weight in the last pass
    references: int = 0        # aligned frames the reference was made of (0: kept as it is)

    def apply(self, values: np.ndarray) -> np.ndarray:
        return (values * np.float32(self.scale) + np.float32(self.shift)).astype(np.float32)


def grid_shape(height: int, width: int, longest: int = DEFAULT_GRID) -> tuple[int, int]:
    """A small (rows, columns) grid with the picture's aspect, never larger than the picture."""
    factor = min(1.0, longest / max(height, width, 1))
    return max(1, round(height * factor)), max(1, round(width * factor))


def area_resample(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW values averaged over the cells of a (rows, columns) grid (box filter, exact at any
    ratio via a summed-area table; the pixels of a cell may be fractional)."""
    values = np.asarray(values, dtype=np.float64)
    height, width = values.shape[:2]
    rows, cols = shape

    def edges(size, count):
        return np.linspace(0.0, size, count + 1)

    def integrate(axis_values, positions, axis):
        # Cumulative sum with linear interpolation between pixel boundaries.
        cumulative = np.concatenate([np.zeros_like(np.take(axis_values, [0], axis=axis)),
                                     np.cumsum(axis_values, axis=axis)], axis=axis)
        size = axis_values.shape[axis]
        low = np.clip(np.floor(positions).astype(np.int64), 0, size)
        high = np.minimum(low + 1, size)
        fraction = positions - low
        a = np.take(cumulative, low, axis=axis)
        b = np.take(cumulative, high, axis=axis)
        shape_ = [1] * axis_values.ndim
        shape_[axis] = -1
        return a + (b - a) * fraction.reshape(shape_)

    row_edges, col_edges = edges(height, rows), edges(width, cols)
    by_rows = np.diff(integrate(values, row_edges, 0), axis=0) / np.diff(row_edges)[:, None]
    by_cells = np.diff(integrate(by_rows, col_edges, 1), axis=1) / np.diff(col_edges)[None, :]
    return by_cells


def robust_affine_fit(source: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None,
                      iterations: int = IRLS_ITERATIONS) -> Alignment:
    """scale, shift minimising Tukey's biweight of ``scale * source + shift - target``."""
    a = np.asarray(source, dtype=np.float64).ravel()
    b = np.asarray(target, dtype=np.float64).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool).ravel()
    a, b = a[keep], b[keep]
    if a.size < 3 or np.ptp(a) <= 1e-12:
        return Alignment(1.0, float(np.median(b - a)) if a.size else 0.0, 0.0)
    # Start from matched medians and interquartile ranges: least squares would start inside
    # the outliers' pull, and Tukey's weights never recover from a start that far off.
    a_low, a_mid, a_high = np.percentile(a, (25, 50, 75))
    b_low, b_mid, b_high = np.percentile(b, (25, 50, 75))
    scale = (b_high - b_low) / (a_high - a_low) if a_high - a_low > 1e-12 else 1.0
    shift = b_mid - scale * a_mid
    floor = 1e-6 * max(np.ptp(b), 1e-6)  # exact data: sigma 0 would reject every imperfect pixel
    weights = np.ones_like(a)
    for iteration in range(iterations + 1):
        residual = scale * a + shift - b
        sigma = max(MAD_TO_SIGMA * np.median(np.abs(residual - np.median(residual))), floor)
        ratio = residual / (TUKEY_C * sigma)
        weights = np.where(np.abs(ratio) < 1.0, (1.0 - ratio ** 2) ** 2, 0.0)
        total = weights.sum()
        if iteration == iterations or total <= 1e-12:
            break
        mean_a = (weights * a).sum() / total
        mean_b = (weights * b).sum() / total
        spread = (weights * (a - mean_a) ** 2).sum()
        if spread <= 1e-18:
            break
        scale = (weights * (a - mean_a) * (b - mean_b)).sum() / spread
        shift = mean_b - scale * mean_a
    if not np.isfinite(scale) or scale <= 0.0:
        # A flipped or degenerate fit is never right for two views of one scene: shift only.
        return Alignment(1.0, float(np.median(b - a)), 0.0)
    return Alignment(float(scale), float(shift), float(np.count_nonzero(weights) / a.size))


class TemporalStabilizer:
    """Aligns the depth of consecutive frames; feed frames in increasing frame order."""

    def __init__(self, history: int = DEFAULT_HISTORY, grid: int = DEFAULT_GRID):
        self.history = max(1, int(history))
        self.grid = int(grid)
        self._references: dict[int, np.ndarray] = {}   # frame -> aligned values on the grid
        self._shape: tuple[int, int] | None = None

    def _on_grid(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if values.ndim == 3:
            values = values[..., 0]
        if self._shape is None:
            self._shape = grid_shape(*values.shape)
        return area_resample(values, self._shape)

    def add_reference(self, frame: int, aligned: np.ndarray) -> None:
        """An already aligned frame (e.g. read back from disk on resume) for the frames after it."""
        self._references[int(frame)] = self._on_grid(aligned)
        for old in [f for f in self._references if f < int(frame) - 4 * self.history]:
            del self._references[old]

    def needs_reference(self, frame: int) -> list[int]:
        """Frames within reach of ``frame`` that are not known yet (candidates to read from disk)."""
        return [f for f in range(frame - self.history, frame) if f not in self._references]

    def align(self, frame: int, raw: np.ndarray) -> tuple[np.ndarray, Alignment]:
        """``raw`` (HxW) aligned to the previous frames; remembered as a reference."""
        small = self._on_grid(raw)
        previous = [self._references[f] for f in range(frame - self.history, frame)
                    if f in self._references]
        if previous:
            reference = np.median(np.stack(previous), axis=0) if len(previous) > 1 else previous[0]
            alignment = robust_affine_fit(small, reference)
            alignment.references = len(previous)
        else:
            alignment = Alignment(1.0, 0.0, 1.0, 0)
        self._references[int(frame)] = small * alignment.scale + alignment.shift
        for old in [f for f in self._references if f < int(frame) - 4 * self.history]:
            del self._references[old]
        return alignment.apply(np.asarray(raw, dtype=np.float32)), alignment


def stabilize_sequence(frames: list[np.ndarray], history: int = DEFAULT_HISTORY,
                       grid: int = DEFAULT_GRID) -> tuple[list[np.ndarray], list[Alignment]]:
    """Every frame of a clip aligned to the ones before it (frame numbers are list positions)."""
    stabilizer = TemporalStabilizer(history, grid)
    aligned, fits = [], []
    for index, values in enumerate(frames):
        values, fit = stabilizer.align(index, values)
        aligned.append(values)
        fits.append(fit)
    return aligned, fits
