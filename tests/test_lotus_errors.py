"""The error model of real Lotus output (tests/lotus_errors.py) measures what the paper reports.

Its calibration figures are printed so a reader sees them in every run (and they stay true).
"""

import numpy as np
import pytest

from tests import lotus_errors, synthetic_scenes

SCENES = {"room": synthetic_scenes.room, "balls": synthetic_scenes.balls}
LENSES = (24.0, 35.0, 85.0)
SEEDS = range(3)


def _figures(severity):
    """(mean depth AbsRel, mean normal error, pooled median normal error) over scenes, lenses, seeds."""
    absrel, errors = [], []
    for make in SCENES.values():
        for lens in LENSES:
            depth, normals, _labels, _focal = make(width=192, height=144, focal_35mm=lens)
            for seed in SEEDS:
                maps = lotus_errors.degrade(depth, normals, severity, seed)
                absrel.append(lotus_errors.affine_absrel(maps.depth, depth))
                errors.append(lotus_errors.angular_errors(maps.normals, normals).ravel())
    errors = np.concatenate(errors)
    return float(np.mean(absrel)), float(errors.mean()), float(np.median(errors))


@pytest.fixture(scope="module")
def figures(capsys_module=None):
    return {severity: _figures(severity) for severity in lotus_errors.SEVERITIES}


def test_calibration_figures_match_the_paper(figures, capsys):
    with capsys.disabled():
        print("\nLotus error model (analytic room and balls, lenses 24/35/85 mm, 3 seeds):")
        for severity, (absrel, mean, median) in figures.items():
            print(f"  severity {severity:.1f}: depth AbsRel after one affine fit {absrel:.2%}, "
                  f"normal error mean {mean:.1f} deg, median {median:.1f} deg")
    absrel, mean, median = figures[1.0]
    assert 0.05 <= absrel <= 0.08, absrel        # Lotus: 5 % (NYUv2) to 8 % (KITTI)
    assert 13.0 <= mean <= 17.0, mean            # Lotus: about 15-17 degrees mean
    assert median < 10.0, median                 # a heavy tail, as real errors have
    absrel0, mean0, _ = figures[0.0]
    assert absrel0 < 1e-3 and mean0 < 1e-6       # severity 0 is today's near-exact maps


def test_errors_grow_with_severity(figures):
    absrel = [figures[s][0] for s in lotus_errors.SEVERITIES]
    normal = [figures[s][1] for s in lotus_errors.SEVERITIES]
    assert absrel == sorted(absrel) and normal == sorted(normal)


def test_depth_errors_are_smooth_not_white():
    """The error field is dominated by low frequencies: neighbouring pixels err alike (white noise
    of the same size would give a correlation near 0)."""
    depth, normals, _labels, _focal = synthetic_scenes.room(width=192, height=144)
    maps = lotus_errors.degrade(depth, normals, 1.0, seed=4)
    error = np.log(maps.depth) - np.log(depth)
    error -= error.mean()
    neighbour = np.corrcoef(error[:, :-1].ravel(), error[:, 1:].ravel())[0, 1]
    far = np.corrcoef(error[:, :-20].ravel(), error[:, 20:].ravel())[0, 1]
    assert neighbour > 0.9 and far > 0.3, (neighbour, far)


def test_same_seed_same_errors_at_any_resolution():
    small = lotus_errors.smooth_field((48, 64), np.random.default_rng(3))
    large = lotus_errors.smooth_field((96, 128), np.random.default_rng(3))
    assert np.allclose(small, large[::2, ::2] * 0.5 + large[1::2, 1::2] * 0.5, atol=0.05)
    depth, normals, _labels, _focal = synthetic_scenes.balls()
    first = lotus_errors.degrade(depth, normals, 1.0, seed=2)
    again = lotus_errors.degrade(depth, normals, 1.0, seed=2)
    other = lotus_errors.degrade(depth, normals, 1.0, seed=3)
    assert np.array_equal(first.depth, again.depth) and np.array_equal(first.normals, again.normals)
    assert not np.allclose(first.depth, other.depth)


def test_frames_of_a_shot_drift_rather_than_jump():
    """Per-frame errors of one shot share most of their field: consecutive frames differ less than
    two unrelated shots, but they do differ (the flicker a stabilizer removes)."""
    depth, normals, _labels, _focal = synthetic_scenes.room()
    frames = [np.log(lotus_errors.degrade_depth(depth, 1.0, seed=5, frame=f)) for f in range(3)]
    unrelated = np.log(lotus_errors.degrade_depth(depth, 1.0, seed=6, frame=0))
    step = np.abs(frames[1] - frames[0]).mean()
    assert 0.002 < step < np.abs(unrelated - frames[0]).mean()
