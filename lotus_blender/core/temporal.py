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
- fits run on a small grid (area-averaged), so a frame costs milliseconds at any size (the fits
  and the grid: core/affine_fit.py).

It is causal (a frame depends only on earlier ones) so frames can be written as soon as they are
predicted, and a run resumed after a stop continues from the frames already on disk
(``add_reference``). The first frame sets the scale of what follows and is kept as it is.
Measured on model-like maps by benchmarks/bench_stabilize.py (README "Sequences and render farms").
"""

from __future__ import annotations

import warnings

import numpy as np

from . import affine_fit
from .affine_fit import (ALIGNED, CUT, DEFAULT_GRID, FLAT, HELD, START, Alignment, area_resample,
                         fit_with_motion, grid_shape)

from . import motion

DEFAULT_HISTORY = 3
ANCHOR_LAGS = (8, 16, 32, 64)  # older frames a fit is averaged with (drift)
STATIC_LAGS = (4, 8)           # older frames a pixel must agree with to count as world-static
STATIC_SPREAD = 3.0            # ... within this many times the typical difference of the two
PHOTO_MOVING_MIN = 0.15        # the photos' mask takes over where they show this much moving
STATIC_MIN = 0.15              # fewer static pixels than this fraction of the frame: no mask
BACKGROUND_MIN = 0.1           # static and agreeing with the first fit: at least this fraction
BACKGROUND_DISAGREE = 0.15     # |log| of background / whole-frame scale beyond this: whole frame
MIN_INLIERS = 0.3              # fewer inliers than this: the fit is not trusted
MIN_AGREEMENT = 0.6            # weighted correlation of the inliers below this: not trusted
MAX_STEP = 3.0                 # scale change from the previous frame beyond this: not trusted
MAX_GAP = 48                   # frames a reference is remembered across (fades, held frames)
FLAT_SPREAD = 0.02             # a map whose 5-95 % spread is below this (Lotus maps: [0, 1]) ...
FLAT_RATIO = 0.5               # ... below this fraction of the shot's: aligned, never a reference
FLAT_FIT_RATIO = 0.15          # ... below this fraction: near-flat, the previous scale and shift kept

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
        if affine_fit.spread(small) > FLAT_SPREAD:
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
        typical = np.median([affine_fit.spread(self._references[f]) for f in recent]) if recent else None
        spread = affine_fit.spread(small) * last.scale
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
        moved, _inside = affine_fit.sample(reference, *whole.motion)
        residual = np.abs(small * whole.scale + whole.shift - moved)
        background = static & (residual < affine_fit.TUKEY_C * max(whole.sigma, 1e-6) * np.sqrt(whole.scale))
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
