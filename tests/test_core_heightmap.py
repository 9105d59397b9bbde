"""Height from normals (core/heightmap.py): Frankot-Chellappa, mirror padding, seamless mode."""

import numpy as np
import pytest

from lotus_blender.core.heightmap import height_from_normals


def _normals_of(height):
    """Analytic-style tangent normals of a height field given top-row-first (rows go down, +Y is up)."""
    dz_drow, dz_dx = np.gradient(height)
    dz_dy_up = -dz_drow
    n = np.stack([-dz_dx, -dz_dy_up, np.ones_like(height)], axis=-1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def _gaussian_bump(rows=64, cols=80, amplitude=6.0, sigma=7.0, centre=(28, 44)):
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    return amplitude * np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma ** 2))


def _correlation(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


@pytest.mark.parametrize("seamless", [False, True])
def test_gaussian_bump_recovered(seamless):
    bump = _gaussian_bump()
    height = height_from_normals(_normals_of(bump), seamless=seamless)
    assert height.shape == bump.shape and height.dtype == np.float32
    assert height.min() == pytest.approx(0.0, abs=1e-6) and height.max() == pytest.approx(1.0, abs=1e-6)
    assert _correlation(height, bump) > 0.99
    assert np.unravel_index(np.argmax(height), height.shape) == (28, 44), "the peak stays where it was"


def test_raw_height_keeps_slope_scale():
    bump = _gaussian_bump()
    raw = height_from_normals(_normals_of(bump), normalize=False)
    # Raw output is in pixel units: the bump's relief (6 px) comes back, not just its shape
    assert raw.max() - raw.min() == pytest.approx(bump.max() - bump.min(), rel=0.05)
    doubled = height_from_normals(_normals_of(bump), normalize=False, strength=2.0)
    np.testing.assert_allclose(doubled, 2.0 * raw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("direction", ["right", "up"])
def test_tilted_plane_gives_ramp_in_the_right_direction(direction):
    rows, cols = 48, 64
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    plane = 0.3 * x if direction == "right" else 0.3 * (rows - 1 - y)  # "up" = toward row 0
    height = height_from_normals(_normals_of(plane), seamless=False)
    assert _correlation(height, plane) > 0.999, "mirror padding integrates a plane without wrap artefacts"
    if direction == "right":
        assert np.all(np.diff(height, axis=1) > 0)
    else:
        assert np.all(np.diff(height, axis=0) < 0), "rows go down, so height falls along rows"


def test_nonperiodic_photo_needs_mirror_padding():
    # A periodic surface cannot climb overall: the slope of a plane is lost in seamless mode
    x = np.mgrid[0:32, 0:32][1].astype(np.float64)
    normals = _normals_of(0.5 * x)
    np.testing.assert_allclose(height_from_normals(normals, seamless=True), 0.5, atol=1e-6)
    assert _correlation(height_from_normals(normals, seamless=False), x) > 0.999


def test_seamless_output_tiles():
    # A periodic texture: bumps on a lattice that repeats across the image edges
    rows, cols = 64, 96
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    texture = np.sin(2 * np.pi * 2 * x / cols) * np.cos(2 * np.pi * 3 * y / rows)
    texture += 0.5 * np.sin(2 * np.pi * x / cols)
    height = height_from_normals(_normals_of(texture), seamless=True)
    assert _correlation(height, texture) > 0.99
    neighbour_step = max(np.abs(np.diff(height, axis=1)).max(), np.abs(np.diff(height, axis=0)).max())
    assert np.abs(height[:, 0] - height[:, -1]).max() <= neighbour_step
    assert np.abs(height[0, :] - height[-1, :]).max() <= neighbour_step


def test_flat_normals_give_mid_grey_and_strength_scales_around_it():
    flat = np.zeros((16, 16, 3))
    flat[..., 2] = 1.0
    np.testing.assert_array_equal(height_from_normals(flat), np.full((16, 16), 0.5, dtype=np.float32))
    bump = _normals_of(_gaussian_bump(32, 32, centre=(16, 16), sigma=4.0))
    half = height_from_normals(bump, strength=0.5)
    assert half.min() == pytest.approx(0.25, abs=1e-6) and half.max() == pytest.approx(0.75, abs=1e-6)


def test_grazing_and_invalid_normals_stay_finite():
    normals = np.zeros((8, 8, 3))
    normals[..., 2] = 1.0
    normals[2, 3] = [1.0, 0.0, 0.0]      # grazing: nz = 0
    normals[5, 5] = [0.0, 0.0, -1.0]     # facing away
    normals[6, 1] = [np.nan, 0.0, 1.0]
    height = height_from_normals(normals)
    assert np.all(np.isfinite(height)) and height.min() >= 0.0 and height.max() <= 1.0
    with pytest.raises(ValueError):
        height_from_normals(np.zeros((8, 8)))
