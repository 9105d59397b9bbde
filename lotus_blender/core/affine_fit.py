"""Robust scale-and-shift fits of two depth maps on a small grid (numpy only): what Stabilize
Depth (core.temporal) fits each frame with, and the grid helpers the photos' motion mask
(core.motion) shares.

The fit is the best of a few hundred two-pixel hypotheses by the 30 % quantile of the residuals,
then Tukey's biweight; residuals are measured halfway between the two maps (``r / sqrt(scale)``)
and the scale is the ratio of the inliers' spreads, so the fit is the same both ways (see
core.temporal's docstring for why least squares is not used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TUKEY_C = 4.685
IRLS_ITERATIONS = 8
HYPOTHESES = 200               # two-pixel scale/shift hypotheses per fit
SCORE_PIXELS = 2000            # pixels the hypotheses are scored on
SCORE_QUANTILE = 0.3           # a hypothesis is scored by this quantile of |residual| ...
SCORE_TO_SIGMA = 1.0 / 0.3853  # ... which is 0.385 sigma for Gaussian residuals
MIN_SIGMA = 1e-3               # residual scale: at least this fraction of the maps' spread
MOTION_STEPS = 3               # Gauss-Newton steps of the picture's shift between two frames
DEFAULT_GRID = 96

# What happened to a frame (Alignment.status).
START, ALIGNED, HELD, CUT, FLAT = "start", "aligned", "held", "cut", "flat"


@dataclass
class Alignment:
    scale: float
    shift: float
    inliers: float = 1.0       # fraction of grid pixels with a non-zero weight in the last pass
    references: int = 0        # aligned frames the reference was made of (0: kept as it is)
    agreement: float = 1.0     # weighted correlation of the two maps over the inliers
    status: str = ALIGNED      # START, ALIGNED, HELD, CUT or FLAT (not a reference)
    segment_start: int | None = None  # frame where this frame's alignment started
    sigma: float = 0.0         # robust residual scale of the fit
    motion: tuple = (0.0, 0.0)  # shift of the picture from the reference (grid rows, columns)

    def apply(self, values: np.ndarray) -> np.ndarray:
        return (values * np.float32(self.scale) + np.float32(self.shift)).astype(np.float32)

    @property
    def note(self) -> str:
        """One line for reports, empty for an ordinary frame."""
        if self.status == CUT:
            return f"new alignment from frame {self.segment_start} (hard cut)"
        if self.status == HELD:
            return (f"fit not trusted ({self.inliers:.0%} inliers, agreement {self.agreement:.2f}): "
                    "previous scale and shift kept")
        if self.status == FLAT:
            return "low-contrast or near-flat map (a fade?): not a reference"
        return ""


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


def tukey_weights(ratio: np.ndarray) -> np.ndarray:
    """Tukey's biweight of residuals already divided by their cut-off (0 beyond 1)."""
    return np.where(np.abs(ratio) < 1.0, (1.0 - ratio ** 2) ** 2, 0.0)


def spread(values: np.ndarray) -> float:
    """The 5-95 % spread of the finite values (0 for none)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    low, high = np.percentile(values, (5, 95))
    return float(high - low)


def robust_affine_fit(source: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None,
                      iterations: int = IRLS_ITERATIONS, guess: tuple | None = None) -> Alignment:
    """scale > 0, shift that map ``source`` onto ``target`` where most of them agree (see the
    module docstring); ``guess``: an extra (scale, shift) hypothesis, e.g. the previous frame's."""
    a = np.asarray(source, dtype=np.float64).ravel()
    b = np.asarray(target, dtype=np.float64).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool).ravel()
    a, b = a[keep], b[keep]
    spread_a = spread(a) if a.size >= 3 else 0.0
    if spread_a <= 1e-12 or spread(b) <= 1e-12:
        return Alignment(1.0, float(np.median(b - a)) if a.size else 0.0, 0.0, agreement=0.0)
    # Hypotheses: matched quartiles, the guess, and lines through two pixels far enough apart.
    a_low, a_mid, a_high = np.percentile(a, (25, 50, 75))
    b_low, b_mid, b_high = np.percentile(b, (25, 50, 75))
    quartiles = (b_high - b_low) / max(a_high - a_low, 1e-12)
    scales, shifts = [quartiles], [b_mid - quartiles * a_mid]
    if guess is not None and guess[0] > 0:
        scales.append(guess[0])
        shifts.append(guess[1])
    rng = np.random.default_rng(0)  # deterministic: a resumed run must fit the same way
    i, j = rng.integers(0, a.size, (2, HYPOTHESES))
    run = a[i] - a[j]
    apart = np.abs(run) > 0.05 * spread_a
    pair_scales = (b[i] - b[j])[apart] / run[apart]
    positive = pair_scales > 0
    scales = np.concatenate([scales, pair_scales[positive]])
    shifts = np.concatenate([shifts, (b[i][apart] - pair_scales * a[i][apart])[positive]])
    step = max(1, a.size // SCORE_PIXELS)
    sub_a, sub_b = a[::step], b[::step]
    residuals = np.abs(scales[:, None] * sub_a[None, :] + shifts[:, None] - sub_b[None, :])
    residuals /= np.sqrt(scales)[:, None]
    rank = int(SCORE_QUANTILE * (sub_a.size - 1))
    scores = np.partition(residuals, rank, axis=1)[:, rank]
    best = int(np.argmin(scores))
    scale, shift = float(scales[best]), float(shifts[best])
    # Near-exact data: a tiny sigma would keep only the pixels that fit exactly, e.g. one plane,
    # whose map is affine across the picture and so takes the error of the picture's shift (a pan
    # is not quite a shift) into the scale and shift: a bias that a long pan piles up.
    sigma = max(scores[best] * SCORE_TO_SIGMA, MIN_SIGMA * max(spread(b), 1e-6))
    weights = np.ones_like(a)
    for iteration in range(iterations + 1):
        ratio = (scale * a + shift - b) / (np.sqrt(scale) * TUKEY_C * sigma)
        weights = tukey_weights(ratio)
        total = weights.sum()
        if iteration == iterations or total <= 1e-12:
            break
        mean_a = (weights * a).sum() / total
        mean_b = (weights * b).sum() / total
        spread_a2 = (weights * (a - mean_a) ** 2).sum()
        spread_b2 = (weights * (b - mean_b) ** 2).sum()
        if spread_a2 <= 1e-18 or spread_b2 <= 1e-18:
            break
        # The ratio of spreads: the same line whichever map is called the source.
        scale = float(np.sqrt(spread_b2 / spread_a2))
        shift = float(mean_b - scale * mean_a)
    inliers = weights > 0
    agreement = 0.0
    if inliers.sum() >= 3:
        w = weights[inliers]
        da = a[inliers] - np.average(a[inliers], weights=w)
        db = b[inliers] - np.average(b[inliers], weights=w)
        denominator = np.sqrt((w * da * da).sum() * (w * db * db).sum())
        agreement = float((w * da * db).sum() / denominator) if denominator > 0 else 0.0
    if not np.isfinite(scale) or scale <= 0.0:
        return Alignment(1.0, float(np.median(b - a)), 0.0, agreement=0.0)
    return Alignment(scale, shift, float(inliers.mean()), agreement=agreement, sigma=float(sigma))


def sample(values: np.ndarray, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """values at (row + dy, column + dx), bilinear; and where that lies inside the grid."""
    rows, cols = values.shape
    y = np.arange(rows, dtype=np.float64)[:, None] + dy
    x = np.arange(cols, dtype=np.float64)[None, :] + dx
    inside = (y >= 0) & (y <= rows - 1) & (x >= 0) & (x <= cols - 1)
    y, x = np.clip(y, 0, rows - 1), np.clip(x, 0, cols - 1)
    y0, x0 = np.minimum(np.floor(y).astype(int), rows - 2), np.minimum(np.floor(x).astype(int), cols - 2)
    fy, fx = y - y0, x - x0
    top = values[y0, x0] * (1 - fx) + values[y0, x0 + 1] * fx
    bottom = values[y0 + 1, x0] * (1 - fx) + values[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy, np.broadcast_to(inside, values.shape)


def fit_with_motion(source: np.ndarray, target: np.ndarray, guess: tuple | None = None,
                    steps: int = MOTION_STEPS, valid: np.ndarray | None = None) -> Alignment:
    """robust_affine_fit of two grids after moving ``target`` by the shift of the picture between
    them (a pan or a truck): comparing pixel with pixel across a camera move would take the change
    of what a pixel sees for a change of scale, and that bias adds up over a long shot. The shift is
    found by Gauss-Newton on the fit's inliers: target(p + v) ~ target(p) + v . gradient(target).
    ``valid``: the grid cells the fit may use (e.g. the static background)."""
    valid = np.ones(source.shape, bool) if valid is None else np.asarray(valid, bool)
    fit = robust_affine_fit(source, target, valid=valid, guess=guess)
    if min(source.shape) < 8:
        return fit
    dy = dx = 0.0
    for _ in range(steps):
        moved, inside = sample(target, dy, dx)
        grad_y, grad_x = np.gradient(moved)
        residual = source * fit.scale + fit.shift - moved
        inside = inside & valid & np.isfinite(residual) & np.isfinite(grad_y) & np.isfinite(grad_x)
        if inside.sum() < 16:
            break
        residual, grad_y, grad_x = (np.where(inside, v, 0.0) for v in (residual, grad_y, grad_x))
        # The inliers' scale of an exact fit would leave out the pixels the shift shows on.
        sigma = max(fit.sigma, 1.4826 * float(np.median(np.abs(residual[inside]))) / np.sqrt(fit.scale))
        ratio = residual / (np.sqrt(fit.scale) * TUKEY_C * max(sigma, 1e-9))
        weights = np.where(inside, tukey_weights(ratio), 0.0).ravel()
        design = np.stack([np.where(inside, source, 0.0).ravel(), np.ones(source.size),
                           grad_y.ravel(), grad_x.ravel()], 1)
        normal = design.T @ (design * weights[:, None])
        if weights.sum() < 16 or np.linalg.cond(normal) > 1e12:
            break
        solution = np.linalg.solve(normal, design.T @ (weights * np.where(inside, moved, 0.0).ravel()))
        step_y, step_x = np.clip(-solution[2:], -2.0, 2.0)
        dy, dx = dy + step_y, dx + step_x
        moved, inside = sample(target, dy, dx)
        fit = robust_affine_fit(source, moved, valid=inside & valid, guess=(fit.scale, fit.shift))
        if abs(step_y) < 0.02 and abs(step_x) < 0.02:
            break
    fit.motion = (float(dy), float(dx))
    return fit
