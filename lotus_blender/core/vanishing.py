"""Focal length from the photo's own straight lines: vanishing points (numpy only).

Straight edges of man-made things (tiles, walls, furniture, buildings) that are parallel in the world
meet in the image at a vanishing point v. With the principal point at the image centre, v (pixels
right and up of the centre) is the image of the direction (v_x, v_y, -f) in camera space (+X right,
+Y up, looking down -Z). Two orthogonal directions give

    v1 . v2 + f^2 = 0,   so   f = sqrt(-v1 . v2),

which is how camera-matching tools such as fSpy find the focal from two pairs of lines the artist
draws. Here the lines come from the image: gradients, a structure tensor that keeps straight edges
(coherent orientation), connected runs of similar orientation fitted as segments (sub-pixel across
the edge), runs on one straight line merged into one long segment (a grout line broken at every tile
corner knows its direction far better as one line, which is what nearly parallel lines of a long lens
need), vanishing points by RANSAC over segment pairs, refined by least squares (each segment
weighted by how well its direction is known; a segment never reaches its own vanishing point, so
lines that cross do not make one), and a parametric bootstrap (each segment turned by its direction
uncertainty, scaled by how much more the point's segments scatter than that) for the spread of each
pair's focal. All pairs that pass are combined by their inverse variance; a pair far outside its
spread from the others means a family is not orthogonal, unless three points agree pairwise (a
Manhattan frame), which then overrules the odd one out.

Orthogonality is an assumption (two line families of a box turned against the room meet at 60
degrees, say); `focal_from_lines` checks each candidate against the predicted normals: a line lies
on its surface, so its 3D direction is perpendicular to the surface normal there, and the normals
where each family's segments lie must agree with the directions the candidate focal implies. A
photo without such lines (a portrait before a blurred background) gives no candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WORKING_SIZE = 512           # longest edge the photo is averaged down to
COHERENCE_MIN = 0.85         # structure-tensor coherence of a straight edge
JOIN_DEG = 12.0              # neighbouring edge pixels whose orientations differ less are one run
MIN_SEGMENT_PX = 6.0         # at working size
STRAIGHT_PX = 0.7            # RMS distance of a run's pixels from its fitted line
MERGE_PX = 1.0               # runs on one line: each middle this close to the other's line (working px) ...
MERGE_DEG = 0.3              # ... and directions this close, both plus what their blur allows
INLIER_DEG = 1.0             # a segment points at a vanishing point within this angle (plus its own blur)
MAX_POINTS = 4
MIN_SUPPORT = 4              # (merged) segments of one vanishing point ...
MIN_PIECES = 5               # ... made of at least this many runs
MIN_SUPPORT_LENGTH = 0.4     # their summed length, in image widths
BOOTSTRAP = 40
NORMAL_AGREE_DEG = 12.0      # median angle off perpendicular between a family's lines and its normals
FOCAL_SPREAD_MAX = 0.05      # relative bootstrap spread of a confident focal


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


@dataclass
class VanishingPoint:
    point: np.ndarray      # homogeneous (x, y, w) in centred full-size pixels, unit length
    members: np.ndarray    # indices into the segments
    support: float         # summed length of the members, pixels

    @property
    def finite(self):
        return abs(self.point[2]) > 1e-9

    def xy(self):
        return self.point[:2] / self.point[2]


@dataclass
class LineFocal:
    """What the lines say: the focal (pixels, None without orthogonal vanishing points), how far
    the bootstrap spreads it (relative), whether it passed every check, and why not."""
    focal_px: float | None
    spread: float
    confident: bool
    reason: str
    points: list = field(default_factory=list)
    segment_count: int = 0


# ---------------------------------------------------------------------------------------------
# Segments from the photo.

def _block_mean(array, factor):
    if factor == 1:
        return array
    rows, cols = array.shape[0] // factor, array.shape[1] // factor
    return array[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor).mean(axis=(1, 3))


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
    grey = _block_mean(np.nan_to_num(grey), factor)
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


# ---------------------------------------------------------------------------------------------
# Vanishing points.

def _lines(segments, scale):
    """Homogeneous lines through the segments (coordinates divided by scale), (a, b) unit."""
    mid = segments.mid / scale
    normal = np.stack([-segments.direction[:, 1], segments.direction[:, 0]], axis=1)
    return np.concatenate([normal, -np.sum(normal * mid, axis=1, keepdims=True)], axis=1)


def _angles_deg(segments, point, scale):
    """Angle between each segment and the direction from its middle to the (homogeneous) point."""
    toward = point[:2][None, :] - point[2] * segments.mid / scale
    cross = np.abs(segments.direction[:, 0] * toward[:, 1] - segments.direction[:, 1] * toward[:, 0])
    return np.degrees(np.arctan2(cross, np.abs(np.sum(segments.direction * toward, axis=1))))


def _pointing(segments, point, scale, tolerance):
    """Segments that point at the (homogeneous) point within `tolerance` degrees and end before it:
    the image of a 3D line never reaches its vanishing point, so lines that cross at a point (a
    tile's edges) do not make it one."""
    aims = _angles_deg(segments, point, scale) < tolerance
    if abs(point[2]) > 1e-12 and segments.reach is not None:
        along = np.abs(np.sum((point[:2] / point[2] * scale - segments.mid) * segments.direction, axis=1))
        aims &= along > segments.reach + 2.0
    return aims


def _precision(segments):
    """Least-squares weight of each segment: the inverse variance of its direction."""
    return 1.0 / np.radians(segments.blur_deg) ** 2


def _fit_point(lines, weights):
    """The homogeneous point closest to the weighted lines (smallest eigenvector)."""
    matrix = (lines * weights[:, None]).T @ lines
    _, vectors = np.linalg.eigh(matrix)
    point = vectors[:, 0]
    return point / np.linalg.norm(point)


def vanishing_points(segments, width, height, *, seed=0, hypotheses=400) -> list:
    """Up to MAX_POINTS vanishing points, strongest first, each with its segments (sequential
    RANSAC over segment pairs, refined by least squares). Points are homogeneous, in pixels from
    the centre (see VanishingPoint)."""
    scale = max(width, height) / 2.0
    rng = np.random.default_rng(seed)
    lines = _lines(segments, scale)
    free = np.ones(len(segments.length), bool)
    tolerance = INLIER_DEG + segments.blur_deg
    found = []
    while len(found) < MAX_POINTS and free.sum() >= MIN_SUPPORT:
        index = np.flatnonzero(free)
        weights = segments.length[index] / segments.length[index].sum()
        pairs = rng.choice(index, size=(hypotheses, 2), p=weights)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if not len(pairs):
            break
        candidates = np.cross(lines[pairs[:, 0]], lines[pairs[:, 1]])
        norms = np.linalg.norm(candidates, axis=1)
        candidates = candidates[norms > 1e-12] / norms[norms > 1e-12, None]
        best, best_score = None, 0.0
        for point in candidates:
            inliers = free & _pointing(segments, point, scale, tolerance)
            score = segments.length[inliers].sum()
            if score > best_score:
                best, best_score = point, score
        if best is None:
            break
        members = free & _pointing(segments, best, scale, tolerance)
        for _ in range(3):
            if members.sum() < 2:
                break
            best = _fit_point(lines[members], _precision(segments)[members])
            members = free & _pointing(segments, best, scale, tolerance)
        if members.sum() < MIN_SUPPORT or len(segments.pieces(np.flatnonzero(members))[1]) < MIN_PIECES \
                or segments.length[members].sum() < MIN_SUPPORT_LENGTH * 2 * scale:
            break
        point = best * np.array([scale, scale, 1.0])
        found.append(VanishingPoint(point / np.linalg.norm(point), np.flatnonzero(members),
                                    float(segments.length[members].sum())))
        free &= ~members
    return found


def _scatter(segments, vp, scale):
    """How much more the point's segments miss it than their direction uncertainty says: the
    square root of the reduced chi-square of their angles to the point, at least 1."""
    members = vp.members
    point = vp.point / np.array([scale, scale, 1.0])
    angles = _angles_deg(Segments(segments.mid[members], segments.direction[members], segments.length[members],
                                  segments.blur_deg[members]), point, scale)
    chi_square = float(np.sum((angles / segments.blur_deg[members]) ** 2)) / max(len(members) - 2, 1)
    return max(1.0, math.sqrt(chi_square))


def _focal_squared(a, b):
    """f^2 = -(a . b) for two finite points (pixels); negative when the pair cannot be orthogonal."""
    return -float(a.xy() @ b.xy()) if a.finite and b.finite else float("nan")


def _normal_angles(point, focal, mid, normals, width, height):
    """Angle (degrees) off perpendicular between the point's 3D direction (at this focal) and the
    normals under its segments' pieces (middles `mid`)."""
    direction = np.array([point[0], point[1], -focal * point[2]])
    direction /= np.linalg.norm(direction)
    rows_n, cols_n = normals.shape[:2]
    cols = np.clip(((mid[:, 0] + width / 2.0) / width * cols_n).astype(int), 0, cols_n - 1)
    rows = np.clip(((height / 2.0 - mid[:, 1]) / height * rows_n).astype(int), 0, rows_n - 1)
    return np.degrees(np.arcsin(np.clip(np.abs(normals[rows, cols] @ direction), 0.0, 1.0)))


def _weighted_median(values, weights):
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _combined(pairs):
    """(focal, relative spread, whether every pair agrees with it) of pairs (focal, spread, ...)."""
    logs = np.log([c[0] for c in pairs])
    spreads = np.array([max(c[1], 0.005) for c in pairs])
    weights = 1.0 / spreads ** 2
    mean = float(np.sum(weights * logs) / np.sum(weights))
    consistent = not np.any(np.abs(logs - mean) > 3.0 * spreads + 0.10)
    return math.exp(mean), float(1.0 / math.sqrt(np.sum(weights))), consistent


def focal_from_lines(photo, normals=None, *, seed=0) -> LineFocal:
    """The focal (pixels of the photo) from orthogonal vanishing points of the photo's lines,
    checked against the normals ((H, W, 3) Blender camera space, any size of the same aspect)
    when given. Confident only with a tight bootstrap spread and agreeing normals."""
    photo = np.asarray(photo)
    height, width = photo.shape[:2]
    segments = line_segments(photo)
    count = len(segments.length)
    if count < 2 * MIN_SUPPORT:
        return LineFocal(None, float("inf"), False, "no straight lines in the photo", [], count)
    points = vanishing_points(segments, width, height, seed=seed)
    finite = [p for p in points if p.finite and np.hypot(*p.xy()) < 50.0 * max(width, height)]
    low, high = 0.2 * max(width, height), 10.0 * max(width, height)     # about 7 to 360 mm
    scale = max(width, height) / 2.0
    lines = _lines(segments, scale)
    rng = np.random.default_rng(seed + 1)
    candidates = []
    for i, a in enumerate(finite):
        for b in finite[i + 1:]:
            squared = _focal_squared(a, b)
            if not (squared > low * low and squared < high * high):
                continue
            focal = math.sqrt(squared)
            # Parametric bootstrap: turn each segment by its own direction uncertainty, scaled up
            # where the point's segments scatter more than that (reduced chi-square above 1), refit
            # both points, recompute the focal. (Resampling a few long merged lines says little.)
            draws = []
            scatter = {id(vp): _scatter(segments, vp, scale) for vp in (a, b)}
            for _ in range(BOOTSTRAP):
                refit = []
                for vp in (a, b):
                    pick = vp.members
                    turn = np.radians(segments.blur_deg[pick]) * scatter[id(vp)] * rng.normal(size=len(pick))
                    cos, sin = np.cos(turn), np.sin(turn)
                    d = segments.direction[pick]
                    jittered = Segments(segments.mid[pick], np.stack([cos * d[:, 0] - sin * d[:, 1],
                                                                      sin * d[:, 0] + cos * d[:, 1]], axis=1),
                                        segments.length[pick], segments.blur_deg[pick])
                    point = _fit_point(_lines(jittered, scale), _precision(jittered)) * np.array([scale, scale, 1.0])
                    refit.append(VanishingPoint(point / np.linalg.norm(point), pick, 0.0))
                draws.append(_focal_squared(*refit))
            draws = np.array(draws)
            if np.mean(draws > 0) < 0.9:        # the pair is often not orthogonal at all
                spread = float("inf")
            else:
                low_draw, high_draw = np.percentile(np.sqrt(np.maximum(draws, 0.0)), [10, 90])
                spread = float(0.5 * (high_draw - low_draw) / (1.2816 * focal))
            agree = True
            if normals is not None:
                worst = max(_weighted_median(_normal_angles(vp.point, focal, segments.pieces(vp.members)[0],
                                                            normals, width, height),
                                             segments.pieces(vp.members)[1])
                            for vp in (a, b))
                agree = worst <= NORMAL_AGREE_DEG
            candidates.append((focal, spread, agree, min(a.support, b.support), (id(a), id(b))))
    if not candidates:
        reason = ("one family of parallel lines only" if len(points) < 2 else
                  "no two vanishing points that can be orthogonal")
        return LineFocal(None, float("inf"), False, reason, points, count)
    passing = [c for c in candidates if c[2] and c[1] <= FOCAL_SPREAD_MAX]
    if not passing:
        focal, spread, agree, _, _ = min(candidates, key=lambda c: c[1])
        reason = ("the lines disagree with the normals" if not agree else
                  f"vanishing points too uncertain ({100 * spread:.0f} %)")
        return LineFocal(focal, spread, False, reason, points, count)
    # Every passing pair measures the same focal: their inverse-variance mean (in log focal), and
    # any pair far outside its own spread from it means a family is not orthogonal after all. Then
    # only three mutually orthogonal points (a Manhattan frame: three pairs that agree) may overrule
    # the odd one out; a lone pair against another lone pair falls back.
    focal, spread, consistent = _combined(passing)
    if not consistent:
        triangles = []
        for i, first in enumerate(passing):
            for j, second in enumerate(passing[i + 1:], i + 1):
                for third in passing[j + 1:]:
                    ends = [first[4], second[4], third[4]]
                    if len({end for pair in ends for end in pair}) == 3 and len(set(ends)) == 3:
                        combined = _combined([first, second, third])
                        if combined[2]:
                            triangles.append((min(first[3], second[3], third[3]), combined))
        if not triangles:
            return LineFocal(focal, spread, False, "vanishing points disagree about the focal", points, count)
        focal, spread, _ = max(triangles, key=lambda t: t[0])[1]
    return LineFocal(focal, spread, True, "", points, count)
