"""What moves in a shot, seen in the photos (numpy only): the stabilizer's mask of moving objects.

The depth of a large object moving in front of the world changes smoothly where the object is
smooth, often by less than the model's own frame-to-frame error, so a test on depth alone lets
most of it through (core.temporal). The photo shows it: a textured object moving carries its
texture along, and the colours at its cells change by far more than the camera's noise. Two
photos of the shot are compared on the stabilizer's grid after taking out what the whole picture
does between them:
- the exposure (a gain and an offset: auto exposure, a fade) and the picture's shift (a pan, a
  truck), found by a coarse search of whole-cell shifts and then Gauss-Newton on the photos;
- the residual of each cell is set against the photos' own scatter (the lower quartile of the
  residuals, the static part's scatter when at least a quarter of the picture is static) and
  against the gradient there (a shift found to a fraction of a cell leaves residuals on edges).
A cell whose residual is far beyond both has changed: something moved there. The mask is grown
by a cell (blurred edges). An object filling most of the picture is its main motion: the cells
the first motion leaves are searched for a second, and the world's of the two is the one the
outline between them does not follow (the object in front hides and shows the world as it
moves), checked against the depth test (``changed_cells``).

Where the photo says nothing it says nothing: a flat colour moving over a flat colour, a picture
too dark or too plain (a fade through black) give no moving cells, and the stabilizer keeps to
its depth test there; when most of the picture changed (a hard cut, a flash), the photos are not
of one scene and there is no mask either.
"""

from __future__ import annotations

import numpy as np

from . import affine_fit, maps

SEARCH = 4              # whole-cell shifts searched each way between two photos
REFINE_STEPS = 4        # Gauss-Newton steps of the sub-cell shift
QUIET = 0.1             # the photos' scatter: this quantile of the cells' residuals
CHANGE_SPREAD = 5.0     # a residual beyond this many times the photos' scatter ...
EDGE_SHARE = 0.3        # ... plus this many cells' worth of the gradient: moved
GROW = 1                # the moving cells grown by this many cells
MIN_CONTRAST = 0.03     # photos whose 5-95 % spread of brightness is below this say nothing
MIN_NOISE = 2e-3        # scatter floor (quantised 8-bit photos: 1/255 is 4e-3)
MAX_MOVING = 0.85       # more of the picture changed than this: not one scene, no mask
REGION_RADIUS = 2       # cells: the window the two regions are voted in
OUTLINE_RATIO = 0.85    # the regions' outline misses one motion's cells this much less often
HINT_MARGIN = 0.1       # the two motions' shares of depth-static cells must differ so
MIN_LAYER = 0.1         # a second motion must explain at least this fraction of the cells


def load_picture(path: str) -> np.ndarray | None:
    """A prepared input picture (the worker's .npy of display values); None if it cannot be read
    (the stabilizer then works from the depth alone). Read whole, not memory-mapped: the job file
    is removed right after (Windows keeps a mapped file open)."""
    try:
        picture = np.load(path)
    except (OSError, ValueError):
        return None
    return picture if picture.ndim in (2, 3) and picture.size else None


def photo_grid(photo: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW or HxWxC display values averaged onto a (rows, columns) grid: (rows, columns, 3)."""
    photo = np.asarray(photo, dtype=np.float32)
    if photo.ndim == 2:
        photo = photo[..., None]
    channels = [photo[..., min(c, photo.shape[2] - 1)] for c in range(3)]
    return np.stack([affine_fit.area_resample(np.nan_to_num(c), shape) for c in channels], axis=-1)


def _brightness(grid: np.ndarray) -> np.ndarray:
    return grid.mean(axis=-1)


def _shifted(values: np.ndarray, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    if values.ndim == 2:
        return affine_fit.sample(values, dy, dx)
    moved = [affine_fit.sample(values[..., c], dy, dx) for c in range(values.shape[-1])]
    return np.stack([m[0] for m in moved], axis=-1), moved[0][1]


def _gain_fit(current: np.ndarray, previous: np.ndarray, keep: np.ndarray):
    """Robust gain and offset with current ~ gain * previous + offset over keep (2D arrays)."""
    a, b = previous[keep], current[keep]
    gain, offset = 1.0, float(np.median(b - a))
    for _ in range(4):
        residual = b - (gain * a + offset)
        sigma = max(1.4826 * float(np.median(np.abs(residual - np.median(residual)))), MIN_NOISE)
        ratio = residual / (affine_fit.TUKEY_C * sigma)
        weights = affine_fit.tukey_weights(ratio)
        total = weights.sum()
        if total < 16:
            break
        mean_a, mean_b = (weights * a).sum() / total, (weights * b).sum() / total
        variance = (weights * (a - mean_a) ** 2).sum()
        if variance <= 1e-12:
            break
        gain = float((weights * (a - mean_a) * (b - mean_b)).sum() / variance)
        offset = float(mean_b - gain * mean_a)
    return gain, offset


def _search(current: np.ndarray, previous: np.ndarray, use: np.ndarray) -> tuple[int, int]:
    """The whole-cell shift (dy, dx) under which most of the ``use`` cells match best."""
    rows, cols = current.shape
    margin = SEARCH
    if rows <= 2 * margin + 4 or cols <= 2 * margin + 4:
        return 0, 0
    inner = (slice(margin, rows - margin), slice(margin, cols - margin))
    use = use[inner]
    if use.sum() < 16:
        return 0, 0
    centre = current[inner][use]
    centre = centre - np.median(centre)
    best, best_score = (0, 0), np.inf
    for dy in range(-SEARCH, SEARCH + 1):
        for dx in range(-SEARCH, SEARCH + 1):
            moved = previous[margin + dy:rows - margin + dy, margin + dx:cols - margin + dx][use]
            residual = np.abs(centre - (moved - np.median(moved)))
            # A low quantile: another moving part may cover much of the cells.
            score = float(np.partition(residual, residual.size // 3)[residual.size // 3])
            if score < best_score - 1e-9 or (abs(score - best_score) <= 1e-9 and
                                             dy * dy + dx * dx < best[0] ** 2 + best[1] ** 2):
                best, best_score = (dy, dx), score
    return best


def picture_motion(current: np.ndarray, previous: np.ndarray, use: np.ndarray | None = None
                   ) -> tuple[float, float, float, float]:
    """(dy, dx, gain, offset): current(p) ~ gain * previous(p + (dy, dx)) + offset on most of the
    ``use`` cells (brightness grids), robust to part of the picture moving on its own."""
    use = np.ones(current.shape, bool) if use is None else use
    dy, dx = (float(v) for v in _search(current, previous, use))
    for _ in range(REFINE_STEPS):
        moved, inside = _shifted(previous, dy, dx)
        inside = inside & use
        gain, offset = _gain_fit(current, moved, inside)
        grad_y, grad_x = np.gradient(moved)
        residual = current - (gain * moved + offset)
        sigma = max(1.4826 * float(np.median(np.abs(residual[inside]))), MIN_NOISE)
        ratio = residual / (affine_fit.TUKEY_C * sigma)
        weights = np.where(inside, affine_fit.tukey_weights(ratio), 0.0).ravel()
        design = np.stack([gain * grad_y.ravel(), gain * grad_x.ravel()], 1)
        normal = design.T @ (design * weights[:, None])
        if weights.sum() < 16 or np.linalg.cond(normal) > 1e10:
            break
        step = np.linalg.solve(normal, design.T @ (weights * residual.ravel()))
        step = np.clip(step, -1.0, 1.0)
        dy, dx = dy + float(step[0]), dx + float(step[1])
        if abs(step[0]) < 0.02 and abs(step[1]) < 0.02:
            break
    moved, inside = _shifted(previous, dy, dx)
    gain, offset = _gain_fit(current, moved, inside & use)
    return dy, dx, gain, offset


def _explained(current: np.ndarray, previous: np.ndarray, motion, scatter=None):
    """Cells that match under one motion of the picture, and the photos' scatter."""
    dy, dx, gain, offset = motion
    moved, inside = _shifted(previous, dy, dx)
    residual = np.abs(current - (gain * moved + offset)).mean(axis=-1)
    gradient = np.zeros(residual.shape)
    for c in range(current.shape[-1]):
        grad_y, grad_x = np.gradient(gain * moved[..., c])
        gradient = np.maximum(gradient, np.hypot(grad_y, grad_x))
    known = inside & np.isfinite(residual)
    if scatter is None:
        # The quietest tenth of the cells: the photos' own noise when a tenth of the picture is
        # static, however much of it moves.
        scatter = max(float(np.quantile(residual[known], QUIET)), MIN_NOISE)
    return known & (residual <= CHANGE_SPREAD * scatter + EDGE_SHARE * gradient), known, scatter


def _inverse(motion_) -> tuple:
    """The motion taking the later photo back onto the earlier one (approximately)."""
    dy, dx, gain, offset = motion_
    return -dy, -dx, 1.0 / gain, -offset / gain


def _two_layers(current, previous, bright_now, bright_then, first, explained, known, scatter):
    """A second motion of the picture (dy, dx, gain, offset) and the cells only it and only the
    first explain, or None when the cells the first leaves are not moving as one."""
    rest = known & ~explained
    if rest.sum() < MIN_LAYER * known.sum():
        return None
    second = picture_motion(bright_now, bright_then, use=rest)
    if not 0.2 < second[2] < 5.0 or np.hypot(second[0] - first[0], second[1] - first[1]) < 0.5:
        return None
    other, _, _ = _explained(current, previous, second, scatter)
    only_first, only_second = explained & ~other, other & ~explained
    if only_second.sum() < MIN_LAYER * known.sum():
        return None
    return second, only_first, only_second


def _box_count(mask: np.ndarray, radius: int) -> np.ndarray:
    """How many cells of mask lie in the (2 radius + 1)^2 window around each cell."""
    padded = np.pad(mask.astype(np.int32), radius)
    total = np.cumsum(np.cumsum(np.pad(padded, ((1, 0), (1, 0))), 0), 1)
    size = 2 * radius + 1
    return total[size:, size:] - total[:-size, size:] - total[size:, :-size] + total[:-size, :-size]


def _regions(only_first: np.ndarray, only_second: np.ndarray) -> np.ndarray:
    """1 / 2 where the cells around mostly follow the first / second motion, 0 where none does:
    the two regions with their plain cells filled in and stray cells voted away."""
    first, second = _box_count(only_first, REGION_RADIUS), _box_count(only_second, REGION_RADIUS)
    return np.where(first > second, 1, np.where(second > first, 2, 0))


def _labels_missed(labels_now: np.ndarray, labels_then: np.ndarray, dy: float, dx: float) -> int:
    """How many labelled cells now have another label than the earlier cell ``(dy, dx)`` away."""
    rows, cols = labels_now.shape
    y = np.rint(np.arange(rows)[:, None] + dy).astype(int)
    x = np.rint(np.arange(cols)[None, :] + dx).astype(int)
    inside = (y >= 0) & (y < rows) & (x >= 0) & (x < cols)
    then = labels_then[np.clip(y, 0, rows - 1), np.clip(x, 0, cols - 1)]
    both = inside & (labels_now > 0) & (then > 0)
    return int((labels_now != then)[both].sum())


def changed_cells(current: np.ndarray, previous: np.ndarray, static_hint: np.ndarray | None = None
                  ) -> np.ndarray | None:
    """Grid cells (bool) where something moved between two photo grids (rows, columns, 3); None
    when the photos say nothing (too dark or plain) or are not of one scene.

    The picture may hold two motions, the world's (the camera's) and a large object's, which may
    cover most of it: the second is searched among the cells the first does not explain. Which
    is the world's? The object is in front: the outline between the two regions moves with it
    (it hides and shows the world), so the regions' map of the earlier photo, moved by the
    object's motion, falls onto the later one's, and moved by the world's it does not. Where that
    does not tell them apart, the depth test (``static_hint``, the cells depth alone calls
    static) may: the world's region is the one it more often calls static. Else: no mask."""
    bright_now, bright_then = _brightness(current), _brightness(previous)
    if min(affine_fit.spread(bright_now), affine_fit.spread(bright_then)) < MIN_CONTRAST:
        return None
    first = picture_motion(bright_now, bright_then)
    if not 0.2 < first[2] < 5.0:
        return None
    explained, known, scatter = _explained(current, previous, first)
    if known.sum() < 16:
        return None
    world = explained
    layers = _two_layers(current, previous, bright_now, bright_then, first, explained, known,
                         scatter)
    if layers is not None:
        second, only_first, only_second = layers
        choice = _world_layer(current, previous, first, second, only_first, only_second,
                              scatter, static_hint)
        if choice is None:
            return None  # two motions and nothing to tell which is the world's
        if choice == 1:
            world = known & ~only_first
        else:
            world = known & ~only_second
    moving = known & ~world
    if moving.mean() > MAX_MOVING:
        return None
    return maps.grow(moving, GROW)


def _world_layer(current, previous, first, second, only_first, only_second, scatter, static_hint):
    """0 or 1: which of two motions of the picture is the world's; None if nothing tells or the
    photos and the depth disagree."""
    labels_now = _regions(only_first, only_second)
    back_first, _, _ = _explained(previous, current, _inverse(first), scatter)
    back_second, _, _ = _explained(previous, current, _inverse(second), scatter)
    labels_then = _regions(back_first & ~back_second, back_second & ~back_first)
    missed = [_labels_missed(labels_now, labels_then, m[0], m[1]) for m in (first, second)]
    outline = None
    if min(missed) < OUTLINE_RATIO * max(missed):
        # The outline follows the object: the other motion is the world's.
        outline = int(missed[0] < missed[1])
    hinted = None
    if static_hint is not None:
        hint = np.asarray(static_hint, bool)
        shares = [hint[cells].mean() if cells.any() else 0.0 for cells in (only_first, only_second)]
        if abs(shares[0] - shares[1]) >= HINT_MARGIN:
            hinted = int(shares[1] > shares[0])
    if outline is not None and hinted is not None and outline != hinted:
        return None  # the photos and the depth disagree
    return outline if outline is not None else hinted


def moving_cells(grids: list, static_hint: np.ndarray | None = None) -> np.ndarray | None:
    """Cells where something moved over a run of photo grids (in frame order): each pair of
    consecutive photos compared (small motions); None where the photos say nothing."""
    moving = None
    for before, after in zip(grids[:-1], grids[1:]):
        changed = changed_cells(after, before, static_hint)
        if changed is not None:
            moving = changed if moving is None else moving | changed
    return moving
