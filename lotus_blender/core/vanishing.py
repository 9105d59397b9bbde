"""Focal length from the photo's own straight lines: vanishing points (numpy only).

Straight edges of man-made things (tiles, walls, furniture, buildings) that are parallel in the world
meet in the image at a vanishing point v. With the principal point at the image centre, v (pixels
right and up of the centre) is the image of the direction (v_x, v_y, -f) in camera space (+X right,
+Y up, looking down -Z). Two orthogonal directions give

    v1 . v2 + f^2 = 0,   so   f = sqrt(-v1 . v2),

which is how camera-matching tools such as fSpy find the focal from two pairs of lines the artist
draws. Here the lines come from the image: straight segments of its edges (core.photo_lines, runs on
one straight line merged into one long segment), vanishing points by RANSAC over segment pairs,
refined by least squares (each segment weighted by how well its direction is known; a segment never
reaches its own vanishing point, so lines that cross do not make one), and a parametric bootstrap
(each segment turned by its direction uncertainty, scaled by how much more the point's segments
scatter than that) for the spread of each pair's focal. All pairs that pass are combined by their
inverse variance; a pair far outside its spread from the others means a family is not orthogonal,
unless three points agree pairwise (a Manhattan frame), which then overrules the odd one out.

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

from .photo_lines import Segments, line_segments

INLIER_DEG = 1.0             # a segment points at a vanishing point within this angle (plus its own blur)
MAX_POINTS = 4
MIN_SUPPORT = 4              # (merged) segments of one vanishing point ...
MIN_PIECES = 5               # ... made of at least this many runs
MIN_SUPPORT_LENGTH = 0.4     # their summed length, in image widths
BOOTSTRAP = 40
NORMAL_AGREE_DEG = 12.0      # median angle off perpendicular between a family's lines and its normals
FOCAL_SPREAD_MAX = 0.05      # relative bootstrap spread of a confident focal


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
