"""core.fill: the background behind every tear (depth continued from the far side, a band a move
can reveal, texture continued from the surrounding background)."""

import numpy as np
import pytest

from lotus_blender.core import fill


def _stage(width=96, height=64, period=8):
    """A slanted wall of vertical stripes (far), a nearer floor strip at the bottom, and a box in
    front of both; returns (depth, photo, box mask, stripe truth of the wall)."""
    y, x = np.mgrid[0:height, 0:width]
    depth = 6.0 + 0.01 * x                      # the wall recedes to the right
    stripes = (x // (period // 2)) % 2
    photo = np.stack([0.2 + 0.6 * stripes, 0.3 + 0.2 * stripes, np.full(x.shape, 0.4)], axis=-1)
    truth = photo.copy()
    box = (abs(x - width / 2) < width / 6) & (y > height / 5) & (y < 0.8 * height)
    depth = np.where(box, 3.0, depth)
    photo[box] = (0.9, 0.1, 0.1)
    return depth, photo, box, truth


def test_behind_continues_the_far_side_without_averaging():
    depth = np.full((20, 30), 8.0)
    depth[:, 15:] = 4.0                       # right half a nearer wall
    depth[5:15, 8:22] = 2.0                   # an object across both
    behind, distance, _soft = fill.extend_behind(depth, 0.05, 50)
    object_ = depth == 2.0
    assert (distance[object_] < fill.UNREACHED).all()
    # Next to each side's edge the object is backed by that side's surface, never a blend of both.
    assert behind[10, 8] == pytest.approx(8.0) and behind[10, 21] == pytest.approx(4.0)
    assert behind[5, 10] == pytest.approx(8.0) and behind[14, 19] == pytest.approx(4.0)
    assert distance[10, 8] == 1 and distance[10, 10] == 3
    # Where both lie next to the edge (the object's top edge over the walls' meeting), the
    # nearer one is what lies right behind it: no mean of the two (5.3), which is no surface.
    assert behind[5, 15] == pytest.approx(4.0) and behind[5, 12] == pytest.approx(8.0)
    # Pixels that are not in front of anything keep their depth; the nearer right wall is itself
    # backed by the far one along its edge.
    far = (depth == 8.0)
    assert np.array_equal(behind[far], depth[far])
    assert behind[2, 15] == pytest.approx(8.0) and distance[2, 25] == 11
    # A gentle slope is not a tear.
    slope = 5.0 + 0.01 * np.arange(40)[None, :].repeat(10, axis=0)
    assert (fill.extend_behind(slope, 0.05, 10)[1] == fill.UNREACHED).all()


def test_band_follows_the_depth_jump_and_the_move_range():
    depth, photo, box, _truth = _stage()
    focal = 100.0
    small = fill.fill_behind(depth, None, threshold=0.05, focal_px=focal, move_range=0.05)
    large = fill.fill_behind(depth, None, threshold=0.05, focal_px=focal, move_range=0.15)
    assert small.colour is None
    assert small.region.sum() < large.region.sum() < box.sum()
    assert not (small.region & ~box).any()
    # The band is as wide as a move of move_range x the near depth reveals: f * m * (1 - z/zb).
    expected = fill.band_width(3.0, 6.3, focal, 0.15)
    row = large.distance[32][large.region[32]]
    assert row.max() == pytest.approx(np.floor(expected), abs=1.0)
    with pytest.raises(ValueError):
        fill.fill_behind(depth, None, threshold=0.0, focal_px=focal)


def test_colour_continues_the_texture_not_a_smear():
    depth, photo, box, truth = _stage()
    layer = fill.fill_behind(depth, photo, threshold=0.05, focal_px=100.0, move_range=0.15)
    region = layer.region
    assert region.sum() > 200
    error = np.abs(layer.colour - truth)[region].mean()
    # The multi-scale average alone (what a smear gives) is far off the stripes.
    smear = fill._push_pull(np.where(box[..., None], 0.0, photo), ~box)
    smear_error = np.abs(smear - truth)[region].mean()
    assert error < 0.02 < 0.1 < smear_error
    # Outside the band the photo is untouched, and no foreground colour is copied in.
    assert np.allclose(layer.colour[~region], photo[~region], atol=1e-6)
    assert not np.any(np.all(np.isclose(layer.colour[region], (0.9, 0.1, 0.1)), axis=-1))


def test_photo_of_another_size_and_map_values_round_trip():
    depth, photo, _box, _truth = _stage()
    big = photo.repeat(2, axis=0).repeat(2, axis=1)
    layer = fill.fill_behind(depth, big, threshold=0.05, focal_px=100.0, move_range=0.1)
    assert layer.colour.shape == big.shape
    for kind in ("disparity", "depth"):
        values = fill.depth_to_map_values(np.array([2.0, 5.0, 10.0]), kind, 2.0, 10.0)
        assert values[0] == pytest.approx(1.0 if kind == "disparity" else 0.0)
        assert values[-1] == pytest.approx(0.0 if kind == "disparity" else 1.0)


def test_slanted_surfaces_and_creases_are_not_filled():
    """A floor seen at a grazing angle tears row after row and meets a wall in a crease: neither
    has a background behind it. A box standing on that floor does."""
    height, width = 96, 128
    focal, camera_height = 100.0, 1.5
    rows = np.arange(height)[:, None] + 0.5 - height / 2
    with np.errstate(divide='ignore'):
        floor = np.where(rows > 0, focal * camera_height / rows, np.inf)   # planar depth of a floor
    depth = np.minimum(np.broadcast_to(floor, (height, width)), 40.0)     # and a wall at 40 m
    behind, distance, _soft = fill.extend_behind(depth, 0.05, 30)
    assert (distance == fill.UNREACHED).all()
    boxed = depth.copy()
    boxed[40:60, 50:70] = 4.0
    _behind, distance, _soft = fill.extend_behind(boxed, 0.05, 30)
    assert (distance[40:60, 50:70] < fill.UNREACHED).mean() > 0.5


def test_first_pixels_behind_an_edge_continue_the_surface_right_across_it():
    """A tree before a narrow tower before the ground: behind the tree's edge lies the tower (the
    near side of a step itself), and the band's first pixels there take the tower's colour."""
    height, width = 40, 60
    depth = np.full((height, width), 30.0)                       # the ground
    depth[:, 20:24] = 20.0                                       # a tower, 4 pixels wide
    depth[5:35, 5:20] = 9.0                                      # a tree before both
    photo = np.zeros((height, width, 3))
    photo[...] = (0.3, 0.36, 0.22)
    photo[:, 20:24] = (0.55, 0.58, 0.65)
    photo[5:35, 5:20] = (0.2, 0.45, 0.15)
    layer = fill.fill_behind(depth, photo, threshold=0.05, focal_px=100.0, move_range=0.1)
    assert layer.behind[20, 19] == pytest.approx(20.0)          # the tower, not a mean with the ground
    assert np.allclose(layer.colour[10:30, 19], (0.55, 0.58, 0.65))
    assert layer.region[10:30, 19].all()


def test_soft_edges_get_no_layer_behind():
    """A model's blurred edge (tests/lotus_errors.py: log-depth blurred over 1 % of the frame at
    severity 1) gives no confident place for the layer: none there, and the layer says so."""
    from tests.lotus_errors import gaussian_blur
    depth, _photo, box, _truth = _stage(width=192, height=128)
    sharp = fill.fill_behind(depth, None, threshold=0.05, focal_px=150.0, move_range=0.1)
    assert sharp.region.sum() > 200 and not sharp.soft.any()
    blurred = np.exp(gaussian_blur(np.log(depth), 0.01 * 192))
    soft = fill.fill_behind(blurred, None, threshold=0.05, focal_px=150.0, move_range=0.1)
    assert not soft.region.any()
    assert soft.soft.sum() > 20 and not (soft.soft & ~_dilate_box(box)).any()


def _dilate_box(box, radius=6):
    out = box.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(np.roll(box, dy, 0), dx, 1)
    return out


def _corners(box, radius):
    """Pixels within radius (square) of the box's four corners."""
    rows, cols = np.nonzero(box)
    y, x = np.mgrid[0:box.shape[0], 0:box.shape[1]]
    out = np.zeros(box.shape, bool)
    for cy in (rows.min(), rows.max()):
        for cx in (cols.min(), cols.max()):
            out |= (abs(y - cy) <= radius) & (abs(x - cx) <= radius)
    return out


def _blurred_box(width=192, height=128):
    """The stage's box before its wall, the depth blurred like a model's edge (tests/lotus_errors.py
    at severity 1: log-depth blurred over 1 % of the frame); photos: box and wall in two colours,
    and one flat colour."""
    from tests.lotus_errors import gaussian_blur
    depth, _photo, box, _truth = _stage(width=width, height=height)
    blurred = np.exp(gaussian_blur(np.log(depth), 0.01 * width))
    two = np.where(box[..., None], (0.8, 0.25, 0.1), (0.15, 0.3, 0.55))
    return depth, blurred, box, two, np.full(two.shape, 0.4)


def test_soft_step_over_a_photo_edge_is_snapped_to_it():
    """Over a two-colour photo the blurred step becomes sharp where the photo's colour changes: the
    box's pixels at the box's depth, the wall's at the wall's, and the layer is filled behind it."""
    depth, blurred, box, two, _flat = _blurred_box()
    snapped, moved = fill.snap_soft_steps(blurred, two, 0.05)
    assert moved.sum() > 100 and not (moved & ~_dilate_box(box, 8)).any()
    inside, outside = box & moved, ~box & moved
    assert inside.any() and outside.any()
    # Each moved pixel lies on its own side now (within the error of the blurred plateaus).
    assert np.all(snapped[inside] < 3.3) and np.all(snapped[outside] > 5.4)
    # Nearer the truth than the ramp was, but at the box's corners (8 pixels of about 1,400: the
    # wall's side continued there from its pixels at the ramp's far end, not quite at the wall).
    closer = np.abs(snapped - depth) < np.abs(blurred - depth) + 1e-9
    assert (moved & ~closer).sum() <= 0.01 * moved.sum() and not (moved & ~closer & ~_corners(box, 3)).any()
    # Along the box's middle row, the depth now steps where the photo does, in one pixel.
    row = snapped[64]
    left = int(np.flatnonzero(box[64])[0])
    assert row[left] < 3.3 and row[left - 1] > 5.4
    # The placing tears at the photo's edge: within one side, far fewer tears than the ramp had
    # (its rows tear where it crosses the threshold; left: the corners, where nothing moved).
    def torn_within_sides(values):
        torn = np.abs(np.diff(values, axis=1)) / np.minimum(values[:, 1:], values[:, :-1]) > 0.05
        return int((torn & (box[:, 1:] == box[:, :-1])).sum())
    assert torn_within_sides(snapped) < 0.2 * torn_within_sides(blurred)
    layer = fill.fill_behind(snapped, two, threshold=0.05, focal_px=150.0, move_range=0.1)
    # Behind the box's edge only (and the far side's steps at its corners: 40 pixels of 2,700).
    assert layer.region.sum() > 200 and not (layer.region & ~box & ~_corners(box, 3)).any()
    assert layer.soft.sum() < 0.1 * fill.fill_behind(blurred, None, threshold=0.05, focal_px=150.0).soft.sum()
    # The layer continues the wall's colour behind the box's edge.
    assert np.allclose(layer.colour[64, left + 1], (0.15, 0.3, 0.55), atol=0.05)


def test_soft_step_over_flat_colour_stays_soft():
    """No edge in the photo: nothing says where the box ends, so nothing moves."""
    _depth, blurred, box, _two, flat = _blurred_box()
    snapped, moved = fill.snap_soft_steps(blurred, flat, 0.05)
    assert not moved.any() and np.array_equal(snapped, blurred)
    # Nor where the two sides' colours are no more distinct than each side's own texture.
    noise = np.random.default_rng(0).uniform(0.0, 1.0, flat.shape)
    assert not fill.snap_soft_steps(blurred, noise, 0.05)[1].any()


def test_snapping_tiny_maps():
    """Maps smaller than the ramp's window (a 4x6 photo's depth): nothing breaks, nothing moves
    that is not a ramp."""
    depth = np.full((4, 6), 5.0)
    depth[1:3, 2:4] = 2.0
    photo = np.zeros((4, 6, 3))
    photo[1:3, 2:4] = 1.0
    snapped, moved = fill.snap_soft_steps(depth, photo, 0.05)
    assert not moved.any() and np.array_equal(snapped, depth)
    for shape in ((1, 1), (1, 5), (3, 2)):
        assert not fill.snap_soft_steps(np.full(shape, 3.0), np.zeros(shape + (3,)), 0.05)[1].any()


def test_soft_step_under_shading_stays_soft(monkeypatch):
    """A curved surface's shading turns gradually from one colour to the other (here the two-colour
    photo blurred over a few pixels): a colour match would split the depth's ramp somewhere in it,
    but the photo has no sharp step there, so nothing moves (without the photo's sharpness test,
    most of the ramp would)."""
    from lotus_blender.core import depth_edges
    from tests.lotus_errors import gaussian_blur
    _depth, blurred, _box, two, _flat = _blurred_box()
    shaded = gaussian_blur(two, 2.0)
    assert not fill.snap_soft_steps(blurred, shaded, 0.05)[1].any()
    monkeypatch.setattr(depth_edges, "PHOTO_STEP_SHARE", 0.0)
    assert fill.snap_soft_steps(blurred, shaded, 0.05)[1].sum() > 500


def test_depth_that_already_steps_sharply_is_left_alone(monkeypatch):
    """Where the depth's largest one-pixel jump is a large share of the step (an exact map's edge,
    even where a curved silhouette seen at a grazing angle ramps into it), the depth is where the
    surface ends: nothing moves, whatever the photo's colours (without that test, pixels would)."""
    from lotus_blender.core import depth_edges
    depth, blurred, _box, two, _flat = _blurred_box()
    part_sharp = 1.0 / (0.4 / depth + 0.6 / blurred)     # 40 % of the jump in one pixel
    assert not fill.snap_soft_steps(part_sharp, two, 0.05)[1].any()
    assert not fill.snap_soft_steps(depth, two, 0.05)[1].any()
    monkeypatch.setattr(depth_edges, "DEPTH_SHARP", np.inf)
    assert fill.snap_soft_steps(part_sharp, two, 0.05)[1].sum() > 200


def _antialiased_disc(width=192, height=128, radius=34.0, samples=4):
    """A disc before the slanted wall, its photo antialiased (edge pixels mix both colours, the cut
    a colour match draws is ragged), its depth blurred like a model's edge; returns (blurred, photo)."""
    from tests.lotus_errors import gaussian_blur
    y, x = (np.mgrid[0:height * samples, 0:width * samples] + 0.5) / samples
    inside = (x - width / 2) ** 2 + (y - height / 2) ** 2 < radius ** 2
    cover = inside.reshape(height, samples, width, samples).mean(axis=(1, 3))[..., None]
    depth = np.where(cover[..., 0] >= 0.5, 3.0, 6.0 + 0.01 * np.arange(width))
    photo = cover * np.array((0.8, 0.25, 0.1)) + (1.0 - cover) * np.array((0.15, 0.3, 0.55))
    return np.exp(gaussian_blur(np.log(depth), 0.01 * width)), photo


def test_no_pixel_of_a_placed_window_is_torn_from_both_sides():
    """A placed edge is one clean cut: no pixel of a window the placing touched is torn from both
    of its neighbours along a row or a column (a ramp pixel left at an intermediate depth, a
    ragged cut's spike). No mesh face covers such a pixel's centre, and through the photo's own
    camera it showed the layer behind (before: 302 such pixels here)."""
    from lotus_blender.core import depth_edges, geometry
    blurred, photo = _antialiased_disc()
    snapped, moved = fill.snap_soft_steps(blurred, photo, 0.05)
    assert moved.sum() > 500
    window = depth_edges._window(moved, depth_edges.ramp_radius(moved.shape), np.logical_or, False)
    padded = np.pad(snapped, 1, mode="edge")
    torn = {(dy, dx): geometry.relative_depth_jump(snapped, padded[1 + dy:1 + dy + snapped.shape[0],
                                                                   1 + dx:1 + dx + snapped.shape[1]]) > 0.05
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))}
    both = (torn[0, 1] & torn[0, -1]) | (torn[1, 0] & torn[-1, 0])
    assert not (both & window).any()
    # Nor, but at a few pixels where three colours meet, torn from a nearer and a farther side.
    assert (depth_edges.torn_both_sides(1.0 / snapped, 0.05) & window).sum() < 0.03 * moved.sum()


def test_textured_two_surface_edge_is_placed_in_a_large_photo():
    """At 512x384 (the ramp's window 27 pixels wide) a box and a wall, each a checker of two
    tones of its own colour (tiles of 12 pixels, less contrast than between the two surfaces),
    with a camera's noise (0.03): the blurred step is placed at the box's edge, each moved pixel
    on its own side; the exact depth moves nothing, nor do tiles as contrasted as the two surfaces
    (benchmarks/bench_fill_placing.py measures the benchmark's scenes at 192 to 1024 pixels)."""
    from tests.lotus_errors import gaussian_blur
    width, height = 512, 384
    y, x = np.mgrid[0:height, 0:width]
    box = (abs(x - width / 2) < width / 6) & (y > height / 5) & (y < 0.8 * height)
    depth = np.where(box, 3.0, 6.0 + 0.002 * x)
    tone = ((x // 12 + y // 12) % 2)[..., None]
    photo = np.where(box[..., None], (0.75, 0.25, 0.1) + 0.12 * tone, (0.15, 0.3, 0.5) + 0.12 * tone)
    photo = photo + np.random.default_rng(1).normal(0.0, 0.03, photo.shape)
    blurred = np.exp(gaussian_blur(np.log(depth), 0.01 * width))
    snapped, moved = fill.snap_soft_steps(blurred, photo, 0.05)
    assert moved.sum() > 5000 and not (moved & ~_dilate_box(box, 20)).any()
    inside, outside = box & moved, ~box & moved
    assert np.all(snapped[inside] < 3.3) and np.all(snapped[outside] > 5.4)
    assert not fill.snap_soft_steps(depth, photo, 0.05)[1].any()
    # Tiles as far apart in colour as the two surfaces (0.4): no telling the sides apart, nothing moves.
    busy = np.where(box[..., None], (0.75, 0.25, 0.1) + 0.4 * tone, (0.15, 0.3, 0.5) + 0.4 * tone)
    assert not fill.snap_soft_steps(blurred, busy, 0.05)[1].any()
