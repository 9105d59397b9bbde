"""Fill Behind: what a camera move can reveal behind every tear of a 2.5D mesh (numpy only).

A 2.5D mesh torn at depth discontinuities opens holes onto the world when the camera moves. The
layer built here lies behind the near side of each tear:

- depth: the far side's surface continued under the near side (`extend_behind`): a wavefront
  grows from the far pixels of every tear into the pixels in front of them, taking the far-side
  values it grew from, never the near side's (no averaging across the discontinuity);
- extent: only a band a camera move can uncover (`band_width`): a lateral move m reveals
  f_px * m * (1/z_near - 1/z_far) pixels behind an edge; with m = move_range * z_near that is
  f_px * move_range * (1 - z_near / z_far), plus a margin;
- colour (`fill_colour`): the band's first pixels take the colour of the background right
  across the tear; deeper, texture continued from the surrounding background by copying it along
  one offset per tile of the band (the offset whose shift of the background ring around the band
  matches the ring best, searched coarse to fine, at two tile sizes: a simple shift-map /
  exemplar inpainting), so
  stripes and tiles carry on across the band instead of a smear; pixels no offset can reach get
  a multi-scale (push-pull) fill.

`fill_behind()` does all three for a depth map and a photo, after placing the depth's soft steps
(a model's blurred edges) at the photo's edges where the photo shows one (`snap_soft_steps`,
core.depth_edges): the mesh must then show that depth too (BehindLayer.depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import depth_edges

DEFAULT_MOVE_RANGE = 0.1      # how far the camera may move, as a fraction of the subject distance
BAND_MARGIN = 1.25            # the band is this much wider than the lateral-move estimate ...
BAND_EXTRA_PX = 2.0           # ... plus this many pixels (edges are not lines; orbits add rotation)
UNREACHED = 1e6               # distance stored where no fill was computed
RAMP_FACTOR = 3.0             # a tear is a step this many times either side's own slope (inverse depth) ...
RAMP_SCALE = 1 / 64           # ... measured over this fraction of the frame's longer side
SHARP_SPAN = 2                # a step is sharp when its one-pixel jump (inverse depth) is ...
SHARP_SHARE = 0.6             # ... at least this share of the jump across 2 * SHARP_SPAN + 1 pixels

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_RING_PX = 3                  # width of the background ring an offset is judged on
_COARSE_STEPS = 10            # candidate offsets per half axis in the coarse search
_SAMPLE_LIMIT = 4000          # ring and hole samples used by the coarse search
_SOURCE_FARTHER = 3.0         # a source may lie this many tear thresholds behind the background
# Tile sizes (x the band) searched; each pixel takes the copy whose tile continues its ring best.
# Large tiles hold a texture's period, small ones follow a background that changes along the edge
# (bench_fill.py, exact maps: 2 alone +3 dB at 3 of 12 moves, with 1.25 at 5; 1 instead of 1.25
# loses the room's orbit 3 to 2.9 dB).
_TILE_FACTORS = (2.0, 1.25)
FAR_MIN = 3                   # see _far_sides_in_bands


@dataclass
class BehindLayer:
    behind: np.ndarray     # (H, W) depth of the background continued behind the near side (= depth elsewhere)
    distance: np.ndarray   # (H, W) pixels from the tear into the near side (UNREACHED where not filled)
    region: np.ndarray     # (H, W) bool: the filled band
    soft: np.ndarray | None = None   # (H, W) bool: near pixels of steps too soft to fill behind
    colour: np.ndarray | None = None   # (H', W', C) the photo with the band inpainted (photo's size)
    depth: np.ndarray | None = None    # (H, W) the depth the layer continues: soft steps placed at the photo's edges
    snapped: np.ndarray | None = None  # (H, W) bool: pixels whose depth moved to the photo's edge


def band_width(depth, behind, focal_px, move_range):
    """Pixels behind a near edge that a camera move of move_range x the near depth can reveal."""
    depth, behind = np.asarray(depth, np.float64), np.asarray(behind, np.float64)
    opening = np.clip(1.0 - depth / np.maximum(behind, 1e-12), 0.0, 1.0)
    return focal_px * move_range * opening * BAND_MARGIN + BAND_EXTRA_PX


def _shifted(values, dy, dx, fill):
    """out[y, x] = values[y + dy, x + dx], `fill` outside the image."""
    height, width = values.shape[:2]
    out = np.full_like(values, fill)
    out[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)] = \
        values[max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
    return out


def extend_behind(depth, threshold, max_distance):
    """(behind depth, distance in pixels, soft) of the far side continued under the near side of
    every sharp tear, up to max_distance pixels (8-connected steps) from the tear; soft: the near
    pixels of steps too soft to continue anything behind (no layer there: see SHARP_SHARE).

    A tear starts where a pixel p lies in front of a neighbour q by more than the tear threshold
    (depth(p) * (1 + t) < depth(q), the jump that tears the mesh) and the jump is a step, not the
    continuation of a slanted surface: in inverse depth, over RAMP_SCALE of the frame, it is more
    than RAMP_FACTOR times the slope of either side next to it, and sharp: its one-pixel jump is
    at least SHARP_SHARE of the jump across 2 * SHARP_SPAN + 1 pixels (exact maps: 0.8-1.1;
    tests/lotus_errors.py's edges at severity 1, blurred over 1 % of the frame: 0.15-0.32) (a floor seen at a grazing angle
    tears row after row, and meets a wall in a crease, but has no background behind it). The near
    pixels of the tears take the depth of their nearest far neighbour (where a tree stands before
    both a tower and the ground beyond it, the tower is what lies right behind its edge: a mean of
    the two is no surface, and sends the colour search to the ground); the wavefront then grows
    across the near surface (untorn edges) into pixels still in front of that background by more
    than the threshold, each new pixel taking the mean of the values it grew from.
    """
    depth = np.asarray(depth, np.float64)
    height, width = depth.shape
    valid_depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.inf)
    inverse = 1.0 / valid_depth
    behind = valid_depth.copy()
    distance = np.full(depth.shape, UNREACHED)
    grow = 1.0 + max(float(threshold), 0.0)
    # Step 1, on the whole image: the near pixels of every step take their nearest far neighbour
    # (bench_fill.py, exact maps, against the mean of the far neighbours: revealed pixels +0.3 to
    # +1.5 dB outdoors and in the room's orbits, the rest within 0.1 dB).
    nearest = np.full_like(depth, np.inf)
    soft = np.zeros(depth.shape, bool)
    reach = max(2, int(round(max(height, width) * RAMP_SCALE)))

    def inverse_at(rows, cols):
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        return np.where(inside, inverse[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)], np.nan)

    for dy, dx in _NEIGHBOURS:
        neighbour = _shifted(valid_depth, dy, dx, 0.0)
        rows, cols = np.nonzero(np.isfinite(neighbour) & (valid_depth * grow < neighbour))
        # Inverse depth over `reach` pixels, at the jumps only: the jump from p outward, the far
        # side's slope beyond it, the near side's slope behind p (blurred edges of real maps still
        # make steps); an unknown slope (off the frame) is not a step.
        here = inverse[rows, cols]
        outward = inverse_at(rows + reach * dy, cols + reach * dx)
        far_slope = np.abs(outward - inverse_at(rows + 2 * reach * dy, cols + 2 * reach * dx))
        near_slope = np.abs(inverse_at(rows - reach * dy, cols - reach * dx) - here)
        slope = np.nan_to_num(np.maximum(far_slope, near_slope), nan=np.inf)
        step = np.nan_to_num(here - outward, nan=0.0) > RAMP_FACTOR * slope
        rows, cols = rows[step], cols[step]
        # Sharp, or too soft to say where the near side ends (a model's blurred edge ramps over
        # several pixels: its tear, where the ramp crosses the threshold, need not be where the
        # object ends, and a layer placed there shows in front of what the photo shows).
        jump = inverse[rows, cols] - inverse[rows + dy, cols + dx]
        across = inverse_at(rows - SHARP_SPAN * dy, cols - SHARP_SPAN * dx) \
            - inverse_at(rows + (SHARP_SPAN + 1) * dy, cols + (SHARP_SPAN + 1) * dx)
        sharp = ~(jump < SHARP_SHARE * across)      # unknown (off the frame): sharp
        soft[rows[~sharp], cols[~sharp]] = True
        rows, cols = rows[sharp], cols[sharp]
        np.minimum.at(nearest, (rows, cols), neighbour[rows, cols])
    soft &= ~np.isfinite(nearest)       # sharp in another direction: a step
    new = np.isfinite(nearest)
    behind[new] = nearest[new]
    distance[new] = 1.0
    flat_behind, flat_distance, flat_depth = behind.reshape(-1), distance.reshape(-1), valid_depth.reshape(-1)
    frontier = np.flatnonzero(new)
    for step in range(2, int(max_distance) + 1):
        if frontier.size == 0:
            break
        fy, fx = np.divmod(frontier, width)
        targets, values = [], []
        for dy, dx in _NEIGHBOURS:
            ny, nx = fy + dy, fx + dx
            inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
            target = ny[inside] * width + nx[inside]
            source = frontier[inside]
            near, far = flat_depth[target], flat_depth[source]
            same_surface = np.maximum(near, far) <= grow * np.minimum(near, far)
            ok = (flat_distance[target] >= UNREACHED) & same_surface & (near * grow < flat_behind[source])
            targets.append(target[ok])
            values.append(flat_behind[source[ok]])
        targets, values = np.concatenate(targets), np.concatenate(values)
        if targets.size == 0:
            break
        frontier, inverse = np.unique(targets, return_inverse=True)
        flat_behind[frontier] = np.bincount(inverse, values) / np.bincount(inverse)
        flat_distance[frontier] = step
    behind = np.where(np.isfinite(behind), behind, depth)
    return behind, distance, soft


def _dilate(mask, radius):
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for step in range(1, radius + 1):
            for sign in (-1, 1):
                grown |= _shifted(out, sign * step if axis == 0 else 0, sign * step if axis == 1 else 0, False)
        out = grown
    return out


def _push_pull(image, known):
    """Fill unknown pixels with a multi-scale average of the known ones (a smooth fallback)."""
    if known.all() or not known.any():
        return image
    height, width = known.shape
    weight = known.astype(np.float64)
    value = image * weight[..., None]
    if height <= 1 and width <= 1:
        return image
    ph, pw = height + height % 2, width + width % 2
    padded_v = np.zeros((ph, pw, image.shape[2]))
    padded_w = np.zeros((ph, pw))
    padded_v[:height, :width], padded_w[:height, :width] = value, weight
    coarse_w = padded_w.reshape(ph // 2, 2, pw // 2, 2).sum(axis=(1, 3))
    coarse_v = padded_v.reshape(ph // 2, 2, pw // 2, 2, -1).sum(axis=(1, 3))
    coarse_known = coarse_w > 0
    coarse = np.where(coarse_known[..., None], coarse_v / np.maximum(coarse_w, 1e-12)[..., None], 0.0)
    coarse = _push_pull(coarse, coarse_known)
    up = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:height, :width]
    return np.where(known[..., None], image, up)


class _OffsetSearch:
    """Per tile of the hole, the offset v whose background copy I(p + v) continues the ring of
    background around the hole best (sum of squared colour differences over the ring, heavily
    penalised where p + v falls on the hole or the near side)."""

    def __init__(self, image, hole, blocked, tile, depth=None, reference=None, threshold=0.0):
        self.image, self.blocked, self.tile = image, blocked, tile
        # A source lies on the background it continues: not nearer than it by more than the tear
        # threshold, nor farther by more than _SOURCE_FARTHER thresholds (a table top hidden by a
        # cup is continued from the table, not from the wall behind it).
        self.depth = None if depth is None else np.asarray(depth, np.float64).reshape(-1)
        self.reference = None if reference is None else np.asarray(reference, np.float64).reshape(-1)
        self.near_factor, self.far_factor = 1.0 / (1.0 + threshold), 1.0 + _SOURCE_FARTHER * threshold
        self.height, self.width = hole.shape
        self.tiles_x = -(-self.width // tile)
        self.hole = np.flatnonzero(hole)
        self.hole_tile = self._tile_of(self.hole)
        self.tile_ids, self.hole_tile = np.unique(self.hole_tile, return_inverse=True)
        ring = np.flatnonzero(_dilate(hole, _RING_PX) & ~blocked)
        # Each ring pixel serves the hole tiles of its 3x3 tile neighbourhood.
        ry, rx = np.divmod(ring, self.width)
        self.lookup = np.full((-(-self.height // tile) + 2) * (self.tiles_x + 2), -1, np.int64)
        ty, tx = np.divmod(self.tile_ids, self.tiles_x)
        self.lookup[(ty + 1) * (self.tiles_x + 2) + tx + 1] = np.arange(len(self.tile_ids))
        pixels, tiles = [], []
        for dty in (-1, 0, 1):
            for dtx in (-1, 0, 1):
                index = self._tile_index(ry, rx, dty, dtx)
                pixels.append(ring[index >= 0])
                tiles.append(index[index >= 0])
        self.ring, self.ring_tile = np.concatenate(pixels), np.concatenate(tiles)

    def _tile_index(self, y, x, dty, dtx):
        """Index in tile_ids of the tile (dty, dtx) away from pixel (y, x)'s tile; -1: no hole there."""
        return self.lookup[(y // self.tile + 1 + dty) * (self.tiles_x + 2) + x // self.tile + 1 + dtx]

    def _tile_of(self, flat):
        y, x = np.divmod(flat, self.width)
        return (y // self.tile) * self.tiles_x + x // self.tile

    def _samples(self, rng, limit):
        """Ring and hole samples (at most `limit` of each) with their coordinates, tiles and colours."""
        def pick(flat, tiles):
            if limit is not None and len(flat) > limit:
                keep = rng.permutation(len(flat))[:limit]
                flat, tiles = flat[keep], tiles[keep]
            y, x = np.divmod(flat, self.width)
            return y, x, tiles
        ring, hole = pick(self.ring, self.ring_tile), pick(self.hole, self.hole_tile)
        colours = self.image.reshape(-1, self.image.shape[-1])[ring[0] * self.width + ring[1]]
        count = len(self.tile_ids)
        return ring, colours, hole, np.maximum(np.bincount(hole[2], None, count), 1)

    def _usable(self, y, x, v):
        ty, tx = y + v[:, 0], x + v[:, 1]
        inside = (ty >= 0) & (ty < self.height) & (tx >= 0) & (tx < self.width)
        target = np.where(inside, ty * self.width + tx, 0)
        usable = inside & ~self.blocked.reshape(-1)[target]
        if self.depth is not None:
            reference = self.reference[y * self.width + x]
            source = self.depth[target]
            usable &= (source >= reference * self.near_factor) & (source <= reference * self.far_factor)
        return target, usable

    def scores(self, offsets_per_tile, samples):
        """Score of offsets_per_tile ((T, 2): one offset per hole tile) for every tile."""
        (ry, rx, ring_tile), ring_colours, (hy, hx, hole_tile), hole_count = samples
        count = len(self.tile_ids)
        target, usable = self._usable(ry, rx, offsets_per_tile[ring_tile])
        error = np.sum((ring_colours - self.image.reshape(-1, self.image.shape[-1])[target]) ** 2, axis=-1)
        ring_error = np.bincount(ring_tile, np.where(usable, error, 0.0), count)
        ring_used = np.bincount(ring_tile, usable, count)
        _, hole_usable = self._usable(hy, hx, offsets_per_tile[hole_tile])
        hole_missing = 1.0 - np.bincount(hole_tile, hole_usable, count) / hole_count
        length = np.hypot(offsets_per_tile[:, 0], offsets_per_tile[:, 1])
        return ring_error / np.maximum(ring_used, 1) + 4.0 * hole_missing + 2.0 * (ring_used == 0) \
            + 1e-4 * length / self.tile

    def best(self, radius, rng):
        count = len(self.tile_ids)
        samples = self._samples(rng, _SAMPLE_LIMIT)
        step = max(1, int(np.ceil(radius / _COARSE_STEPS)))
        axis = np.arange(-(radius // step) * step, radius + 1, step)
        best = np.zeros((count, 2), np.int64)
        best_score = np.full(count, np.inf)
        for dy in axis:
            for dx in axis:
                if dy == 0 and dx == 0:
                    continue
                offsets = np.tile(np.array([[dy, dx]], np.int64), (count, 1))
                score = self.scores(offsets, samples)
                better = score < best_score
                best[better], best_score[better] = offsets[better], score[better]
        samples = self._samples(rng, 4 * _SAMPLE_LIMIT)
        while step > 1:     # refine around each tile's best: steps of a third, down to one pixel
            step = max(1, step // 3)
            base, best_score = best.copy(), np.full(count, np.inf)
            for dy in range(-3 * step, 3 * step + 1, step):
                for dx in range(-3 * step, 3 * step + 1, step):
                    offsets = base + np.array([dy, dx])
                    score = self.scores(offsets, samples)
                    better = score < best_score
                    best[better], best_score[better] = offsets[better], score[better]
        return best

    def fill(self, best):
        """Copy I(p + v) into the hole; per pixel, the own tile's offset or a neighbour tile's."""
        colours = self.image.reshape(-1, self.image.shape[-1]).copy()
        done = np.zeros(len(self.hole), bool)
        hy, hx = np.divmod(self.hole, self.width)
        for dty, dtx in ((0, 0),) + _NEIGHBOURS:
            index = self._tile_index(hy, hx, dty, dtx)
            todo = ~done & (index >= 0)
            if not todo.any():
                continue
            ty, tx = np.divmod(self.hole[todo], self.width)
            target, usable = self._usable(ty, tx, best[index[todo]])
            chosen = np.flatnonzero(todo)[usable]
            colours[self.hole[chosen]] = self.image.reshape(-1, self.image.shape[-1])[target[usable]]
            done[chosen] = True
        return colours.reshape(self.image.shape), self.hole[~done]


def fill_colour(image, hole, blocked, band_px, seed=0, depth=None, reference=None, threshold=0.0):
    """The image with the hole filled from pixels that are not blocked (the near side and the
    hole itself): per tile (of _TILE_FACTORS x the band: per pixel the size whose tile scores
    best), the best matching background offset; the rest by push-pull. With depth and reference (the background depth each pixel continues: the
    behind depth in the hole, the pixel's own depth elsewhere), a source must not be nearer than
    the reference by more than threshold (no copying of other foreground objects), and the
    hole's pixels next to the surface they continue take its colour (`_edge_colours`)."""
    image = np.asarray(image, np.float32)
    squeeze = image.ndim == 2
    if squeeze:
        image = image[..., None]
    if not hole.any():
        return image[..., 0] if squeeze else image
    band_px = max(float(band_px), 2.0)
    results = []
    for factor in _TILE_FACTORS:
        tile = int(max(8, round(factor * band_px)))
        search = _OffsetSearch(image, hole, blocked | hole, tile, depth, reference, threshold)
        rng = np.random.default_rng(seed)
        best = search.best(int(np.ceil(max(3 * band_px, 12))), rng)
        filled, missing = search.fill(best)
        score = np.full(hole.size, np.inf)
        score[search.hole] = search.scores(best, search._samples(rng, None))[search.hole_tile]
        score[missing] = np.inf
        results.append((filled, score))
    filled, score = results[0]
    for other, other_score in results[1:]:
        better = other_score < score
        filled.reshape(-1, filled.shape[-1])[better] = other.reshape(-1, other.shape[-1])[better]
        score = np.minimum(score, other_score)
    missing = np.flatnonzero(hole.reshape(-1) & ~np.isfinite(score))
    if missing.size:
        known = np.ones(hole.shape, bool)
        known.reshape(-1)[missing] = False
        known &= ~(blocked & ~hole)   # the fallback averages background only
        known.reshape(-1)[missing] = False
        smooth = _push_pull(np.where(known[..., None], filled, 0.0), known)
        filled.reshape(-1, filled.shape[-1])[missing] = smooth.reshape(-1, filled.shape[-1])[missing]
    if depth is not None:
        colours, done = _edge_colours(image, hole, depth, reference, threshold)
        filled[done] = colours[done]
    return filled[..., 0] if squeeze else filled


def _edge_colours(image, hole, depth, reference, threshold):
    """The first pixels of the hole, next to the surface they continue: the mean colour of their
    neighbours whose own depth lies within the tear threshold of the pixel's reference (the
    background right across the tear, whether or not it is itself the near side of another step:
    a tower between a tree and the ground continues behind the tree). Returns (colours, mask).
    Exact maps, bench_fill.py, against the offset copy there: revealed pixels +0.3 to +1.5 dB on
    five of six orbits (the room's orbit 6: -0.24), dollies within 0.2 dB; the pixels the photo
    shows +0.3 dB outdoors (orbit 3). Taking two pixels so costs the room's orbits 0.7-0.8 dB."""
    depth = np.asarray(depth, np.float64)
    height, width = hole.shape
    rows, cols = np.nonzero(hole)
    level = np.asarray(reference, np.float64)[rows, cols]
    grow = 1.0 + threshold
    total = np.zeros((len(rows), image.shape[-1]))
    count = np.zeros(len(rows))
    for dy, dx in _NEIGHBOURS:
        ny, nx = np.clip(rows + dy, 0, height - 1), np.clip(cols + dx, 0, width - 1)
        source = depth[ny, nx]
        ok = (ny == rows + dy) & (nx == cols + dx) & (source * grow >= level) & (source <= level * grow)
        total[ok] += image[ny[ok], nx[ok]]
        count += ok
    colours = np.zeros(image.shape, np.float64)
    done = np.zeros(hole.shape, bool)
    found = count > 0
    colours[rows[found], cols[found]] = total[found] / count[found][:, None]
    done[rows[found], cols[found]] = True
    return colours, done


def _resample_nearest(values, shape):
    height, width = values.shape[:2]
    if (height, width) == tuple(shape):
        return values
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * height / shape[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * width / shape[1]).astype(np.int64), width - 1)
    return values[rows][:, cols]


def snap_soft_steps(depth, photo, threshold):
    """(depth, moved): the depth with the ramps of its soft steps (core.depth_edges.soft_steps)
    moved to the photo's edge, in inverse depth (core.depth_edges.snap_to_photo); unchanged where
    the photo has no sharp edge there. Exact maps move nothing (their steps are sharp); on
    model-like maps the mesh and layer built on this depth gain on the pixels a move reveals and
    still reproduce the photo through its own camera (benchmarks/bench_fill.py, README Fill Behind)."""
    depth = np.asarray(depth, np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    soft = depth_edges.soft_steps(inverse, threshold, depth_edges.ramp_radius(depth.shape))
    if not soft.any():
        return depth.copy(), np.zeros(depth.shape, bool)
    snapped, moved = depth_edges.snap_to_photo(inverse, inverse, photo, soft, threshold)
    moved &= valid & (snapped > 0)
    return np.where(moved, 1.0 / np.where(moved, snapped, 1.0), depth), moved


def fill_behind(depth, photo=None, *, threshold, focal_px, move_range=DEFAULT_MOVE_RANGE, seed=0, snap=True):
    """The layer behind every tear of a depth map (metric, planar; (H, W)).

    focal_px: the focal length in pixels of the depth map. The band is computed for move_range
    (fraction of the near side's depth). photo ((H', W', C), any size of the same aspect): its
    colours are continued into the band (BehindLayer.colour, at the photo's size), and with snap
    the depth's soft steps are first placed at the photo's edges (snap_soft_steps): the layer is
    built on that depth (BehindLayer.depth), which the mesh must use too for its tears to agree.
    """
    depth = np.asarray(depth, np.float64)
    if threshold <= 0:
        raise ValueError("Fill Behind needs tearing (a tear threshold above 0)")
    moved = np.zeros(depth.shape, bool)
    if snap and photo is not None:
        depth, moved = snap_soft_steps(depth, photo, threshold)
    reach = int(np.ceil(focal_px * move_range * BAND_MARGIN + BAND_EXTRA_PX)) + _RING_PX + 1
    behind, distance, soft = extend_behind(depth, threshold, reach)
    reached = distance < UNREACHED
    region = reached & (distance <= band_width(depth, behind, focal_px, move_range))
    distance = np.where(region, distance, UNREACHED)
    behind = np.where(region, behind, depth)
    layer = BehindLayer(behind=behind, distance=distance, region=region, soft=soft, depth=depth, snapped=moved)
    if photo is not None:
        photo = np.asarray(photo, np.float64)
        shape = photo.shape[:2]
        scale = shape[1] / depth.shape[1]
        hole = _resample_nearest(region, shape)
        blocked = _resample_nearest(reached, shape)
        band = float(distance[region].max()) * scale if region.any() else 0.0
        layer.colour = fill_colour(photo, hole, blocked, band, seed=seed, depth=_resample_nearest(depth, shape),
                                   reference=_resample_nearest(behind, shape), threshold=threshold)
        shown = _resample_nearest(_far_sides_in_bands(depth, behind, distance, threshold), shape)
        layer.colour[shown] = photo[shown]
    return layer


def _far_sides_in_bands(depth, behind, distance, threshold):
    """Pixels right across a tear from its near side (its far side, which the photo shows) that are
    themselves deep in the band behind another, nearer-by-far step (a tower beside a tree, itself
    far in front of the sky): they keep the photo's colour in the filled image. The torn face from
    the tree's edge to the tower samples the filled image up to that pixel, and what it shows
    there is what any move shows first next to the tree; the sky behind the tower at that pixel
    shows only once a move uncovers FAR_MIN pixels behind the tower's edge (bench_fill.py, exact
    maps, outdoor orbit 3 deg: the pixels the photo shows +0.3 dB, the band's ground colour no
    longer bleeds onto the tower's visible edge)."""
    edge = distance == 1
    grow = 1.0 + threshold
    out = np.zeros(depth.shape, bool)
    for dy, dx in _NEIGHBOURS:
        across = _shifted(depth, dy, dx, np.nan)      # the pixel (dy, dx) from each edge pixel
        continued = edge & (across * grow >= behind) & (across <= behind * grow)
        out |= _shifted(continued, -dy, -dx, False)
    return out & (distance >= FAR_MIN) & (distance < UNREACHED) & (behind > depth * grow * grow)


def depth_to_map_values(depth, kind, near, far):
    """Metric depth -> the map's values: "disparity" (near = 1, affine in 1/depth) or "depth"
    (relative, near = 0); the inverse of core.maps.disparity_to_depth / relative_depth_to_depth."""
    depth = np.asarray(depth, np.float64)
    if kind == "disparity":
        return (1.0 / depth - 1.0 / far) / (1.0 / near - 1.0 / far)
    return (depth - near) / (far - near)
