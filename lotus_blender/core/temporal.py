"""Temporal stabilization of affine-invariant depth over a sequence (numpy only).

Lotus depth and disparity are defined only up to a per-frame scale and shift: each frame of a
sequence comes out with its own, and that is the main source of flicker. The stabilizer maps each
new frame onto the frames before it with one scale and shift, ``aligned = scale * raw + shift``:

- the reference is the per-pixel median of the last ``history`` trusted frames, so a moving object
  that passes through one of them does not enter it;
- the fit is robust to most of the frame changing (a foreground object filling 70 % of it, parallax,
  disocclusions): the best of a few hundred two-pixel hypotheses by the 30 % quantile of the
  residuals, then Tukey's biweight. Residuals are measured halfway between the two maps
  (``r / sqrt(scale)``) and the scale is the ratio of the inliers' spreads, so the fit is the same
  both ways: least squares would shrink the scale wherever the structure is weak against the
  model's own errors (a wall filling the frame), and that shrinkage compounds from frame to frame
  until the maps are flat;
- a large object moving in front of the world (half the frame or more) would pull the scale
  toward its own depth change: the fit is made on the world-static background, the pixels where
  the reference agrees with older references (``STATIC_LAGS``) and the new frame agrees with a
  first fit to the whole frame; when that background fit and the whole-frame fit disagree
  strongly, the object has moved into the background and the whole-frame fit is kept;
- the depth of a smooth object changes less than the model's own errors, so where the frames'
  photos are given (optional) and show a large part of the frame moving (``PHOTO_MOVING_MIN``),
  the fit keeps off what they show moving (core/motion.py: the object's texture moves with it);
  where they show little moving (the depth test handles small objects) or say nothing (no
  photo, too dark or plain, a hard cut, two motions that neither the outline nor the depth test
  tells apart) the depth test above decides. A resumed run is given the earlier frames' photos
  too (``photos_wanted``);
- long shots do not drift: the fit is averaged with fits to older frames (``ANCHOR_LAGS``) that the
  frame still agrees with, so a frame's error is not handed on one step at a time; when two or more
  of those older fits agree among themselves and not with the fit to the last frames (pulled along
  by a moving object), they replace it;
- a fit is used only when it is plausible: enough inliers, structure that agrees, a scale within
  ``MAX_STEP`` of the previous frame's and a shift that keeps the frame inside the shot's range (not
  behind the camera). Otherwise the frame keeps the previous frame's scale and shift ("held") and is
  not a reference. When the next frame fits the held one but not the shot before it, that was a
  hard cut: a new alignment starts at the held frame ("cut");
- near-flat maps (a fade through black, a frame with nothing to see) keep the previous scale and
  shift and are never references;
- fits run on a small grid (area-averaged), so a frame costs milliseconds at any size.

It is causal (a frame depends only on earlier ones) so frames can be written as soon as they are
predicted, and a run resumed after a stop continues from the frames already on disk
(``add_reference``). The first frame sets the scale of what follows and is kept as it is.
Measured on model-like maps by benchmarks/bench_stabilize.py (README "Sequences and render farms").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import motion

DEFAULT_HISTORY = 3
DEFAULT_GRID = 96
ANCHOR_LAGS = (8, 16, 32, 64)  # older frames a fit is averaged with (drift)
STATIC_LAGS = (4, 8)           # older frames a pixel must agree with to count as world-static
STATIC_SPREAD = 3.0            # ... within this many times the typical difference of the two
PHOTO_MOVING_MIN = 0.15        # the photos' mask takes over where they show this much moving
STATIC_MIN = 0.15              # fewer static pixels than this fraction of the frame: no mask
BACKGROUND_MIN = 0.1           # static and agreeing with the first fit: at least this fraction
BACKGROUND_DISAGREE = 0.15     # |log| of background / whole-frame scale beyond this: whole frame
TUKEY_C = 4.685
IRLS_ITERATIONS = 8
HYPOTHESES = 200               # two-pixel scale/shift hypotheses per fit
SCORE_PIXELS = 2000            # pixels the hypotheses are scored on
SCORE_QUANTILE = 0.3           # a hypothesis is scored by this quantile of |residual| ...
SCORE_TO_SIGMA = 1.0 / 0.3853  # ... which is 0.385 sigma for Gaussian residuals
MIN_SIGMA = 1e-3               # residual scale: at least this fraction of the maps' spread
MIN_INLIERS = 0.3              # fewer inliers than this: the fit is not trusted
MIN_AGREEMENT = 0.6            # weighted correlation of the inliers below this: not trusted
MAX_STEP = 3.0                 # scale change from the previous frame beyond this: not trusted
MOTION_STEPS = 3               # Gauss-Newton steps of the picture's shift between two frames
MAX_GAP = 48                   # frames a reference is remembered across (fades, held frames)
FLAT_SPREAD = 0.02             # a map whose 5-95 % spread is below this (Lotus maps: [0, 1]) ...
FLAT_RATIO = 0.5               # ... below this fraction of the shot's: aligned, never a reference
FLAT_FIT_RATIO = 0.15          # ... below this fraction: near-flat, the previous scale and shift kept

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


def _spread(values: np.ndarray) -> float:
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
    spread_a = _spread(a) if a.size >= 3 else 0.0
    if spread_a <= 1e-12 or _spread(b) <= 1e-12:
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
    sigma = max(scores[best] * SCORE_TO_SIGMA, MIN_SIGMA * max(_spread(b), 1e-6))
    weights = np.ones_like(a)
    for iteration in range(iterations + 1):
        ratio = (scale * a + shift - b) / (np.sqrt(scale) * TUKEY_C * sigma)
        weights = np.where(np.abs(ratio) < 1.0, (1.0 - ratio ** 2) ** 2, 0.0)
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


def _sample(values: np.ndarray, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
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
        moved, inside = _sample(target, dy, dx)
        grad_y, grad_x = np.gradient(moved)
        residual = source * fit.scale + fit.shift - moved
        inside = inside & valid & np.isfinite(residual) & np.isfinite(grad_y) & np.isfinite(grad_x)
        if inside.sum() < 16:
            break
        residual, grad_y, grad_x = (np.where(inside, v, 0.0) for v in (residual, grad_y, grad_x))
        # The inliers' scale of an exact fit would leave out the pixels the shift shows on.
        sigma = max(fit.sigma, 1.4826 * float(np.median(np.abs(residual[inside]))) / np.sqrt(fit.scale))
        ratio = residual / (np.sqrt(fit.scale) * TUKEY_C * max(sigma, 1e-9))
        weights = np.where((np.abs(ratio) < 1.0) & inside, (1.0 - ratio ** 2) ** 2, 0.0).ravel()
        design = np.stack([np.where(inside, source, 0.0).ravel(), np.ones(source.size),
                           grad_y.ravel(), grad_x.ravel()], 1)
        normal = design.T @ (design * weights[:, None])
        if weights.sum() < 16 or np.linalg.cond(normal) > 1e12:
            break
        solution = np.linalg.solve(normal, design.T @ (weights * np.where(inside, moved, 0.0).ravel()))
        step_y, step_x = np.clip(-solution[2:], -2.0, 2.0)
        dy, dx = dy + step_y, dx + step_x
        moved, inside = _sample(target, dy, dx)
        fit = robust_affine_fit(source, moved, valid=inside & valid, guess=(fit.scale, fit.shift))
        if abs(step_y) < 0.02 and abs(step_x) < 0.02:
            break
    fit.motion = (float(dy), float(dx))
    return fit


def _median(stack: list) -> np.ndarray:
    if len(stack) == 1:
        return stack[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        return np.nanmedian(np.stack(stack), axis=0)


class TemporalStabilizer:
    """Aligns the depth of consecutive frames; feed frames in increasing frame order."""

    def __init__(self, history: int = DEFAULT_HISTORY, grid: int = DEFAULT_GRID):
        self.history = max(1, int(history))
        self.grid = int(grid)
        self._references: dict[int, np.ndarray] = {}   # frame -> trusted aligned values on the grid
        self._held: dict[int, np.ndarray] = {}         # frames not trusted (a cut, or a bad frame)
        self._last: Alignment | None = None            # the latest trusted frame's fit
        self._segment_start: int | None = None
        self._shape: tuple[int, int] | None = None
        self._photos: dict[int, np.ndarray] = {}       # frame -> the photo on the grid (optional)

    def _on_grid(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if values.ndim == 3:
            values = values[..., 0]
        if self._shape is None:
            self._shape = grid_shape(*values.shape)
        small = area_resample(values, self._shape)
        # Values at the model's clamp (Lotus decodes into [0, 1]) lost their differences: a far
        # background clipped at 0 would look like a squeezed range and bias the scale, frame after
        # frame. Cells holding such pixels take no part.
        clamped = np.zeros(values.shape, bool)
        for end in (np.nanmin(values), np.nanmax(values)):
            at_end = values == end
            if np.count_nonzero(at_end) > 1e-3 * values.size:
                clamped |= at_end
        if clamped.any():
            small[area_resample(clamped.astype(np.float64), self._shape) > 0] = np.nan
        return small

    def _forget(self, frame: int) -> None:
        oldest = frame - max(MAX_GAP, max(ANCHOR_LAGS))
        for store in (self._references, self._held, self._photos):
            for old in [f for f in store if f < oldest]:
                del store[old]
        for old in [f for f in self._held if f < frame - self.history - 1]:
            del self._held[old]

    def add_reference(self, frame: int, aligned: np.ndarray, photo: np.ndarray | None = None) -> None:
        """An already aligned frame (e.g. read back from disk on resume) for the frames after it;
        ``photo``: its input picture, if the run gives pictures (see ``photos_wanted``)."""
        small = self._on_grid(aligned)
        if photo is not None:
            self.add_photo(frame, photo)
        if _spread(small) > FLAT_SPREAD:
            self._references[int(frame)] = small
            if self._segment_start is None:
                self._segment_start = int(frame)
        self._forget(int(frame))

    def needs_reference(self, frame: int) -> list[int]:
        """Frames within reach of ``frame`` that are not known yet (candidates to read from disk)."""
        wanted = list(range(frame - self.history, frame)) + \
            [frame - lag for lag in ANCHOR_LAGS + STATIC_LAGS]
        return sorted(f for f in set(wanted) if f not in self._references)

    def add_photo(self, frame: int, photo: np.ndarray) -> None:
        """The input picture of an earlier frame (HxWx3 display values), e.g. on resume."""
        if self._shape is None:
            self._shape = grid_shape(*np.asarray(photo).shape[:2])
        self._photos[int(frame)] = motion.photo_grid(photo, self._shape)

    def photos_wanted(self, frame: int) -> list[int]:
        """Earlier frames whose pictures the motion mask of ``frame`` compares with and that are
        not known yet (after the references are added: a resumed run reads these too)."""
        recent = self._recent(frame)
        if not recent:
            return []
        return [f for f in range(recent[0], frame) if f not in self._photos]

    def _recent(self, frame: int) -> list[int]:
        known = sorted(f for f in self._references if frame - MAX_GAP <= f < frame)
        return known[-self.history:]

    def _plausible(self, fit: Alignment, small: np.ndarray, reference: np.ndarray,
                   previous: Alignment | None) -> bool:
        if fit.inliers < MIN_INLIERS or fit.agreement < MIN_AGREEMENT:
            return False
        if previous is not None and not 1.0 / MAX_STEP <= fit.scale / previous.scale <= MAX_STEP:
            return False
        # The bulk of the frame must stay within the shot's range: a shift that throws it out
        # (behind the camera, beyond infinity) is a failed fit, not a scene.
        low, high = np.nanpercentile(reference, (1, 99))
        middle = float(np.nanmedian(small)) * fit.scale + fit.shift
        return low - (high - low) <= middle <= high + (high - low)

    def align(self, frame: int, raw: np.ndarray,
              photo: np.ndarray | None = None) -> tuple[np.ndarray, Alignment]:
        """``raw`` (HxW) aligned to the previous frames; remembered as a reference if trusted.
        ``photo``: the frame's input picture (HxWx3 display values, any size), optional: where
        given (with the frames' before it) the fit keeps off what the pictures show moving."""
        frame = int(frame)
        small = self._on_grid(raw)
        self._forget(frame)
        if photo is not None:
            self.add_photo(frame, photo)
        recent = self._recent(frame)
        last = self._last if self._last is not None else Alignment(1.0, 0.0)
        typical = np.median([_spread(self._references[f]) for f in recent]) if recent else None
        spread = _spread(small) * last.scale
        if spread <= FLAT_SPREAD or (typical is not None and spread < FLAT_FIT_RATIO * typical):
            return self._keep(raw, Alignment(last.scale, last.shift, 0.0, len(recent), 0.0, FLAT,
                                             self._segment_start))
        # Weak contrast (fading): aligned if it fits, but never a reference.
        weak = typical is not None and spread < FLAT_RATIO * typical
        if not recent and not self._held:
            return self._keep(raw, self._start(frame, small))
        fit = candidate = None
        if recent:
            reference = _median([self._references[f] for f in recent])
            guess = (self._last.scale, self._last.shift) if self._last is not None else None
            candidate, background = self._background_fit(frame, small, reference, guess, recent)
            candidate.references = len(recent)
            if self._plausible(candidate, small, reference, None if weak else self._last):
                fit = candidate if weak else self._with_anchors(frame, small, candidate, recent,
                                                                background)
                fit.status, fit.segment_start = FLAT if weak else ALIGNED, self._segment_start
        if weak:
            return self._keep(raw, fit or Alignment(last.scale, last.shift, 0.0, len(recent), 0.0,
                                                    FLAT, self._segment_start))
        if fit is None:
            fit = self._after_cut(frame, small)
        if fit is None:
            # Not trusted: keep the previous frame's scale and shift; remember the frame in case
            # it is the first of a new shot.
            fit = Alignment(last.scale, last.shift, 0.0, len(recent), 0.0, HELD, self._segment_start)
            if candidate is not None:
                fit.inliers, fit.agreement = candidate.inliers, candidate.agreement
            self._held[frame] = small * fit.scale + fit.shift
            return self._keep(raw, fit)
        self._references[frame] = small * fit.scale + fit.shift
        self._held.clear()
        self._last = fit
        return self._keep(raw, fit)

    @staticmethod
    def _keep(raw: np.ndarray, fit: Alignment) -> tuple[np.ndarray, Alignment]:
        return fit.apply(np.asarray(raw, dtype=np.float32)), fit

    def _start(self, frame: int, small: np.ndarray) -> Alignment:
        """The first frame of a shot: kept as it is (with the last scale after a gap)."""
        last = self._last if self._last is not None else Alignment(1.0, 0.0)
        fit = Alignment(last.scale, last.shift, 1.0, 0, 1.0, START, frame)
        self._segment_start = frame
        self._references[frame] = small * fit.scale + fit.shift
        self._last = fit
        return fit

    def _static(self, frame: int, reference: np.ndarray) -> np.ndarray | None:
        """Grid cells where the reference agrees with the references ``STATIC_LAGS`` back (of the
        same alignment): world-static background, not a moving object; None if too few."""
        mask = np.isfinite(reference)
        compared = False
        for lag in STATIC_LAGS:
            old = self._references.get(frame - lag)
            if old is None or (self._segment_start is not None and frame - lag < self._segment_start):
                continue
            difference = np.abs(old - reference)
            known = np.isfinite(difference)
            if known.sum() < 16:
                continue
            # The lower quartile is the static part's own scatter when a quarter of it is static
            # (0.32 sigma of a Gaussian), however much of the frame moves.
            typical = np.quantile(difference[known], 0.25) / 0.3186
            mask &= known & (difference < STATIC_SPREAD * typical + 1e-6)
            compared = True
        if not compared or mask.sum() < STATIC_MIN * np.isfinite(reference).sum():
            return None
        return mask

    def _background_fit(self, frame: int, small: np.ndarray, reference: np.ndarray,
                        guess: tuple | None, recent: list[int] = ()
                        ) -> tuple[Alignment, np.ndarray | None]:
        """The fit on the static background (see the module docstring) and the cells it used."""
        whole = fit_with_motion(small, reference, guess=guess)
        static = self._static(frame, reference)
        moving = None
        if self._photos and recent and frame in self._photos:
            # The pictures from the oldest reference on: the cells that moved while they were taken.
            moving = motion.moving_cells([self._photos[f] for f in sorted(self._photos)
                                          if recent[0] <= f <= frame], static)
        if moving is not None and moving.mean() >= PHOTO_MOVING_MIN:
            # A large object: what the depth test lets through. The fit keeps to the cells the
            # photos show still (with the depth test as well it kept too few of the room).
            finite = np.isfinite(reference)
            seen = finite & ~moving
            if seen.sum() >= STATIC_MIN * finite.sum():
                fit = fit_with_motion(small, reference, guess=guess, valid=seen)
                return fit, seen
        if static is None:
            return whole, None
        # Cells the new frame agrees on too: a moving object may now cover static cells.
        moved, _inside = _sample(reference, *whole.motion)
        residual = np.abs(small * whole.scale + whole.shift - moved)
        background = static & (residual < TUKEY_C * max(whole.sigma, 1e-6) * np.sqrt(whole.scale))
        if background.sum() < BACKGROUND_MIN * np.isfinite(reference).sum():
            background = static
        fit = fit_with_motion(small, reference, guess=guess, valid=background)
        if abs(np.log(fit.scale / whole.scale)) > BACKGROUND_DISAGREE:
            return whole, None
        return fit, background

    def _with_anchors(self, frame: int, small: np.ndarray, fit: Alignment, recent: list[int],
                      background: np.ndarray | None = None) -> Alignment:
        """The fit averaged with fits to older frames of the same alignment that agree with it
        (on the same background cells)."""
        anchors = []
        for lag in ANCHOR_LAGS:
            old = frame - lag
            if old in recent or old not in self._references or \
                    (self._segment_start is not None and old < self._segment_start):
                continue
            anchor = fit_with_motion(small, self._references[old], guess=(fit.scale, fit.shift),
                                     valid=background)
            if anchor.inliers >= MIN_INLIERS and anchor.agreement >= MIN_AGREEMENT:
                anchors.append(anchor)
        scales, shifts = [fit.scale], [fit.shift]
        if len(anchors) >= 2:
            # Older frames that agree among themselves overrule a fit to the last few frames that
            # disagrees with them all (pulled along by a moving object).
            logs = np.log([anchor.scale for anchor in anchors])
            centre = float(np.median(logs))
            agreeing = [a for a, value in zip(anchors, logs) if abs(value - centre) < 0.1]
            if abs(np.log(fit.scale) - centre) > BACKGROUND_DISAGREE and len(agreeing) >= 2:
                scales, shifts = [a.scale for a in agreeing], [a.shift for a in agreeing]
                anchors = []
        for anchor in anchors:
            if anchor.inliers >= max(MIN_INLIERS, 0.8 * fit.inliers) and \
                    abs(np.log(anchor.scale / fit.scale)) < 0.1:
                scales.append(anchor.scale)
                shifts.append(anchor.shift)
        fit.scale, fit.shift = float(np.mean(scales)), float(np.mean(shifts))
        return fit

    def _after_cut(self, frame: int, small: np.ndarray) -> Alignment | None:
        """A frame that does not fit the shot but fits a held frame: a new alignment from there."""
        for held in sorted(self._held, reverse=True):
            reference = self._held[held]
            fit = fit_with_motion(small, reference)
            if self._plausible(fit, small, reference, None):
                self._references = {held: reference}
                self._segment_start = held
                fit.references, fit.status, fit.segment_start = 1, CUT, held
                return fit
        return None


def stabilize_sequence(frames: list[np.ndarray], history: int = DEFAULT_HISTORY,
                       grid: int = DEFAULT_GRID, photos: list | None = None
                       ) -> tuple[list[np.ndarray], list[Alignment]]:
    """Every frame of a clip aligned to the ones before it (frame numbers are list positions);
    ``photos``: the frames' input pictures, optional (see ``TemporalStabilizer.align``)."""
    stabilizer = TemporalStabilizer(history, grid)
    aligned, fits = [], []
    for index, values in enumerate(frames):
        values, fit = stabilizer.align(index, values, None if photos is None else photos[index])
        aligned.append(values)
        fits.append(fit)
    return aligned, fits
