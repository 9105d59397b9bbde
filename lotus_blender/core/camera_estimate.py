"""Focal length and depth shift from Lotus depth + normals (numpy only).

Lotus depth is affine-invariant: a disparity map v (near = 1) is inverse depth up to a scale and a
shift, 1/z = a (v + s); a relative depth map v (near = 0) is depth up to both, z = a (v + s). The
scale a is the one thing the maps cannot know (the artist sets Near). The shift s and the focal
length f can be found, because the normals are a second measurement of the same surfaces.

A point at planar depth z behind pixel (X right, Y up, pixels from the centre) is z (X/f, Y/f, -1).
Its surface is perpendicular to n (Blender camera space) exactly when

    d(log z)/dX = n_x / D,   d(log z)/dY = n_y / D,   D = f n_z - n_x X - n_y Y.

Conversely a log-depth gradient g implies the normal m ~ (f g_X, f g_Y, 1 + g_X X + g_Y Y). With
g = -grad(v) / (v + s) (disparity) or +grad(v) / (v + s) (depth), the right (f, s) make m agree with
the predicted normals. Per pixel the condition is linear in (f, s):

    f (sigma v_X n_z) - s n_x = n_x v + sigma v_X (n_x X + n_y Y)     (and the same with Y),

sigma = -1 for disparity, +1 for depth. The estimate: the maps averaged down, smoothed a little and
differentiated, leaving out tears, creases and grazing pixels (core.map_samples); a coarse grid over
(f, near/far ratio) under a robust angular cost (outliers and clipped plateaus stop mattering);
iteratively reweighted least squares on the linear conditions, each scaled to an angle; then the
focal settled on the profile of the truncated squared angle (the shift re-fitted for each focal).
One plane fixes only one combination of f and s; two differently turned surfaces (or a curved one)
fix both.

Confidence (0..1), two tests that must both pass (the lower one counts):
- sharpness: the systematic angle (beyond the noise, which every candidate shares) that the nearest
  alternative adds, f moved by 25 % with the shift re-fitted, or the near/far ratio moved by 0.1
  with f kept; RISE_HALF_DEG of it gives 0.5. Measured on the pixels whose normals are turned away
  from the camera axis and lowered when few pixels are turned or the best fit is poor;
- stability: how far the optimum moves when the maps carry one systematic error of the size real
  Lotus maps have (tests/lotus_errors.py): the depth's range stretched by 8 %, a 6 % ramp of log
  depth across the frame, all normals tilted by 3 degrees. A relative move of STABLE gives 0.5.
  Systematic errors do not make the cost shallower, they move its minimum: on a room a 3 degree
  tilt moves the focal by tens of percent, so the maps alone are (rightly) almost never confident
  about the focal. The depth range at a known focal moves much less and often is.
Below CONFIDENT the builder falls back. With the photo (estimate_camera(photo=...)) the focal from
its orthogonal vanishing points (core.vanishing) is used when that is confident; the shift is then
estimated at that focal (and the maps' own focal, the slow part, is not estimated at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from . import depth_refine, vanishing
from .geometry import FULL_FRAME_DIAGONAL_MM
from .map_samples import MapSamples, ratio_for_shift, samples_from_maps, shift_for_ratio

KINDS = ("disparity", "depth")
CONFIDENT = 0.5
FOCAL_35MM_RANGE = (10.0, 300.0)
ESTIMATION_SIZE = 256            # longest edge the maps are averaged down to
ROBUST_ANGLE_DEG = 10.0          # angular errors well above this count as outliers
MAX_RANGE_RATIO = 1000.0         # depth range / near when the far end is (nearly) at infinity
_RATIO_GRID = np.linspace(0.01, 0.98, 50)   # near/far candidates
_FOCAL_GRID = np.geomspace(*FOCAL_35MM_RANGE, 48)
_FOCAL_STEP = 1.25
_RATIO_STEP = 0.1
TRUNCATE_DEG = 20.0              # each pixel's angle is capped at this in the squared error
RISE_HALF_DEG = 0.3              # systematic angle an alternative adds for confidence 0.5
POOR_FIT_DEG = 10.0              # an RMS angle at the best fit that halves the confidence


def focal_35mm_from_px(focal_px, width, height):
    """35 mm-equivalent focal (on the diagonal, as EXIF and core.geometry.lens_from_35mm) of a focal
    length in pixels of a width x height image."""
    return float(focal_px) * FULL_FRAME_DIAGONAL_MM / math.hypot(width, height)


def focal_px_from_35mm(focal_35mm, width, height):
    """The inverse of focal_35mm_from_px (scalars or arrays)."""
    return np.asarray(focal_35mm, dtype=np.float64) * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


@dataclass(frozen=True)
class CameraEstimate:
    """What the maps say about the camera. shift is in the map's own units (see the module text);
    shift_confidence judges it for this focal (estimate again with focal_px= for another one)."""
    kind: str
    width: int
    height: int
    focal_px: float
    shift: float
    focal_confidence: float
    shift_confidence: float
    error_deg: float          # median angle between implied and given normals (turned pixels)
    focal_given: bool = False
    focal_source: str = "maps"   # "given", "maps" (depth + normals) or "lines" (vanishing points)
    note: str = ""               # why the focal is not confident, in a few words

    @property
    def focal_35mm(self) -> float:
        return focal_35mm_from_px(self.focal_px, self.width, self.height)

    @property
    def focal_is_confident(self) -> bool:
        return self.focal_given or self.focal_confidence >= CONFIDENT

    @property
    def shift_is_confident(self) -> bool:
        return self.shift_confidence >= CONFIDENT

    def depth(self, values, near=1.0) -> np.ndarray:
        """Planar depth of the map, its near end (disparity 1, relative depth 0) at `near`."""
        return map_to_depth(values, self.kind, self.shift, near)


def depth_range_for_shift(shift, near=1.0):
    """With 1/z ~ v + s (or z ~ v + s) and the near end at `near`, the far end is near / s farther."""
    return float(near) / max(float(shift), 1.0 / MAX_RANGE_RATIO)


def map_to_depth(values, kind, shift, near=1.0):
    """Planar depth from a Lotus map (values clipped to [0, 1] as the builder does) and a shift."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    s = max(float(shift), 1.0 / MAX_RANGE_RATIO)
    if kind == "disparity":
        return float(near) * (1.0 + s) / (v + s)
    if kind == "depth":
        return float(near) * (v + s) / s
    raise ValueError(f"kind must be one of {KINDS}")


# ---------------------------------------------------------------------------------------------
# Costs and fits.

_ROBUST = 1.0 - math.cos(math.radians(ROBUST_ANGLE_DEG))


def _cosines(samples, focal, shift):
    """cos(angle) between implied and given normals; focal (F,) x shift scalar -> (F, N)."""
    q = samples.v + shift
    q = np.where(q > 1e-9, q, 1e-9)
    g_x, g_y = samples.sign * samples.v_x / q, samples.sign * samples.v_y / q
    n = samples.n
    along = g_x * n[:, 0] + g_y * n[:, 1]
    base = 1.0 + g_x * samples.x + g_y * samples.y
    focal = np.atleast_1d(np.asarray(focal, dtype=np.float64))[:, None]
    return (focal * along + base * n[:, 2]) / np.sqrt(focal ** 2 * (g_x * g_x + g_y * g_y) + base * base)


def _cost(samples, focal, shift, mask=None):
    """Robust mean of 1 - cos over the samples (or the masked ones); one value per focal."""
    error = 1.0 - _cosines(samples, focal, shift)
    rho = error / (error + _ROBUST)
    if mask is not None:
        rho = rho[:, mask]
    return rho.mean(axis=1) if rho.shape[1] else np.zeros(rho.shape[0])


def _refit(samples, focal, shift, fit_focal, iterations=12):
    """Iteratively reweighted least squares on the linear conditions, each scaled to an angle."""
    n, sign = samples.n, samples.sign
    pn = n[:, 0] * samples.x + n[:, 1] * samples.y
    coefficient_f = np.concatenate([sign * samples.v_x * n[:, 2], sign * samples.v_y * n[:, 2]])
    coefficient_s = np.concatenate([-n[:, 0], -n[:, 1]])
    rhs = np.concatenate([n[:, 0] * samples.v + sign * samples.v_x * pn,
                          n[:, 1] * samples.v + sign * samples.v_y * pn])
    shift_low, shift_high = shift_for_ratio(samples, _RATIO_GRID[[0, -1]])
    focal_scale = math.hypot(np.abs(samples.x).max(), np.abs(samples.y).max()) or 1.0
    robust_slope = math.tan(math.radians(ROBUST_ANGLE_DEG))
    for _ in range(iterations):
        # Each condition divided by (v + s) D / f is a difference of slopes, about an angle; Geman-McClure
        # weights on it bound what any one pixel (a tear, a clipped plateau) can pull.
        scale = np.tile(focal / np.maximum(np.abs((samples.v + shift) * (focal * n[:, 2] - pn)), 1e-9), 2)
        residual = (coefficient_f * focal + coefficient_s * shift - rhs) * scale
        row_weight = scale / (1.0 + (residual / robust_slope) ** 2)
        if fit_focal:
            matrix = np.stack([coefficient_f * focal_scale, coefficient_s], axis=1) * row_weight[:, None]
            solution, *_ = np.linalg.lstsq(matrix, rhs * row_weight, rcond=None)
            focal = float(solution[0] * focal_scale)
            shift = float(solution[1])
        else:
            a = coefficient_s * row_weight
            b = (rhs - coefficient_f * focal) * row_weight
            shift = float(a @ b / max(a @ a, 1e-300))
        if not (math.isfinite(focal) and math.isfinite(shift)):
            break
        shift = min(max(shift, shift_low), shift_high)
    return focal, shift


def _best_shift(samples, focal):
    """Grid over near/far ratios then refit, for a fixed focal."""
    shifts = shift_for_ratio(samples, _RATIO_GRID)
    costs = np.array([_cost(samples, focal, s)[0] for s in shifts])
    _, shift = _refit(samples, focal, float(shifts[int(np.argmin(costs))]), fit_focal=False)
    return shift


def _profile_focal(samples, focal, mask, reach=1.4, steps=13):
    """Settle the focal on the profile of the truncated squared error (shift re-fitted per focal):
    the reweighted fit and that error need not share their minimum, and the confidence uses it."""
    factors = np.geomspace(1.0 / reach, reach, steps)
    shifts = [_best_shift(samples, focal * k) for k in factors]
    errors = np.array([_square_error(samples, focal * k, s, mask) for k, s in zip(factors, shifts)])
    i = int(np.argmin(errors))
    if 0 < i < steps - 1:
        # Parabola through the three points around the minimum, in log focal.
        left, centre, right = errors[i - 1:i + 2]
        curvature = left - 2.0 * centre + right
        offset = 0.5 * (left - right) / curvature if curvature > 0 else 0.0
        step = math.log(factors[1] / factors[0])
        better = focal * factors[i] * math.exp(float(np.clip(offset, -0.5, 0.5)) * step)
        return better, _best_shift(samples, better)
    return focal * factors[i], shifts[i]


def _square_error(samples, focal, shift, mask):
    """Mean squared angle (degrees^2), each pixel's angle capped at TRUNCATE_DEG."""
    cosine = _cosines(samples, focal, shift)[0][mask]
    angle = np.minimum(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))), TRUNCATE_DEG)
    return float(np.mean(angle * angle))


def _confidence(best, alternatives):
    """From the systematic angle (beyond the noise, which both share) that the nearest alternative
    adds: RISE_HALF_DEG gives 0.5. A poor best fit (normals and depth disagree) lowers it."""
    if not alternatives:
        return 0.0
    rise = max(min(alternatives) - best, 0.0)
    fit = 1.0 / (1.0 + best / POOR_FIT_DEG ** 2)
    return float(rise / (rise + RISE_HALF_DEG ** 2) * fit)


# Systematic errors of real maps (tests/lotus_errors.py, from the Lotus paper's figures): the depth's
# range compressed or stretched, a smooth ramp across the frame, the normals tilted as a whole.
STRETCH = 0.08                   # log-depth gradients scaled by 1 +- this
RAMP = 0.06                      # log depth changing by this across the frame's longer side
TILT_DEG = 3.0                   # all normals turned by this about the image axes
STABLE = 0.08                    # relative change of the focal (or near/far ratio) that halves confidence


def _perturbed(samples, kind, amount):
    """The samples as a map with one systematic error of Lotus's size would give them."""
    out = MapSamples(**vars(samples))
    if kind == "stretch":
        out.v_x, out.v_y = samples.v_x * (1.0 + amount), samples.v_y * (1.0 + amount)
    elif kind in ("ramp_x", "ramp_y"):
        # d(log z) gains RAMP / side per pixel: the map's gradient gains sign (v + s) RAMP / side;
        # (v + s) is taken at the near/far ratio 0.5, the ramp's size is what matters.
        side = 2.0 * max(np.abs(samples.x).max(), np.abs(samples.y).max(), 1.0)
        q = samples.v + max(float(shift_for_ratio(samples, 0.5)), 1e-6)
        step = samples.sign * q * amount / side
        if kind == "ramp_x":
            out.v_x = samples.v_x + step
        else:
            out.v_y = samples.v_y + step
    else:
        angle = math.radians(amount)
        c, s_ = math.cos(angle), math.sin(angle)
        n = samples.n.copy()
        if kind == "tilt_x":        # about the image X axis
            n[:, 1], n[:, 2] = c * samples.n[:, 1] - s_ * samples.n[:, 2], s_ * samples.n[:, 1] + c * samples.n[:, 2]
        else:
            n[:, 0], n[:, 2] = c * samples.n[:, 0] + s_ * samples.n[:, 2], -s_ * samples.n[:, 0] + c * samples.n[:, 2]
        out.n = n
    return out


_PERTURBATIONS = [("stretch", STRETCH), ("stretch", -STRETCH), ("ramp_x", RAMP), ("ramp_x", -RAMP),
                  ("ramp_y", RAMP), ("ramp_y", -RAMP), ("tilt_x", TILT_DEG), ("tilt_x", -TILT_DEG),
                  ("tilt_y", TILT_DEG), ("tilt_y", -TILT_DEG)]


def _stability(samples, focal, shift, fit_focal):
    """(focal change, near/far ratio change): the largest relative moves of the refitted optimum
    under Lotus-sized systematic errors (_PERTURBATIONS). The curvature of the cost says nothing
    about those: they move the minimum without making it shallower."""
    base_focal, base_shift = _refit(samples, focal, shift, fit_focal)
    base_ratio = float(ratio_for_shift(samples, base_shift))
    focal_change = ratio_change = 0.0
    for kind, amount in _PERTURBATIONS:
        moved_focal, moved_shift = _refit(_perturbed(samples, kind, amount), base_focal, base_shift, fit_focal)
        if not (math.isfinite(moved_focal) and math.isfinite(moved_shift) and moved_focal > 0):
            return float("inf"), float("inf")
        focal_change = max(focal_change, abs(moved_focal / base_focal - 1.0))
        moved_ratio = float(ratio_for_shift(samples, moved_shift))
        ratio_change = max(ratio_change, abs(moved_ratio / max(base_ratio, 1e-9) - 1.0))
    return focal_change, ratio_change


def _stable(change):
    """Confidence factor of a relative change under the perturbations: STABLE gives 0.5."""
    return 1.0 / (1.0 + (change / STABLE) ** 2) if math.isfinite(change) else 0.0


def estimate_camera(values, normals, kind="disparity", *, focal_px=None, valid=None, photo=None,
                    max_size=ESTIMATION_SIZE) -> CameraEstimate:
    """Focal length (unless given, in pixels of the map) and shift from a Lotus map and normals,
    and from the photo's straight lines when the photo is given.

    values: (H, W) disparity (near = 1) or relative depth (near = 0); normals: (H, W, 3) unit
    camera-space normals in Blender's convention (Lotus normals with X negated); valid: optional
    (H, W) bool mask; photo: the (h, w, 3|4) image the maps were made from (same aspect).
    A confident focal from orthogonal vanishing points (core.vanishing) wins: the lines are not
    distorted the way the maps are. Otherwise the maps' own estimate, confident only when it is
    both sharp and stable under Lotus-sized systematic errors.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    height, width = np.shape(values)
    samples = samples_from_maps(values, normals, kind, valid, max_size)
    if focal_px is not None:
        return _estimate(samples, kind, width, height, focal_px)
    lines = vanishing.focal_from_lines(photo, normals) if photo is not None else None
    if lines is not None and lines.confident:
        # The maps' own focal is not needed: the shift is estimated at the lines' focal.
        from_lines = lines.focal_px * width / np.shape(photo)[1]       # photo pixels -> map pixels
        with_lines = _estimate(samples, kind, width, height, from_lines)
        confidence = float(np.clip(1.0 - lines.spread / (2.0 * vanishing.FOCAL_SPREAD_MAX), 0.5, 1.0))
        return replace(with_lines, focal_confidence=confidence, focal_given=False, focal_source="lines", note="")
    estimate = _estimate(samples, kind, width, height, None)
    if not estimate.focal_is_confident:
        estimate = replace(estimate, note=estimate.note or
                           f"depth + normals: confidence {estimate.focal_confidence:.2f}")
        if lines is not None:
            estimate = replace(estimate, note=f"{estimate.note}; photo's lines: {lines.reason}")
    return estimate


def _estimate(samples, kind, width, height, focal_px):
    """estimate_camera on the maps' samples."""
    focal_given = focal_px is not None
    fallback_focal = float(focal_px) if focal_given else float(focal_px_from_35mm(50.0, width, height))
    slanted = samples.slanted
    if samples.v.size < 50 or slanted.sum() < 30 or samples.v_high <= samples.v_low:
        return CameraEstimate(kind, width, height, fallback_focal, 1.0 / 4.0, 0.0, 0.0, float("nan"), focal_given,
                              "given" if focal_given else "maps", "too few turned surfaces in the maps")

    focal_grid = np.array([fallback_focal]) if focal_given else focal_px_from_35mm(_FOCAL_GRID, width, height)
    shifts = shift_for_ratio(samples, _RATIO_GRID)
    table = np.stack([_cost(samples, focal_grid, s) for s in shifts], axis=1)   # (focals, shifts)
    best_f, best_s = np.unravel_index(int(np.argmin(table)), table.shape)
    focal, shift = _refit(samples, float(focal_grid[best_f]), float(shifts[best_s]), fit_focal=not focal_given)
    low, high = focal_px_from_35mm(np.array(FOCAL_35MM_RANGE), width, height)
    if not (math.isfinite(focal) and low <= focal <= high):
        focal, shift = float(focal_grid[best_f]), float(shifts[best_s])
    if not focal_given:
        focal, shift = _profile_focal(samples, focal, slanted)
    best = _square_error(samples, focal, shift, slanted)

    if focal_given:
        focal_confidence = 1.0
    elif not (low * 1.02 < focal < high / 1.02):
        focal_confidence = 0.0      # the optimum runs off the plausible lenses
    else:
        alternatives = [_square_error(samples, f, _best_shift(samples, f), slanted)
                        for f in (focal * _FOCAL_STEP, focal / _FOCAL_STEP)]
        focal_confidence = _confidence(best, alternatives)
    ratio = float(ratio_for_shift(samples, shift))
    alternatives = []
    for other in (ratio - _RATIO_STEP, ratio + _RATIO_STEP):
        other = float(np.clip(other, _RATIO_GRID[0], _RATIO_GRID[-1]))
        if abs(other - ratio) > 1e-3:
            alternatives.append(_square_error(samples, focal, float(shift_for_ratio(samples, other)), slanted))
    shift_confidence = _confidence(best, alternatives)
    focal_change, ratio_change = _stability(samples, focal, shift, fit_focal=not focal_given)
    # Both must hold: the cost rises sharply around the optimum AND the optimum stays put under
    # errors real maps have (min: neither makes up for the other).
    focal_confidence = min(focal_confidence, _stable(focal_change))
    shift_confidence = min(shift_confidence, _stable(ratio_change))
    coverage = min(1.0, slanted.sum() / (0.05 * samples.v.size))
    median_angle = float(np.degrees(np.arccos(np.clip(np.median(_cosines(samples, focal, shift)[0][slanted]),
                                                      -1.0, 1.0))))
    return CameraEstimate(kind, width, height, float(focal), float(shift),
                          focal_confidence * (1.0 if focal_given else coverage), shift_confidence * coverage,
                          median_angle, focal_given, "given" if focal_given else "maps")


# ---------------------------------------------------------------------------------------------
# Where the builder's focal length comes from.

FOCAL_SOURCES = ("AUTO", "RECORDED", "ESTIMATED", "SCENE", "MANUAL")
_FALLBACKS = {
    "AUTO": ("recorded", "estimated", "scene camera", "default"),
    "RECORDED": ("recorded", "scene camera", "default"),
    "ESTIMATED": ("estimated", "recorded", "scene camera", "default"),
    "SCENE": ("scene camera", "default"),
    "MANUAL": ("manual", "default"),
}


def focal_origin(source, available):
    """(origin, fell_back) for a focal source: the first of its candidates in `available`.

    available: the origins at hand among "recorded" (EXIF or the rendering camera), "estimated"
    (a confident estimate), "scene camera", "manual"; "default" (50 mm) always is.
    """
    if source not in _FALLBACKS:
        raise ValueError(f"focal source must be one of {FOCAL_SOURCES}")
    order = _FALLBACKS[source]
    for origin in order:
        if origin == "default" or origin in available:
            return origin, origin != order[0] and not (source == "AUTO" and origin == "estimated")
    return "default", True


# ---------------------------------------------------------------------------------------------
# The map refined with the normals, re-encoded for the builder.

def refine_map(values, normals, kind, focal_px, shift, *, tear_threshold=depth_refine.DEFAULT_TEAR_THRESHOLD,
               pixel_size=1.0):
    """A Lotus map refined with the normals -> (map of the same kind in [0, 1], depth range / near).

    The refined depth is encoded with the map's own mapping (value 1 or 0 at Near, the other end
    at near / shift farther), clipped to [0, 1] as the model's maps are: the artist's Near and the
    Depth Range keep their meaning and the surfaces stay where the depth put them. (Re-encoding
    between the refined map's own extremes let one moved pixel rescale the whole mesh.)
    """
    s = max(float(shift), 1.0 / MAX_RANGE_RATIO)
    depth = map_to_depth(values, kind, s, 1.0)
    refined = depth_refine.refine_depth(depth, normals, focal_px, tear_threshold=tear_threshold,
                                        pixel_size=pixel_size).astype(np.float64)
    refined = np.where(np.isfinite(refined) & (refined > 0), refined, depth)
    if kind == "disparity":
        encoded = (1.0 + s) / refined - s          # the inverse of map_to_depth
    else:
        encoded = refined * s - s
    far_end = 0.0 if kind == "disparity" else 1.0   # where the map had no value
    encoded = np.where(np.isfinite(encoded), encoded, far_end)
    return np.clip(encoded, 0.0, 1.0).astype(np.float32), 1.0 / s
