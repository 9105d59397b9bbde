"""core.temporal: robust scale/shift fits and the causal stabilizer on synthetic sequences."""

import numpy as np

from lotus_blender.core import affine_fit, temporal


def test_area_resample_is_a_box_average():
    values = np.arange(24, dtype=np.float64).reshape(4, 6)
    small = affine_fit.area_resample(values, (2, 3))
    assert np.allclose(small, values.reshape(2, 2, 3, 2).mean(axis=(1, 3)))
    # Fractional cells: a constant stays constant, the mean is preserved.
    odd = affine_fit.area_resample(values, (3, 4))
    assert odd.shape == (3, 4) and np.isclose(odd.mean(), values.mean())
    assert np.allclose(affine_fit.area_resample(np.full((7, 5), 2.5), (3, 2)), 2.5)


def test_robust_fit_ignores_a_changed_region():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.9, size=(40, 60))
    source = (target - 0.1) / 1.7
    moved = source.copy()
    moved[5:20, 10:30] = 0.95  # 12% of the pixels: an object that moved
    fit = affine_fit.robust_affine_fit(moved, target)
    assert abs(fit.scale - 1.7) < 1e-3 and abs(fit.shift - 0.1) < 1e-3
    assert 0.8 < fit.inliers < 0.9
    plain = np.polyfit(moved.ravel(), target.ravel(), 1)
    assert abs(plain[0] - 1.7) > 0.1  # least squares alone is dragged off


def test_stabilizer_removes_per_frame_scale_and_shift():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 1.0, size=(48, 64)).astype(np.float32)
    scales = rng.uniform(0.6, 1.2, size=12)
    shifts = rng.uniform(-0.15, 0.15, size=12)
    frames = [base * s + t for s, t in zip(scales, shifts)]
    aligned, fits = temporal.stabilize_sequence(frames)
    assert fits[0].references == 0 and fits[1].references == 1 and fits[5].references == 3
    for values in aligned[1:]:
        assert np.allclose(values, aligned[0], atol=1e-4)


def test_resume_from_references_matches_one_pass():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.1, 1.0, size=(30, 40))
    frames = [(base + 0.01 * i) * rng.uniform(0.7, 1.1) + rng.uniform(-0.1, 0.1)
              for i in range(8)]
    whole, _ = temporal.stabilize_sequence(frames)
    resumed = temporal.TemporalStabilizer()
    wanted = resumed.needs_reference(5)
    assert {2, 3, 4} <= set(wanted) and 5 - temporal.ANCHOR_LAGS[0] in wanted
    assert {5 - lag for lag in temporal.STATIC_LAGS} <= set(wanted)  # the background's references
    for frame in wanted:  # what a resumed run reads back from disk (the frames that exist)
        if 0 <= frame < 5:
            resumed.add_reference(frame, whole[frame])
    for frame in (5, 6, 7):
        values, _ = resumed.align(frame, frames[frame])
        assert np.allclose(values, whole[frame], atol=1e-5)


# -- the photos' motion mask (core.motion) ---------------------------------------------------------

def _photo_grids(shot, seed=0):
    from lotus_blender.core import motion
    from tests import stabilize_cases
    shape = affine_fit.grid_shape(*shot.depth.shape[1:])
    photos = stabilize_cases.photo_frames(shot, seed)
    truth = [affine_fit.area_resample(m.astype(float), shape) > 0 for m in shot.moving]
    return [motion.photo_grid(p, shape) for p in photos], truth


def test_the_photos_show_a_large_moving_object():
    """A textured ball filling 50-75 % of the frame, moving across a room whose back wall is
    plain, seen through noise, exposure changes and blur: the cells that change between two
    consecutive photos are the ball's (the world's motion told from the ball's by the outline,
    which moves with the object in front)."""
    from lotus_blender.core import motion
    from tests import stabilize_cases
    grids, truth = _photo_grids(stabilize_cases.object_across())
    caught, false, decided = [], [], 0
    for frame in range(8, 20):
        moving = motion.changed_cells(grids[frame], grids[frame - 1])
        if moving is None:
            continue
        decided += 1
        ball = truth[frame] | truth[frame - 1]
        caught.append(moving[ball].mean())
        false.append(moving[~ball].mean())
    print(f"\nmotion mask, object across: {decided}/12 pairs decided, ball cells caught "
          f"{np.mean(caught):.2f} (min {np.min(caught):.2f}), background taken for moving "
          f"{np.mean(false):.2f}")
    assert decided >= 8 and np.min(caught) > 0.6 and np.mean(caught) > 0.65
    assert np.mean(false) < 0.15


def test_photos_that_say_nothing_give_no_mask():
    """Black (a fade), plain, and two different scenes (a hard cut): no mask, the depth test."""
    from lotus_blender.core import motion
    from tests import stabilize_cases
    grids, _ = _photo_grids(stabilize_cases.hard_cuts())
    rng = np.random.default_rng(0)
    dark = np.clip(rng.normal(0.01, 0.01, grids[0].shape), 0, 1)
    plain = np.full(grids[0].shape, 0.5) + rng.normal(0, 0.01, grids[0].shape)
    assert motion.changed_cells(dark, dark * 0.9) is None
    assert motion.changed_cells(plain, plain[::-1]) is None
    assert motion.changed_cells(grids[10], grids[9]) is None  # room -> yard
    still = motion.changed_cells(grids[5], grids[4])           # the room, the camera turning
    assert still is not None and still.mean() < 0.05


def test_plain_photos_change_nothing():
    """A photo with nothing in it: exactly the results of no photo (the depth test alone)."""
    from tests import stabilize_cases
    shot = stabilize_cases.object_across(12)
    raw = stabilize_cases.raw_frames(shot, 0.5, 0)
    grey = [np.full(values.shape + (3,), 0.4, np.float32) for values in raw]
    without, fits_without = temporal.stabilize_sequence(raw)
    with_grey, fits_grey = temporal.stabilize_sequence(raw, photos=grey)
    for a, b in zip(without, with_grey):
        assert np.array_equal(a, b)
    assert [f.scale for f in fits_without] == [f.scale for f in fits_grey]


def test_resume_with_photos_matches_one_pass():
    """A resumed run given the earlier frames' photos (photos_wanted) finds the same cells."""
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:36, 0:48]
    base = 0.2 + 0.5 * x / 48 + 0.05 * np.sin(y / 3.0)
    picture = 0.5 + 0.3 * np.sin(x / 2.5) * np.cos(y / 3.5)
    frames, photos = [], []
    for i in range(9):
        values, photo = base.copy(), picture.copy()
        values[10:26, 4 + 3 * i:16 + 3 * i] += 0.3       # a box moving across
        photo[10:26, 4 + 3 * i:16 + 3 * i] = 0.5 + 0.3 * np.cos(x[10:26, :12] * 1.3)
        frames.append(values * rng.uniform(0.7, 1.1) + rng.uniform(-0.1, 0.1))
        photos.append(np.repeat((photo * rng.uniform(0.95, 1.05))[..., None], 3, axis=2))
    whole, _ = temporal.stabilize_sequence(frames, photos=photos)
    resumed = temporal.TemporalStabilizer()
    for frame in resumed.needs_reference(6):
        if 0 <= frame < 6:
            resumed.add_reference(frame, whole[frame])
    wanted = resumed.photos_wanted(6)
    assert wanted and all(f < 6 for f in wanted)
    for frame in wanted:
        resumed.add_photo(frame, photos[frame])
    for frame in (6, 7, 8):
        values, _ = resumed.align(frame, frames[frame], photos[frame])
        assert np.allclose(values, whole[frame], atol=1e-5)
