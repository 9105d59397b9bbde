"""Soft depth steps placed at the photo's own edge (numpy only), before Fill Behind builds its layer.

A monocular model's depth does not step at an object's edge: it ramps over a few pixels (the
log-depth blurred over about 1 % of the frame, tests/lotus_errors.py), so a tear placed where the
ramp crosses the tear threshold need not be where the object ends, and core.fill leaves such steps
unfilled (fill.SHARP_SHARE). The photo, however, steps sharply there. `snap_to_photo()` reassigns
the pixels of each soft step's ramp to the near or the far side by the side they match in colour,
so that the step becomes sharp at the photo's edge:

- only around the soft steps (`soft_steps`: across a window of `ramp_radius()` pixels the depth
  steps by more than the tear threshold, not a slanted surface, and the steepest pixel pair is not
  sharp), within that radius, and only where the window's depth is blurred: its largest one-pixel
  jump under DEPTH_SHARP of its range (exact maps step sharply even where a curved silhouette seen
  at a grazing angle looks soft to the 5-pixel test: nothing of theirs moves);
- per pixel, its window's near side (inverse depth within NEAR_SHARE of the window's nearest) and
  far side (within NEAR_SHARE of its farthest): their mean colours and the spread around them;
- the colour sides must be distinct (the means further apart than DISTINCT times the spread, and
  than MIN_GAP) and each side one depth (LAYER_SPREAD): a step over flat colour, over a texture as
  busy as the step's contrast, or between three layers stays as it is (soft: unfilled and reported
  by the build, never a layer placed on a guessed edge);
- only the ramp moves (pixels between RAMP_LOW and RAMP_HIGH of the window's range whose inverse
  depth changes there), each to its side, when its colour lies closer to one side than
  MATCH x the gap between them, when the window's ramp is mostly of the two sides' colours (not a
  third surface: EXPLAINED) and holds both colours (the photo's edge lies inside the ramp);
- the photo steps sharply where the placing splits the ramp (`_boundary_sharpness`): across the
  boundary it draws between near and far pixels the photo's colour changes over one or two pixels
  by PHOTO_SHARP of its change over PHOTO_SPAN more pixels either side (the depth's own sharpness
  test, on the photo), at PHOTO_STEP_SHARE of that boundary in the window. Shading on a curved
  surface turns from lit to dark gradually: a colour match splits it somewhere, but there is no
  step there (the GUI check's Suzanne, its shaded side darker than its lit side, moved 282
  pixels without this guard);
- one clean cut per ramp (`_clean_cut`): in a window the placing touched, every ramp pixel goes
  to one side (an antialiased edge pixel, whose colour matches neither, to the side it lies
  closer to) and a pixel of one side with three of its 4-neighbours on the other joins them (a
  ragged colour match's spikes); each side's pixels are continued from that side's own unmoved
  pixels (`_continue_side`: never a window's mean, which steps from them), and a pixel still torn
  from both sides (`torn_both_sides`: from both neighbours of a row or a column, or from a nearer
  neighbour and a farther one) takes a neighbour's depth with which it is not (`_single_tears`).
  Such a pixel has no mesh face at its centre: through the photo's own camera its ray met the
  layer behind, which shows the filled background (severity 1, own camera 53.9 / 43.3 dB on the
  room / table before, 85.5 / 83.7 after, against 90.0 / 79.5 without the placing).

What it gains and costs (benchmarks/bench_fill.py, severity 1): the pixels a move reveals gain at
the orbits and the table's dollies and the photo is still reproduced through its own camera, but
the room's dolly of 10 % loses a little (mostly a row over a near object's top edge, placed right
at the photo's edge, where no build shows the wall the move reveals and the placed one shows the
object a little darker; see README, Fill Behind). Measured and
not kept: the far or the near side's pixels at the window's mean (own camera 51.4 dB in the room,
64.5 on the table);
undoing the snapped steps the layer does not continue behind (most of the gain lost).
"""

from __future__ import annotations

import numpy as np

NEAR_SHARE = 0.2     # a window's near side: inverse depth within this share of its range from the nearest
RAMP_LOW, RAMP_HIGH = 0.12, 0.88   # the ramp: pixels this far into the window's range (0 = far, 1 = near)
DISTINCT = 2.0       # the colour sides' means are this many times their spread apart ...
MIN_GAP = 0.15       # ... and at least this far apart (linear RGB, Euclidean: a fainter edge is no evidence;
                     # bench_fill.py, outdoor: the grey tower before the pale sky, 0.11, snapped half its
                     # ramp and the fill crept along the rest, visible pixels -0.6 dB)
EXPLAINED, EXPLAINED_SHARE = 0.4, 0.75   # this share of a window's ramp lies this close (x the gap) to a side
MATCH = 0.75         # a ramp pixel lies closer than this x the gap to the side it is given
LAYER_SPREAD = 0.1   # each side's inverse depth spreads less than this share of the jump between them
MIN_SIDE = 3         # pixels of each side a window needs
PHOTO_SHARP, PHOTO_SPAN = 0.6, 2   # the photo's step: its change across 1-2 pixels is this share of the
                                   # change across PHOTO_SPAN more pixels either side ...
PHOTO_CONTRAST = 0.4   # ... and this share of the gap between the window's colour sides at least ...
PHOTO_STEP_SHARE = 0.9   # ... at this share of the boundaries the placing draws in a window
DEPTH_SHARP = 0.375  # a window whose largest one-pixel depth jump is this share of its range is sharp
RADIUS_SCALE = 1 / 40   # the window's radius, as a share of the frame's longer side (2 px at least)
RADIUS_PASSES = 32      # _single_tears: at most this many passes
CLEAN_PASSES = 4        # _clean_cut: passes that take a ragged cut's spikes off
TEAR_MARGIN = 0.8       # _single_tears: jumps over this share of the tear threshold may tear


def ramp_radius(shape):
    """Pixels either side of a soft step that its ramp may cover (blurred over ~1 % of the frame)."""
    return max(2, int(round(max(shape) * RADIUS_SCALE)))


_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))
STEP_FACTOR = 3.0    # a ramp is a step: its jump over the window is this many times the slope beyond it
SHARP_SHARE = 0.6    # steps whose one-pixel jump is this share of the jump across the window are left alone


def _at(values, dy, dx):
    """out[y, x] = values[y + dy, x + dx], NaN outside the image."""
    height, width = values.shape
    out = np.full(values.shape, np.nan)
    if abs(dy) >= height or abs(dx) >= width:
        return out
    out[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)] = \
        values[max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
    return out


def soft_steps(inverse, threshold, radius):
    """(H, W) bool: both pixels of the steepest pair of neighbours of every soft step: across the
    window (from radius pixels behind the near pixel to radius pixels beyond the far one) the
    inverse depth falls by more than the tear threshold, STEP_FACTOR times the slope of either
    side beyond (a slanted floor is no step), the pair's own jump is the largest of its row along
    the step, and it is not sharp already (SHARP_SHARE). A model's edge blurred over 1 % of a
    large frame tears no pair of pixels on its own; placed at the photo's edge, it does."""
    grow = 1.0 + max(float(threshold), 0.0)
    out = np.zeros(inverse.shape, bool)
    with np.errstate(invalid="ignore"):
        for dy, dx in _DIRECTIONS:
            for sy, sx in ((dy, dx), (-dy, -dx)):
                jump = inverse - _at(inverse, sy, sx)
                steepest = (jump > 0) & (jump >= _at(jump, -sy, -sx)) & (jump >= _at(jump, sy, sx))
                inner, outer = _at(inverse, -radius * sy, -radius * sx), _at(inverse, (radius + 1) * sy, (radius + 1) * sx)
                near_slope = np.abs(_at(inverse, -2 * radius * sy, -2 * radius * sx) - inner)
                far_slope = np.abs(outer - _at(inverse, (2 * radius + 1) * sy, (2 * radius + 1) * sx))
                across = inner - outer
                slope = np.nan_to_num(np.maximum(near_slope, far_slope), nan=np.inf)
                step = (inner > outer * grow) & (np.nan_to_num(across, nan=0.0) > STEP_FACTOR * slope)
                # Soft: the one-pixel jump is a small share of the step itself, i.e. of the jump
                # across the window less what the two surfaces' own slopes add over it (a steep
                # near surface meeting a sharp step is no ramp).
                soft = steepest & step & (jump < SHARP_SHARE * (across - near_slope - far_slope))
                out |= soft | (_at(soft, -sy, -sx) == 1)
    return out


def _window(values, radius, reduce, fill):
    """Separable square min or max filter of the given radius (out-of-frame pixels: fill); per axis
    by doubling (windows of 1, 2, 4 ... pixels, the last two overlapping): log(radius) passes."""
    out = values
    size = 2 * radius + 1
    for axis in (0, 1):
        moved = np.moveaxis(out, axis, 0)
        length = moved.shape[0]
        table = np.concatenate([np.full((radius,) + moved.shape[1:], fill, moved.dtype), moved,
                                np.full((radius,) + moved.shape[1:], fill, moved.dtype)])
        span = 1
        while 2 * span <= size:     # table[i]: reduce over [i, i + 2 span)
            table = reduce(table[:len(table) - span], table[span:])
            span *= 2
        out = np.moveaxis(reduce(table[:length], table[size - span:size - span + length]), 0, axis)
    return out


def _box_sums(stack, radius):
    """Sums over the (2 r + 1)^2 window of each pixel (clipped at the frame) of (H, W, K) values."""
    height, width = stack.shape[:2]
    padded = np.pad(stack, ((radius + 1, radius), (radius + 1, radius), (0, 0)))
    total = padded.cumsum(0).cumsum(1)
    size = 2 * radius + 1
    return (total[size:size + height, size:size + width] - total[:height, size:size + width]
            - total[size:size + height, :width] + total[:height, :width])


def colours_at(photo, shape):
    """The photo's RGB at the depth map's size (block means when it is a whole multiple, else nearest)."""
    photo = np.asarray(photo, np.float64)
    photo = photo[..., :3] if photo.ndim == 3 else np.repeat(photo[..., None], 3, axis=-1)
    height, width = photo.shape[:2]
    if (height, width) == tuple(shape):
        return photo
    if height % shape[0] == 0 and width % shape[1] == 0:
        fy, fx = height // shape[0], width // shape[1]
        return photo.reshape(shape[0], fy, shape[1], fx, -1).mean(axis=(1, 3))
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * height / shape[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * width / shape[1]).astype(np.int64), width - 1)
    return photo[rows][:, cols]


def snap_to_photo(values, inverse, photo, soft, threshold=None):
    """The map's values with the ramps of the soft steps moved to the photo's edge.

    values: (H, W) the map as stored (snapped pixels take a side's mean of these); inverse: (H, W)
    inverse depth (nearer is larger; the side and ramp tests use it); photo: RGB(A), the map's
    size or a whole multiple (else sampled); soft: (H, W) bool, the pixels of the soft steps
    (`soft_steps`); threshold: the tear threshold (with it, no moved pixel tears from a pixel of
    its own side and none is torn from both sides: `_single_tears`; values are then inverse depth
    or depth). Returns (snapped values, moved: bool (H, W)).
    """
    values = np.asarray(values, np.float64)
    moved = np.zeros(values.shape, bool)
    if not np.any(soft):
        return values.copy(), moved
    radius = ramp_radius(values.shape)
    inverse = np.nan_to_num(np.asarray(inverse, np.float64), nan=0.0, posinf=0.0)
    colours = colours_at(photo, values.shape)
    zone = _window(np.asarray(soft, bool), radius, np.logical_or, False)
    high = _window(inverse, radius, np.maximum, -np.inf)
    low = _window(inverse, radius, np.minimum, np.inf)
    spread = np.maximum(high - low, 1e-12)
    # Each pixel's own place in its window's range: a side is what lies near either end.
    place = (inverse - low) / spread
    near_side, far_side = place >= 1.0 - NEAR_SHARE, place <= NEAR_SHARE
    energy = np.sum(colours ** 2, axis=-1)
    stats = []
    for side in (near_side, far_side):
        weight = side.astype(np.float64)
        sums = _box_sums(np.dstack([weight, weight * values, weight[..., None] * colours, weight * energy,
                                    weight * inverse, weight * inverse ** 2]), radius)
        count = np.maximum(sums[..., 0], 1e-12)
        mean = sums[..., 2:5] / count[..., None]
        variance = np.maximum(sums[..., 5] / count - np.sum(mean ** 2, axis=-1), 0.0)
        level = sums[..., 6] / count
        depth_spread = np.sqrt(np.maximum(sums[..., 7] / count - level ** 2, 0.0))
        stats.append((sums[..., 0], sums[..., 1] / count, mean, np.sqrt(variance), level, depth_spread))
    (near_count, near_value, near_colour, near_spread, near_level, near_depth_spread), \
        (far_count, far_value, far_colour, far_spread, far_level, far_depth_spread) = stats
    gap = np.linalg.norm(near_colour - far_colour, axis=-1)
    # Two layers, each of one colour and one depth: a third one in the window (a tower between a
    # sphere and the sky) spreads a side's depth, and no single edge separates them.
    jump = np.maximum(near_level - far_level, 1e-12)
    distinct = (near_count >= MIN_SIDE) & (far_count >= MIN_SIDE) & (gap >= MIN_GAP) \
        & (gap >= DISTINCT * np.maximum(near_spread, far_spread)) \
        & (np.maximum(near_depth_spread, far_depth_spread) <= LAYER_SPREAD * jump)
    # The ramp: between the ends, and changing (a flat third layer between two others is not a ramp).
    change = np.zeros(values.shape)
    for axis in (0, 1):
        pad = np.pad(inverse, [(1, 1) if a == axis else (0, 0) for a in range(2)], mode="edge")
        change = np.maximum(change, np.abs(np.take(pad, np.arange(2, values.shape[axis] + 2), axis=axis)
                                           - np.take(pad, np.arange(0, values.shape[axis]), axis=axis)))
    # A depth that steps sharply already (its largest one-pixel jump in the window is DEPTH_SHARP
    # of the window's range or more) is where its surface really ends: exact maps (0.42-1.0 at
    # their soft-looking steps, a curved silhouette seen at a grazing angle, bench_fill.py and
    # the GUI check's photo) against 0.19-0.33 for a model's blurred edge. Nothing moves there.
    jumps = np.zeros(values.shape)
    for dy, dx in _DIRECTIONS:
        jump = np.nan_to_num(np.abs(inverse - _at(inverse, dy, dx)))
        jumps = np.maximum(jumps, np.maximum(jump, np.nan_to_num(_at(jump, -dy, -dx))))
    blurred = _window(jumps, radius, np.maximum, 0.0) < DEPTH_SHARP * spread
    ramp = zone & distinct & blurred & (place > RAMP_LOW) & (place < RAMP_HIGH) & (change > 0.05 * spread)
    to_near = np.linalg.norm(colours - near_colour, axis=-1)
    to_far = np.linalg.norm(colours - far_colour, axis=-1)
    matched = np.minimum(to_near, to_far) < MATCH * gap
    # A blurred step between two layers: its ramp shows the two layers' colours (the photo's edge
    # is sharp). Where the window's ramp is mostly of another colour, it is a third surface (a
    # table top between a cup and the wall), not a ramp: nothing there moves.
    explained = ramp & (np.minimum(to_near, to_far) < EXPLAINED * gap)
    counts = _box_sums(np.dstack([ramp, explained]).astype(np.float64), radius)
    ramp &= counts[..., 1] >= EXPLAINED_SHARE * counts[..., 0]
    nearer = ramp & matched & (to_near <= to_far)
    farther = ramp & matched & (to_near > to_far)
    # The photo's edge lies inside the ramp: the window's ramp holds pixels of both colours (next
    # to a sharp step, a slanted near surface is a "ramp" of the near colour only: left alone).
    both = _box_sums(np.dstack([nearer, farther]).astype(np.float64), radius)
    crossed = np.minimum(both[..., 0], both[..., 1]) >= radius
    nearer &= crossed
    farther &= crossed
    # The photo's edge is one sharp colour step: where the placing puts the near side next to the
    # far side, the photo's colour changes there by most of the gap between them, across one or
    # two pixels. Shading on a curved surface turns from lit to dark gradually: no such step, and
    # the boundary a colour match draws across it is no edge (a rounded head's shaded side).
    moved = nearer | farther
    near_all = nearer | (zone & near_side & ~farther)
    far_all = farther | (zone & far_side & ~nearer)
    sharp_pairs, all_pairs = _boundary_sharpness(colours, near_all, far_all, moved, gap)
    counts = _box_sums(np.dstack([all_pairs, sharp_pairs]), radius)
    photo_step = (counts[..., 0] > 0) & (counts[..., 1] >= PHOTO_STEP_SHARE * counts[..., 0])
    nearer &= photo_step
    farther &= photo_step
    # One clean cut per ramp: every ramp pixel of a placed window on one side, each side's
    # pixels continued from that side's own unmoved pixels (never a window's mean, which steps
    # from them: a ramp of such steps tore from both sides, bench_fill.py's own camera at 54 and
    # 43 dB at severity 1), and no pixel left torn from both sides.
    nearer, farther = _clean_cut(nearer, farther, zone & ~near_side & ~far_side & (place > RAMP_LOW)
                                 & (place < RAMP_HIGH), to_near <= to_far, radius)
    snapped = values.copy()
    snapped[nearer], snapped[farther] = near_value[nearer], far_value[farther]
    moved = nearer | farther
    snapped = _continue_side(snapped, nearer, ~moved & near_side, 2 * radius + 1)
    snapped = _continue_side(snapped, farther, ~moved & far_side, 2 * radius + 1)
    if threshold is not None and moved.any():
        snapped, joined = _single_tears(snapped, _window(moved, radius, np.logical_or, False), threshold)
        moved |= joined
    return snapped, moved


def _continue_side(snapped, side, source, passes):
    """The pixels of side given the values of their own side's unmoved pixels (source), spread
    one pixel a pass from where they border it (the mean of the known 4-neighbours): no moved
    pixel steps from its own side, the cut is the only step. Pixels the spread does not reach
    keep the side's mean."""
    known = source.copy()
    fresh = source     # a pass reaches only the pixels next to those the pass before reached
    snapped = snapped.copy()
    for _ in range(passes):
        ys, xs = np.nonzero(side & ~known & _window(fresh, 1, np.logical_or, False))
        if not len(ys):
            break
        total, count = np.zeros(len(ys)), np.zeros(len(ys))
        known_values = known.astype(np.float64)
        for dy, dx in _FOUR:
            there = _gather(known_values, ys + dy, xs + dx) == 1
            total += np.where(there, np.nan_to_num(_gather(snapped, ys + dy, xs + dx)), 0.0)
            count += there
        reached = count > 0
        ys, xs = ys[reached], xs[reached]
        snapped[ys, xs] = total[reached] / count[reached]
        fresh = np.zeros(known.shape, bool)
        fresh[ys, xs] = True
        known |= fresh
    return snapped


def _clean_cut(nearer, farther, between, closer_to_near, radius):
    """(nearer, farther): every ramp pixel of a window the placing touched on one side (no pixel
    left at the ramp's intermediate depth, torn from the near side on one hand and from the far
    side on the other: an antialiased edge pixel, whose colour lies between the sides, goes to the
    side it lies closer to), then the cut made one line: a pixel of one side with three or more
    of its 4-neighbours on the other joins them (a ragged colour match's one-pixel spikes)."""
    touched = between & _window(nearer | farther, radius, np.logical_or, False)
    label = np.where(nearer, 1.0, np.where(farther, 0.0, np.nan))
    label = np.where(touched & np.isnan(label), closer_to_near.astype(np.float64), label)
    decided = ~np.isnan(label)
    for _ in range(CLEAN_PASSES):
        ones = np.zeros(label.shape)
        known = np.zeros(label.shape)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            other = _at(label, dy, dx)
            ones += np.nan_to_num(other)
            known += ~np.isnan(other)
        flip_near = decided & (label == 0) & (ones >= 3)
        flip_far = decided & (label == 1) & (known - ones >= 3)
        if not (flip_near.any() or flip_far.any()):
            break
        label = np.where(flip_near, 1.0, np.where(flip_far, 0.0, label))
    return decided & (label == 1), decided & (label == 0)


_FOUR = ((0, 1), (0, -1), (1, 0), (-1, 0))
_EIGHT = _FOUR + ((1, 1), (1, -1), (-1, 1), (-1, -1))


def _risk(value, around, grow):
    """(H, W) bool: a pixel of inverse depth value, with its 8 neighbours around (_EIGHT order),
    torn from both neighbours of a row or a column, or torn from a nearer 4-neighbour (it is the
    far side of that tear) and from a farther neighbour (it is the near side of another)."""
    with np.errstate(invalid="ignore"):
        torn = [np.nan_to_num(np.maximum(value, other) > grow * np.minimum(value, other)) for other in around]
        nearer = [t & np.nan_to_num(other > value) for t, other in zip(torn, around)]
    opposite = (torn[0] & torn[1]) | (torn[2] & torn[3])
    between = np.any(nearer[:4], axis=0) & np.any([t & ~n for t, n in zip(torn, nearer)], axis=0)
    return opposite | between, np.sum(torn[:4], axis=0)


def torn_both_sides(inverse, threshold, margin=1.0):
    """(H, W) bool: pixels torn from both sides (relative jump over margin x threshold,
    geometry.relative_depth_jump): from both neighbours along a row or a column, or from a nearer
    neighbour on one side and a farther one on another (a ramp pixel left at an intermediate
    depth). Through the photo's own camera no mesh face covers such a pixel's centre: the faces
    around it are torn, and the lip (the near side reaching past its edge toward its farther
    neighbours) does not cover it or pulls its vertex away; the ray meets the layer behind, which
    shows the filled background (bench_fill.py, severity 1, the placed maps: the pixels the own
    camera got wrong)."""
    grow = 1.0 + margin * max(float(threshold), 0.0)
    return _risk(inverse, [_at(inverse, dy, dx) for dy, dx in _EIGHT], grow)[0]


def _single_tears(snapped, zone, threshold, passes=None):
    """(snapped, joined): within zone, each pixel torn from both sides (torn_both_sides) takes the
    depth of the one of its 8 neighbours with which it is not (the one it tears from the fewest
    4-neighbours with, then the nearest): it joins one side of one step, whose lip covers it;
    repeated until none is left (a staircase of such pixels joins one at a time)."""
    joined = np.zeros(snapped.shape, bool)
    grow = 1.0 + TEAR_MARGIN * max(float(threshold), 0.0)
    # A pixel's test depends on its 8 neighbours only: after the first pass only the pixels next
    # to those that changed are looked at again (the same result, without a whole-image pass each).
    active = zone
    for _ in range(passes or RADIUS_PASSES):
        ys, xs = np.nonzero(active & (zone | _window(joined, 1, np.logical_or, False)))
        # The mesh tears on the depth as an image stores it (float32, sampled): a jump this
        # close to the threshold may tear there (a room's pixel torn at 5.1 % from one side).
        around = [_gather(snapped, ys + dy, xs + dx) for dy, dx in _EIGHT]
        double = _risk(snapped[ys, xs], around, grow)[0]
        if not double.any():
            break
        ys, xs, around = ys[double], xs[double], [values[double] for values in around]
        best, best_score = snapped[ys, xs], np.full(len(ys), np.inf)
        for candidate in around:
            risk, count = _risk(candidate, around, grow)
            score = np.where(np.isnan(candidate), np.inf, 10.0 * risk + count - 1e-6 * np.nan_to_num(candidate))
            better = score < best_score
            best, best_score = np.where(better, candidate, best), np.where(better, score, best_score)
        snapped = snapped.copy()
        snapped[ys, xs] = best
        joined[ys, xs] = True
        active = np.zeros(snapped.shape, bool)
        active[ys, xs] = True
        active = _window(active, 1, np.logical_or, False)
    return snapped, joined


def _gather(values, ys, xs):
    """values[ys, xs], NaN outside the image."""
    height, width = values.shape
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    out = np.full(len(ys), np.nan)
    out[inside] = values[ys[inside], xs[inside]]
    return out


def _boundary_sharpness(colours, near_all, far_all, moved, gap):
    """(sharp, all): per pixel, how many boundaries between a near and a far pixel it starts
    (4-neighbours, one of them moved), and at how many of them the photo steps sharply: its
    colour changes across the pair, over one pixel or two (one mixing both colours), by at least
    PHOTO_SHARP of the change across PHOTO_SPAN pixels either side (the depth's own sharpness
    test, fill.SHARP_SHARE, on the photo), and that change is a contrast (MIN_GAP, and
    PHOTO_CONTRAST x the sides' gap): a gradual ramp of shading has no such pixel pair."""
    sharp = np.zeros(near_all.shape)
    total = np.zeros(near_all.shape)
    channels = range(colours.shape[-1])
    for dy, dx in ((0, 1), (1, 0)):
        def colour_at(k):
            return np.stack([_at(colours[..., c], k * dy, k * dx) for c in channels], axis=-1)

        def mask_at(mask, k):
            return _at(mask.astype(np.float64), k * dy, k * dx) == 1

        pair = ((near_all & mask_at(far_all, 1)) | (far_all & mask_at(near_all, 1))) & (moved | mask_at(moved, 1))
        here, there = colours, colour_at(1)
        step = np.fmax(np.linalg.norm(here - there, axis=-1),
                       np.fmax(np.linalg.norm(colour_at(-1) - there, axis=-1),
                               np.linalg.norm(here - colour_at(2), axis=-1)))
        across = np.linalg.norm(colour_at(-PHOTO_SPAN) - colour_at(1 + PHOTO_SPAN), axis=-1)
        across = np.where(np.isnan(across), step, across)     # next to the frame: the step itself
        steps = (step >= PHOTO_SHARP * across) & (step >= np.maximum(MIN_GAP, PHOTO_CONTRAST * gap))
        total += pair
        sharp += pair & np.nan_to_num(steps)
    return sharp, total
