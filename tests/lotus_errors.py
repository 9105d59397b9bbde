"""An error model of real Lotus output: true depth and normals degraded the way a monocular model errs.

Why: maps that are the truth plus white noise are far easier than what the model gives, and features
proven on them (focal estimation, refinement, stabilization, relighting) were confidently wrong on real
maps. Monocular models are wrong in smooth, structured ways (Lotus paper, arXiv 2409.18124, tables 1-2:
depth AbsRel about 5 % on NYUv2 to 8 % on KITTI after an affine fit; normals about 15-17 degrees mean
angular error on NYUv2/ScanNet/iBims, median about 7-9 degrees). `degrade()` reproduces the kinds of
error, each scaled by one severity knob (0 = exact maps plus the 2e-4 noise the older tests used,
1 = the published error levels):

Depth (planar camera depth in, same units out):
- a smooth relative warp: log-depth times a random low-frequency field (a few control points across
  the frame) plus a global monotone compression of the depth range (d ** (1 - g)), which no affine fit
  removes;
- occlusion edges softened: the log-depth blurred over about 1 % of the frame's size, so an object's
  edge ramps into the background instead of stepping;
- fine detail flattened: structure smaller than about 5 % of the frame kept at half its amplitude;
- a few small regions the model misjudges, pushed nearer or farther by up to 6 %;
- a little white noise.
Normals (unit vectors in any frame; the tilt axes lie in the image plane of the vector's frame, so
pass camera-space normals, Blender convention: +X right, +Y up, +Z toward the camera):
- tilted by a smooth random rotation field (a few degrees at severity 1);
- blurred across occlusion edges and fine detail flattened, like the depth;
- small regions (about ten, each a few percent of the frame across) tilted strongly, up to 80
  degrees at their centre: the heavy tail of real errors (mean about 1.7x the median);
- a little angular noise.

Fields are defined in normalised image coordinates, so the same seed gives the same errors at any
resolution. With `frame`, the fields of a shot drift from frame to frame (part shared by the whole
shot, part per frame), which is how per-frame predictions of a video flicker.

Measured by `tests/test_lotus_errors.py` on the analytic scenes of `tests/synthetic_scenes.py` and
printed there (severity 0.5: 3.2 %, 8.2 / 4.3 degrees; severity 1: 6.6 %, 15.2 / 8.9 degrees mean /
median); the figures are kept in the test's bounds (severity 1: depth AbsRel after one affine
fit 5-8 %, normal mean angular error 13-17 degrees, median under 10 degrees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEVERITIES = (0.0, 0.5, 1.0)
BASE_NOISE = 2e-4  # what the earlier tests used: the severity-0 maps are today's maps

# Amplitudes at severity 1 (calibrated on synthetic_scenes.room/balls and the Cycles scenes, see the
# module docstring); every term scales linearly with severity.
DEPTH_WARP = 0.06          # std of the smooth log-depth warp
DEPTH_COMPRESSION = 0.10   # exponent change of the global monotone warp d ** (1 - g)
DEPTH_BLOBS = 0.06         # peak log-depth offset of a misjudged region
DEPTH_NOISE = 0.004        # relative white noise
EDGE_BLUR = 0.010          # Gaussian sigma as a fraction of the frame's longer side
DETAIL_SCALE = 0.05        # detail below this fraction of the frame's longer side ...
DETAIL_KEPT = 0.5          # ... keeps this fraction of its amplitude at severity 1
NORMAL_TILT = 3.0          # std of the smooth tilt field, degrees
NORMAL_BLOBS = 80.0        # peak tilt of a misjudged region, degrees
NORMAL_NOISE = 1.5         # std of per-pixel angular noise, degrees
BLOB_COUNT = 3             # misjudged depth regions
NORMAL_BLOB_COUNT = 10     # misjudged normal regions
BLOB_RADIUS = (0.03, 0.07)  # fraction of the longer side
SHOT_SHARE = 0.8           # with a frame: share of each field's variance common to the whole shot


@dataclass
class Degraded:
    depth: np.ndarray      # (H, W) float64, same units as the true depth
    normals: np.ndarray    # (H, W, 3) float64, unit length


def smooth_field(shape, rng, frequencies=2):
    """A zero-mean, unit-std random field of low frequencies (cosines up to `frequencies` half
    periods across the frame): a handful of control points' worth of freedom."""
    height, width = shape
    y = (np.arange(height) + 0.5)[:, None] / height
    x = (np.arange(width) + 0.5)[None, :] / width
    field = np.zeros(shape)
    for ky in range(frequencies + 1):
        for kx in range(frequencies + 1):
            if kx == ky == 0:
                continue
            amplitude = rng.normal() / np.hypot(kx, ky)
            phase_x, phase_y = rng.uniform(0, 2 * np.pi, 2)
            field += amplitude * np.cos(np.pi * kx * x + phase_x) * np.cos(np.pi * ky * y + phase_y)
    std = field.std()
    return field / std if std > 0 else field


def _blobs(shape, rng, count=BLOB_COUNT):
    """(H, W) fields in [-1, 1]: a few Gaussian blobs of random sign at random places."""
    height, width = shape
    side = max(height, width)
    y = np.arange(height)[:, None]
    x = np.arange(width)[None, :]
    field = np.zeros(shape)
    for _ in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(*BLOB_RADIUS) * side
        field += rng.choice((-1.0, 1.0)) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius ** 2))
    return np.clip(field, -1.0, 1.0)


def gaussian_blur(values, sigma):
    """Separable Gaussian blur with edge padding over the first two axes."""
    if sigma <= 0.05:
        return values.copy()
    radius = max(1, int(3 * sigma + 0.5))
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma * sigma))
    taps /= taps.sum()
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (values.ndim - 2)
    padded = np.pad(values, pad, mode="edge")
    height, width = values.shape[:2]
    rows = sum(w * padded[:, i:i + width] for i, w in enumerate(taps))
    return sum(w * rows[i:i + height] for i, w in enumerate(taps))


def _rotate(normals, axis_x, axis_y, angle):
    """Rotate unit vectors about the in-plane axis (axis_x, axis_y, 0) by angle (radians), per pixel
    (Rodrigues' formula)."""
    axis = np.stack([axis_x, axis_y, np.zeros_like(axis_x)], axis=-1)
    axis /= np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-12)
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    dot = np.sum(axis * normals, axis=-1, keepdims=True)
    return normals * cos + np.cross(axis, normals) * sin + axis * dot * (1 - cos)


def _normalize(vectors):
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


class _Fields:
    """Random draws for one map: the shot's own plus, with a frame, that frame's, blended so a
    shot's errors drift smoothly rather than jump."""

    def __init__(self, seed, frame):
        self.shot = np.random.default_rng([int(seed), 7])
        self.frame = None if frame is None else np.random.default_rng([int(seed), 11, int(frame)])

    def smooth(self, shape):
        field = smooth_field(shape, self.shot)
        if self.frame is None:
            return field
        own = smooth_field(shape, self.frame)
        return np.sqrt(SHOT_SHARE) * field + np.sqrt(1 - SHOT_SHARE) * own

    def blobs(self, shape, count=BLOB_COUNT):
        # Misjudged regions belong to the content, not to a frame: the shot's own.
        return _blobs(shape, self.shot, count)

    def noise(self, shape):
        rng = self.frame if self.frame is not None else self.shot
        return rng.normal(size=shape)


def degrade_depth(depth, severity, seed=0, frame=None, *, noise=True):
    """True planar depth (H, W) -> depth with model-like errors (see the module docstring).
    noise=False leaves out the white noise only (same smooth errors for the same seed)."""
    depth = np.asarray(depth, np.float64)
    fields = _Fields(seed, frame)
    shape = depth.shape
    side = max(shape)
    log_depth = np.log(np.maximum(depth, 1e-9))
    if severity > 0:
        reference = np.median(log_depth)
        # Global monotone compression of the range about the median (not removed by an affine fit).
        log_depth = reference + (1.0 - DEPTH_COMPRESSION * severity) * (log_depth - reference)
        # Fine detail flattened, then occlusion edges softened.
        coarse = gaussian_blur(log_depth, DETAIL_SCALE * side)
        kept = 1.0 - (1.0 - DETAIL_KEPT) * severity
        log_depth = coarse + kept * (log_depth - coarse)
        log_depth = gaussian_blur(log_depth, EDGE_BLUR * side * severity)
        log_depth = log_depth + severity * (DEPTH_WARP * fields.smooth(shape)
                                            + DEPTH_BLOBS * fields.blobs(shape))
    degraded = np.exp(log_depth)
    if not noise:
        return degraded
    noise = BASE_NOISE * (depth.max() - depth.min()) * fields.noise(shape)
    return degraded * (1.0 + DEPTH_NOISE * severity * fields.noise(shape)) + noise


def degrade_normals(normals, severity, seed=0, frame=None):
    """Unit normals (H, W, 3) -> normals with model-like errors (see the module docstring)."""
    normals = _normalize(np.asarray(normals, np.float64))
    if severity <= 0:
        return normals
    fields = _Fields(seed + 1000, frame)
    shape = normals.shape[:2]
    side = max(shape)
    coarse = _normalize(gaussian_blur(normals, DETAIL_SCALE * side))
    kept = 1.0 - (1.0 - DETAIL_KEPT) * severity
    normals = _normalize(coarse + kept * (normals - coarse))
    normals = _normalize(gaussian_blur(normals, EDGE_BLUR * side * severity))
    tilt = np.radians(severity * (NORMAL_TILT * fields.smooth(shape)
                                  + NORMAL_BLOBS * fields.blobs(shape, NORMAL_BLOB_COUNT)))
    normals = _rotate(normals, fields.smooth(shape), fields.smooth(shape), tilt)
    noise = np.radians(severity * NORMAL_NOISE) * fields.noise(shape)
    normals = _rotate(normals, fields.noise(shape), fields.noise(shape), noise)
    return normals


def degrade(depth, normals, severity, seed=0, frame=None) -> Degraded:
    """Both maps of one view degraded at `severity` (0, 0.5, 1 in the tests) with a seed; `frame`
    makes the errors of a shot drift from frame to frame."""
    return Degraded(degrade_depth(depth, severity, seed, frame),
                    degrade_normals(normals, severity, seed, frame))


def affine_absrel(predicted, truth, mask=None):
    """AbsRel of predicted depth after one least-squares scale and shift fit to the truth (the
    affine-invariant depth metric of the Lotus paper), over mask."""
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    keep = np.isfinite(truth) & (truth > 0) if mask is None else mask
    p, t = predicted[keep], truth[keep]
    design = np.stack([p, np.ones_like(p)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, t, rcond=None)
    return float(np.mean(np.abs(scale * p + shift - t) / t))


def angular_errors(predicted, truth, mask=None):
    """Per-pixel angle (degrees) between two normal maps, over mask."""
    cosine = np.sum(_normalize(np.asarray(predicted, np.float64))
                    * _normalize(np.asarray(truth, np.float64)), axis=-1)
    angles = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return angles if mask is None else angles[mask]
