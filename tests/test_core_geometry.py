"""Camera geometry in the numpy core: intrinsics, unprojection, tearing measure, grid downsampling."""

import math

import numpy as np
import pytest

from lotus_blender.core import geometry
from tests import reference_math


def test_default_lens_field_of_view():
    intr = geometry.intrinsics_from_lens(geometry.DEFAULT_LENS_MM, 36.0, 1920, 1080)
    assert math.degrees(intr.fov_x) == pytest.approx(39.5978, abs=1e-3)
    assert intr.focal_px == pytest.approx(50.0 / 36.0 * 1920)


@pytest.mark.parametrize("fit, width, height, edge", [
    ("AUTO", 640, 480, 640), ("AUTO", 480, 640, 640), ("HORIZONTAL", 480, 640, 480),
    ("VERTICAL", 640, 480, 480)])
def test_sensor_fit_picks_the_edge(fit, width, height, edge):
    intr = geometry.intrinsics_from_lens(36.0, 36.0, width, height, fit)
    assert intr.focal_px == pytest.approx(edge)


def test_35mm_equivalent_uses_the_diagonal():
    # A 3:2 photo: the 35 mm equivalent is the lens itself on a 36 mm sensor.
    assert geometry.lens_from_35mm(28.0, 6000, 4000) == pytest.approx(28.0)
    # A 4:3 photo at 26 mm equivalent (a typical phone): diagonal field of view is preserved.
    lens = geometry.lens_from_35mm(26.0, 4032, 3024)
    intr = geometry.intrinsics_from_lens(lens, 36.0, 4032, 3024)
    diagonal_fov = 2 * math.atan(math.hypot(4032, 3024) / 2 / intr.focal_px)
    assert diagonal_fov == pytest.approx(2 * math.atan(geometry.FULL_FRAME_DIAGONAL_MM / 2 / 26.0))


def test_unproject_then_project_returns_pixel_centres():
    intr = geometry.intrinsics_from_lens(35.0, 36.0, 8, 6)
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 5.0, size=(6, 8))
    points = geometry.unproject(depth, intr)
    assert np.allclose(-points[..., 2], depth)                      # planar depth is -Z
    pixels = reference_math.project(points, intr)
    cols, rows = np.meshgrid(np.arange(8) + 0.5, np.arange(6) + 0.5)
    assert np.allclose(pixels[..., 0], cols) and np.allclose(pixels[..., 1], rows)
    # Top-left pixel is up and to the left of the camera axis.
    assert points[0, 0, 0] < 0 < points[0, 0, 1]


def test_ray_depth_is_the_distance_to_the_point():
    intr = geometry.intrinsics_from_lens(20.0, 36.0, 10, 10)
    depth = np.full((10, 10), 3.0)
    points = geometry.unproject(depth, intr, "RAY")
    assert np.allclose(np.linalg.norm(points, axis=-1), 3.0)
    # The same points from their planar depth: off the axis, planar is shorter than the ray.
    planar = -points[..., 2]
    assert np.allclose(geometry.unproject(planar, intr), points)
    assert planar.max() < 3.0 and planar[0, 0] < planar[4, 4]


def test_world_transform_round_trip():
    angle = math.radians(30)
    matrix = np.array([[math.cos(angle), -math.sin(angle), 0, 1],
                       [math.sin(angle), math.cos(angle), 0, 2],
                       [0, 0, 1, 3], [0, 0, 0, 1]])
    points = np.random.default_rng(1).normal(size=(4, 5, 3))
    world = reference_math.camera_to_world_points(points, matrix)
    assert np.allclose(reference_math.world_to_camera_points(world, matrix), points)


def test_tearing_cuts_only_at_the_step():
    depth = np.full((4, 6), 2.0)
    depth[:, 3:] = 4.0   # a step between columns 2 and 3
    jump = geometry.relative_depth_jump(depth[:, :-1], depth[:, 1:])
    assert np.allclose(jump[:, 2], 1.0) and np.count_nonzero(jump) == 4
    torn = geometry.torn_faces(depth, threshold=0.1)
    assert torn.shape == (3, 5)
    assert torn[:, 2].all() and not torn[:, [0, 1, 3, 4]].any()
    assert not geometry.torn_faces(depth, threshold=1.5).any()


def test_vertex_grid_size_and_samples():
    assert geometry.vertex_grid_size(1024, 768, 10**9) == (1024, 768)     # never above one per pixel
    across, down = geometry.vertex_grid_size(1024, 768, 10_000)
    assert across * down <= 10_000 and abs(across / down - 4 / 3) < 0.02
    assert np.array_equal(geometry.grid_pixel_indices(5, 5), np.arange(5))
    assert np.array_equal(geometry.grid_pixel_indices(2, 4), [1, 3])
    values = np.arange(12 * 16).reshape(12, 16)
    samples, rows, cols = geometry.downsample_grid(values, 48)
    assert samples.shape == (len(rows), len(cols)) == (6, 8)
    assert np.array_equal(samples, values[rows][:, cols])
