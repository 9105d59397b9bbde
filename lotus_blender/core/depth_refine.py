"""Depth refined with normals: a screened Poisson solve on log-depth (numpy only).

Lotus normals carry finer detail than its depth. For a planar depth z seen through a pinhole of
focal f (pixels), a surface with camera-space normal n (Blender convention: +X right, +Y up, +Z
toward the camera) has the log-depth gradient

    d(log z)/dX = n_x / D,   d(log z)/dY = n_y / D,   D = f n_z - n_x X - n_y Y

with X right and Y up in pixels from the image centre (core.camera_estimate derives it). The refined
log-depth l minimises, over the pixel grid,

    sum over kept edges (l_q - l_p - t_pq)^2  +  sum over pixels w_p (l_p - l0_p)^2

t_pq: the normals' log-depth step; l0: the log of the given depth. The normals give the detail, the
depth the low frequencies (wavelengths above about 2 pi / sqrt(prior) pixels). Edges where the depth
jumps beyond what the normals allow (alone, or summed over a few pixels: the model's depth is smooth,
its jumps are ramps) are cut, so occlusions stay torn. Where depth and normals disagree far beyond
their usual disagreement (a smeared edge next to a tear: ZONE_SPREAD times the median) the prior
weight w_p drops to ZONE_PRIOR of its value, so the error there is not spread around.

Real normals are wrong in smooth ways too (tilted by a few degrees over large areas, misjudged
regions; tests/lotus_errors.py), and integrated those move whole surfaces. So the depth wins
wherever the two disagree beyond detail: a normal's slope is trusted less the more obliquely its
surface is seen (an angular error moves the slope by about that error over facing squared:
normal_trust blends in the depth's own step below FULL_FACING, all of it below MIN_FACING), and
the change the normals make is high-passed (LOW_LOCK: its wavelengths above about half the
prior's are taken back out), so they sharpen detail and creases but cannot shift, tilt or bend a
surface the depth placed. In the doubtful zone the refined depth stays within the depth's own
local range (its nearest and farthest value within ZONE_RANGE_RADIUS pixels): sharpening a
smeared edge moves each pixel toward the level of one side, never beyond both, and a band the
normals would float past that range is their error, not the depth's (this guard took the worst
case of the median 3D error, refined against unrefined, over 10 seeds of the seven benchmark
scenes from +8 % to +3.5 %). Measured on the
error model (benchmarks/bench_refine.py): the median normal error drops by about 40 % on degraded
maps; the median 3D error stays that of the depth, within a few percent either way per case.

Solving: the uniform problem (no cut, constant prior) has constant coefficients with free borders,
so a 2D cosine transform (DCT-II on numpy's real FFT) solves it exactly; it preconditions conjugate
gradients on the weighted one. Large maps solve the weighted problem on a grid averaged down to at
most WORK_SIZE pixels and add its correction of the depth to the full-size prior target; one
uniform solve at full size then takes the detail from the normals.
"""

from __future__ import annotations

import math

import numpy as np

from . import maps

DEFAULT_TEAR_THRESHOLD = 0.05   # relative depth jump beyond what the normals allow: a discontinuity
WORK_SIZE = 256                 # longest edge of the weighted solve
ZONE_SPREAD = 10.0              # disagreement this many times its median: a smeared edge
ZONE_FLOOR = 1e-3               # log-depth step disagreement that is noise, not a smeared edge
ZONE_MOVED = 0.01               # log-depth the normals moved a pixel by: its depth was smeared
ZONE_PRIOR = 0.01               # the prior's weight where depth and normals disagree
MIN_FACING = 0.1                # n . (-ray) below this: grazing, the normals' slope is not trusted
FULL_FACING = 0.7               # ... fully trusted from here, less and less below (normal_trust)
LOW_LOCK = 4.0                  # the change keeps wavelengths below half the prior's (4x its weight)
ZONE_RANGE_RADIUS = 2           # in the doubtful zone the depth stays within its range this close by


def _dct(values, axis):
    """Unnormalised DCT-II along axis: X_k = sum_n x_n cos(pi k (2n + 1) / 2N) (Makhoul's FFT form)."""
    x = np.moveaxis(values, axis, -1)
    n = x.shape[-1]
    reordered = np.concatenate([x[..., ::2], x[..., 1::2][..., ::-1]], axis=-1)
    spectrum = np.fft.rfft(reordered, axis=-1)
    half = spectrum.shape[-1]
    spectrum *= np.exp(-0.5j * np.pi * np.arange(half) / n)
    out = np.empty(x.shape, dtype=np.float64)
    out[..., :half] = spectrum.real
    rest = n - half       # X_{N-k} = -Im(W_k V_k) for the upper half
    if rest:
        out[..., n - rest:] = -spectrum.imag[..., 1:rest + 1][..., ::-1]
    return np.moveaxis(out, -1, axis)


def _idct(coefficients, axis):
    """The inverse of _dct along axis."""
    X = np.moveaxis(coefficients, axis, -1)
    n = X.shape[-1]
    half = n // 2 + 1
    mirrored = np.zeros(X.shape[:-1] + (half,), dtype=np.float64)
    mirrored[..., 1:] = X[..., ::-1][..., :half - 1]          # X_{N-k}, with X_N = 0
    spectrum = (X[..., :half] - 1j * mirrored) * np.exp(0.5j * np.pi * np.arange(half) / n)
    reordered = np.fft.irfft(spectrum, n=n, axis=-1)
    x = np.empty_like(reordered)
    even = (n + 1) // 2
    x[..., ::2] = reordered[..., :even]
    x[..., 1::2] = reordered[..., even:][..., ::-1]
    return np.moveaxis(x, -1, axis)


def _divergence(steps_x, steps_down, out):
    """Adds the edge steps' pull to out (the right-hand side of the normal equations)."""
    out[:, :-1] -= steps_x
    out[:, 1:] += steps_x
    out[:-1, :] -= steps_down
    out[1:, :] += steps_down
    return out


def _inverse_operator(shape, prior):
    """1 / (prior + eigenvalues of the grid Laplacian) in the cosine basis."""
    height, width = shape
    eigen_rows = 2.0 - 2.0 * np.cos(np.pi * np.arange(height) / height)
    eigen_cols = 2.0 - 2.0 * np.cos(np.pi * np.arange(width) / width)
    return 1.0 / (prior + eigen_rows[:, None] + eigen_cols[None, :])


def _apply_inverse(rhs, inverse):
    """Solve (prior + L) l = rhs with the operator from _inverse_operator."""
    spectrum = _dct(_dct(rhs, 0), 1)
    spectrum *= inverse
    return _idct(_idct(spectrum, 0), 1)


def screened_poisson(target, steps_x, steps_down, prior):
    """Solve (prior + L) l = prior * target + div for l on an (H, W) grid with free borders.

    steps_x (H, W-1): wanted l[:, c+1] - l[:, c]; steps_down (H-1, W): wanted l[r+1] - l[r].
    L is the grid graph's Laplacian; the cosine transform diagonalises it.
    """
    if prior <= 0:
        raise ValueError("the prior weight must be positive")
    rhs = _divergence(steps_x, steps_down, prior * np.asarray(target, dtype=np.float64))
    return _apply_inverse(rhs, _inverse_operator(rhs.shape, prior))


def pixel_centres(width, height, pixel_size=1.0):
    """Pixel-centre coordinates (x right, y up) from the image centre, in units of pixel_size."""
    x = (np.arange(width) + 0.5 - width / 2.0) * pixel_size
    y = (height / 2.0 - (np.arange(height) + 0.5)) * pixel_size
    return x, y


def log_depth_gradient(normals, focal_px, x, y, spacing=1.0):
    """Log-depth steps per grid step (X right, Y up) the normals imply, and where they are trusted.

    normals: (H, W, 3) Blender camera space; x (W,), y (H,): the grid's pixel-centre coordinates in
    the focal's pixels; spacing: the grid step in those pixels. Returns (g_x, g_y, trusted).
    """
    n = np.asarray(normals, dtype=np.float64)
    denominator = focal_px * n[..., 2] - n[..., 0] * x[None, :] - n[..., 1] * y[:, None]
    # -n . ray with a unit ray: how squarely the surface faces the camera.
    facing = denominator / np.sqrt(focal_px ** 2 + x[None, :] ** 2 + y[:, None] ** 2)
    trusted = np.isfinite(facing) & (facing > MIN_FACING)
    scale = np.where(trusted, spacing / np.where(trusted, denominator, 1.0), 0.0)
    return n[..., 0] * scale, n[..., 1] * scale, trusted


def normal_trust(normals, focal_px, x, y):
    """How far each normal's slope is trusted over the depth's, 0..1: a normal's angular error
    moves the slope it implies by about that error over facing squared (facing: -n . ray), so
    surfaces seen obliquely lean on the depth (full trust from FULL_FACING up)."""
    n = np.asarray(normals, dtype=np.float64)
    denominator = focal_px * n[..., 2] - n[..., 0] * x[None, :] - n[..., 1] * y[:, None]
    facing = denominator / np.sqrt(focal_px ** 2 + x[None, :] ** 2 + y[:, None] ** 2)
    trust = np.clip(np.nan_to_num(facing, nan=0.0) / FULL_FACING, 0.0, 1.0) ** 2
    return np.where(facing > MIN_FACING, trust, 0.0)


def _along(values, start, stop, axis):
    """values[start:stop] along axis 0 or 1 (a view)."""
    return values[:, start:stop] if axis == 1 else values[start:stop]


def _disagreeing(residual, tolerance, axis, run=6):
    """Edges where the depth's steps and the normals' disagree by more than tolerance, alone or
    summed over `run` consecutive edges (a blurred tear is a ramp several pixels wide). Every edge
    of a disagreeing run is marked."""
    marked = np.abs(residual) > tolerance
    count = residual.shape[axis] - run + 1        # runs, one starting at each edge
    if count < 1:
        return marked
    residual = residual.astype(np.float32)
    total = _along(residual, 0, count, axis).copy()
    for offset in range(1, run):
        total += _along(residual, offset, offset + count, axis)
    bad = np.abs(total) > tolerance
    for offset in range(run):                     # edge e lies in the runs starting at e - run + 1 .. e
        view = _along(marked, offset, offset + count, axis)
        view |= bad
    return marked


def _laplacian(values, weight_x, weight_down):
    """The weighted grid Laplacian: sum over kept edges of (l_p - l_q)."""
    out = np.zeros_like(values)
    return _divergence(weight_x * np.diff(values, axis=1), weight_down * np.diff(values, axis=0), out)


def _conjugate_gradients(solution, rhs, weights, prior, weight_x, weight_down, iterations):
    """(diag(weights) + L_w) l = rhs by conjugate gradients, preconditioned by the uniform screened
    Poisson solve with the full prior."""
    inverse = _inverse_operator(rhs.shape, prior)

    def apply(values):
        return weights * values + _laplacian(values, weight_x, weight_down)

    def precondition(values):
        return _apply_inverse(values, inverse)

    residual = rhs - apply(solution)
    scale = float(np.sum(rhs * rhs)) or 1.0
    preconditioned = precondition(residual)
    direction = preconditioned
    product = float(np.sum(residual * preconditioned))
    for _ in range(iterations):
        applied = apply(direction)
        curvature = float(np.sum(direction * applied))
        if curvature <= 0.0:
            break
        alpha = product / curvature
        solution = solution + alpha * direction
        residual -= alpha * applied
        if float(np.sum(residual * residual)) < 1e-20 * scale:
            break
        preconditioned = precondition(residual)
        new_product = float(np.sum(residual * preconditioned))
        direction = preconditioned + (new_product / product) * direction
        product = new_product
    return solution


def _local_range(values, valid, radius):
    """(min, max) of values over the valid pixels within radius (a square window) of each pixel."""
    low, high = np.where(valid, values, np.inf), np.where(valid, values, -np.inf)
    for axis in (0, 1):      # separable: along the columns, then along the rows
        start_low, start_high = low, high
        for shift in range(1, radius + 1):
            for sign in (1, -1):
                # np.roll wraps around; the wrapped-in strip is masked out.
                rolled_low, rolled_high = np.roll(start_low, sign * shift, axis), np.roll(start_high, sign * shift, axis)
                strip = [slice(None)] * 2
                strip[axis] = slice(0, shift) if sign > 0 else slice(-shift, None)
                rolled_low[tuple(strip)], rolled_high[tuple(strip)] = np.inf, -np.inf
                low, high = np.minimum(low, rolled_low), np.maximum(high, rolled_high)
    return low, high


def default_prior(width, height):
    """Prior weight per pixel: the depth keeps wavelengths above max(24 px, long edge / 4); the
    normals shape everything finer."""
    wavelength = max(24.0, max(width, height) / 4.0)
    return (2.0 * math.pi / wavelength) ** 2


def _low_pass(values, weights, prior):
    """Normalised convolution with the screened Poisson kernel (wavelengths above about
    2 pi / sqrt(prior) kept), over the pixels where weights is set; 0 where nothing is near."""
    weights = np.asarray(weights, dtype=np.float64)
    no_x = np.zeros((values.shape[0], values.shape[1] - 1))
    no_down = np.zeros((values.shape[0] - 1, values.shape[1]))
    total = screened_poisson(np.where(weights > 0, values * weights, 0.0), no_x, no_down, prior)
    support = screened_poisson(weights, no_x, no_down, prior)
    return np.where(support > 1e-3, total / np.maximum(support, 1e-3), 0.0)


class _Edges:
    """The steps asked for and which edges are kept (not torn). Each step is the normals', blended
    with the depth's own as far as the normals are not trusted (normal_trust; no valid depth:
    none): the depth wins on oblique and grazing surfaces."""

    def __init__(self, log_depth, valid, normals, focal_px, x, y, spacing, tear_threshold):
        g_x, g_y, _ = log_depth_gradient(normals, focal_px, x, y, spacing)
        trust = normal_trust(normals, focal_px, x, y) * valid
        # Steps along columns (X grows) and down the rows (Y shrinks), averaged over the edge's ends,
        # blended with the depth's own step by the trust of the less trusted end.
        depth_x, depth_down = np.diff(log_depth, axis=1), np.diff(log_depth, axis=0)
        trust_x, trust_down = np.minimum(trust[:, 1:], trust[:, :-1]), np.minimum(trust[1:, :], trust[:-1, :])
        self.normal_x = trust_x * 0.5 * (g_x[:, 1:] + g_x[:, :-1]) + (1.0 - trust_x) * depth_x
        self.normal_down = -trust_down * 0.5 * (g_y[1:, :] + g_y[:-1, :]) + (1.0 - trust_down) * depth_down
        self.residual_x = depth_x - self.normal_x
        self.residual_down = depth_down - self.normal_down
        tear = math.log1p(max(tear_threshold, 0.0))
        self.keep_x = valid[:, 1:] & valid[:, :-1] & ~_disagreeing(self.residual_x, tear, 1)
        self.keep_down = valid[1:, :] & valid[:-1, :] & ~_disagreeing(self.residual_down, tear, 0)

    def kept_steps(self):
        return np.where(self.keep_x, self.normal_x, 0.0), np.where(self.keep_down, self.normal_down, 0.0)

    def doubtful_zone(self, valid, margin):
        """Pixels next to a cut edge or an edge where depth and normals disagree far beyond their
        usual disagreement (ZONE_SPREAD times its median: model errors and noise stay out)."""
        both = np.concatenate([np.abs(self.residual_x[self.keep_x]), np.abs(self.residual_down[self.keep_down])])
        loose = max(ZONE_FLOOR, ZONE_SPREAD * float(np.median(both))) if both.size else ZONE_FLOOR
        zone = np.zeros(valid.shape, bool)
        doubtful = ~self.keep_x | (np.abs(self.residual_x) > loose)
        zone[:, 1:] |= doubtful
        zone[:, :-1] |= doubtful
        doubtful = ~self.keep_down | (np.abs(self.residual_down) > loose)
        zone[1:, :] |= doubtful
        zone[:-1, :] |= doubtful
        return maps.grow(zone & valid, margin)


def _weighted_solve(log_depth, valid, edges, prior, iterations, rezone, margin):
    """The weighted problem (cut edges, weak prior in the doubtful zone) on one grid."""
    steps_x, steps_down = edges.kept_steps()
    weight_x, weight_down = edges.keep_x.astype(np.float64), edges.keep_down.astype(np.float64)
    # First guess: the uniform solve, cut edges asking for the given depth's own step.
    solution = screened_poisson(log_depth, np.where(edges.keep_x, steps_x, edges.residual_x + edges.normal_x),
                                np.where(edges.keep_down, steps_down, edges.residual_down + edges.normal_down),
                                prior)
    zone = edges.doubtful_zone(valid, margin)
    if zone[valid].all():
        zone[:] = False     # nothing agrees: keep the plain prior everywhere
    for round_index in range(rezone + 1):
        weights = np.where(zone, prior * ZONE_PRIOR, prior)
        rhs = _divergence(weight_x * steps_x, weight_down * steps_down, weights * log_depth)
        solution = _conjugate_gradients(solution, rhs, weights, prior, weight_x, weight_down, iterations)
        if round_index < rezone:
            # Pixels the normals moved away from the given depth were smeared there: stop pulling.
            zone |= maps.grow(np.abs(solution - log_depth) > ZONE_MOVED, margin) & valid
    return solution


def _block_mean(values, weights, factor):
    rows, cols = values.shape[0] // factor, values.shape[1] // factor
    shape = (rows, factor, cols, factor) + values.shape[2:]
    weights = weights[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor)
    if values.ndim == 3:
        weights = weights[..., None]
    total = (values[:rows * factor, :cols * factor].reshape(shape) * weights).sum(axis=(1, 3))
    count = weights.sum(axis=(1, 3))
    return total / np.maximum(count, 1e-12), count[..., 0] if values.ndim == 3 else count


def _upsample(coarse, shape, factor):
    """Bilinear from block centres back to the full grid (edges held beyond the last centre)."""
    def axis_weights(full, count):
        position = (np.arange(full) + 0.5) / factor - 0.5
        low = np.clip(np.floor(position).astype(np.int64), 0, count - 1)
        high = np.minimum(low + 1, count - 1)
        t = np.clip(position - low, 0.0, 1.0)
        return low, high, t
    low, high, t = axis_weights(shape[0], coarse.shape[0])
    rows = coarse[low] * (1.0 - t)[:, None] + coarse[high] * t[:, None]
    low, high, t = axis_weights(shape[1], coarse.shape[1])
    return rows[:, low] * (1.0 - t)[None, :] + rows[:, high] * t[None, :]


def refine_depth(depth, normals, focal_px, *, prior=None, tear_threshold=DEFAULT_TEAR_THRESHOLD,
                 pixel_size=1.0, work_size=WORK_SIZE, iterations=16, rezone=1, zone_margin=2):
    """Planar depth (H, W) > 0 refined with normals (H, W, 3, Blender camera space) -> (H, W) float32.

    focal_px: the focal length in pixels of size pixel_size (a map sampled on a coarser grid than
    the focal's image passes the grid step). The result keeps the depth's scale and low
    frequencies, takes the detail from the normals and keeps jumps larger than tear_threshold
    (relative) beyond what the normals allow. Non-finite or non-positive depth stays as it is.
    prior: the depth's weight per pixel (default: default_prior of the map's size).
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2 or depth.shape != np.shape(normals)[:2]:
        raise ValueError("depth (H, W) and normals (H, W, 3) must have the same size")
    height, width = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    if height < 2 or width < 2 or not valid.any():
        return depth.astype(np.float32)
    log_depth = np.log(np.where(valid, depth, 1.0))
    if not valid.all():
        log_depth[~valid] = np.median(log_depth[valid])
    normals = np.asarray(normals, dtype=np.float64)
    prior = default_prior(width, height) if prior is None else float(prior)
    x, y = pixel_centres(width, height, pixel_size)
    edges = _Edges(log_depth, valid, normals, focal_px, x, y, pixel_size, tear_threshold)

    factor = math.ceil(max(height, width) / work_size)
    if factor <= 1:
        refined = _weighted_solve(log_depth, valid, edges, prior, iterations, rezone, zone_margin)
    else:
        # The weighted solve on block means, its correction of the depth brought back up.
        weight = valid.astype(np.float64)
        coarse_log, count = _block_mean(log_depth, weight, factor)
        coarse_normals, _ = _block_mean(normals, weight, factor)
        coarse_normals /= np.maximum(np.linalg.norm(coarse_normals, axis=-1, keepdims=True), 1e-12)
        coarse_valid = count > 0.5 * factor * factor
        rows, cols = coarse_log.shape
        coarse_x = ((np.arange(cols) + 0.5) * factor - width / 2.0) * pixel_size
        coarse_y = (height / 2.0 - (np.arange(rows) + 0.5) * factor) * pixel_size
        coarse_edges = _Edges(coarse_log, coarse_valid, coarse_normals, focal_px, coarse_x, coarse_y,
                              factor * pixel_size, tear_threshold)
        coarse = _weighted_solve(coarse_log, coarse_valid, coarse_edges, prior * factor * factor,
                                 iterations, rezone, zone_margin)
        target = log_depth + _upsample(np.where(coarse_valid, coarse - coarse_log, 0.0), log_depth.shape, factor)
        # One uniform solve: kept edges take the normals' steps, cut ones the corrected target's.
        refined = screened_poisson(target, np.where(edges.keep_x, edges.normal_x, np.diff(target, axis=1)),
                                   np.where(edges.keep_down, edges.normal_down, np.diff(target, axis=0)), prior)
    # The depth keeps its own long wavelengths: the change the normals made is high-passed (its
    # low-pass, over the pixels outside the doubtful zone, is taken out everywhere), so smooth
    # tilts and misjudged regions of the normals cannot move the surface, while the sharpening at
    # tears and smeared edges, left out of the low-pass, casts no halo.
    zone = valid & edges.doubtful_zone(valid, zone_margin)
    refined -= _low_pass(refined - log_depth, valid & ~zone, prior * LOW_LOCK)
    # Where depth and normals disagree the depth wins beyond its own local range.
    low, high = _local_range(log_depth, valid, ZONE_RANGE_RADIUS)
    refined = np.where(zone, np.clip(refined, low, high), refined)
    # Keep the depth's scale: re-centre on the median difference (of a sample on big maps).
    difference = (log_depth - refined)[valid]
    refined += np.median(difference[::max(1, difference.size // 65536)])
    out = np.exp(refined)
    out[~valid] = depth[~valid]
    return out.astype(np.float32)
