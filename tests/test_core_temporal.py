"""core.temporal: robust scale/shift fits and the causal stabilizer on synthetic sequences."""

import numpy as np

from lotus_blender.core import temporal


def test_area_resample_is_a_box_average():
    values = np.arange(24, dtype=np.float64).reshape(4, 6)
    small = temporal.area_resample(values, (2, 3))
    assert np.allclose(small, values.reshape(2, 2, 3, 2).mean(axis=(1, 3)))
    # Fractional cells: a constant stays constant, the mean is preserved.
    odd = temporal.area_resample(values, (3, 4))
    assert odd.shape == (3, 4) and np.isclose(odd.mean(), values.mean())
    assert np.allclose(temporal.area_resample(np.full((7, 5), 2.5), (3, 2)), 2.5)


def test_robust_fit_ignores_a_changed_region():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.9, size=(40, 60))
    source = (target - 0.1) / 1.7
    moved = source.copy()
    moved[5:20, 10:30] = 0.95  # 12% of the pixels: an object that moved
    fit = temporal.robust_affine_fit(moved, target)
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
