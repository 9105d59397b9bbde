"""Map conversions (core/maps.py): depth, normals, normal maps, 16-bit, depth preview colours."""

import numpy as np
import pytest

from lotus_blender.core import maps
from tests import reference_math


# --- depth ---------------------------------------------------------------------------------------

def test_disparity_ends_map_to_near_and_far():
    depth = maps.disparity_to_depth(np.array([[0.0, 1.0]]), near=2.0, far=10.0)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[10.0, 2.0]], rtol=1e-6)


def test_disparity_is_affine_in_inverse_depth():
    disparity = np.linspace(0.0, 1.0, 11, dtype=np.float32)[None, :]
    depth = maps.disparity_to_depth(disparity, near=1.0, far=4.0)
    inverse = 1.0 / depth.astype(np.float64)
    np.testing.assert_allclose(np.diff(inverse[0]), np.full(10, (1.0 - 0.25) / 10), rtol=1e-5)
    assert np.all(np.diff(depth) < 0), "larger disparity must be nearer"


def test_depth_disparity_round_trip_with_default_range():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 20.0, size=(16, 24)).astype(np.float32)
    disparity, near, far = maps.depth_to_disparity(depth)
    assert near == pytest.approx(depth.min()) and far == pytest.approx(depth.max())
    assert disparity.min() == pytest.approx(0.0, abs=1e-6)
    assert disparity.max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(maps.disparity_to_depth(disparity, near, far), depth, rtol=1e-5)


def test_depth_to_disparity_nan_safe_and_explicit_range():
    depth = np.array([[1.0, np.nan, 3.0, -1.0, 100.0]])
    disparity, near, far = maps.depth_to_disparity(depth, near=1.0, far=3.0)
    assert (near, far) == (1.0, 3.0)
    assert disparity[0, 0] == pytest.approx(1.0) and disparity[0, 2] == pytest.approx(0.0)
    assert np.isnan(disparity[0, 1]) and np.isnan(disparity[0, 3])
    assert disparity[0, 4] == pytest.approx(0.0), "beyond far clips to far"


def test_relative_depth_is_linear():
    depth = maps.relative_depth_to_depth(np.array([0.0, 0.25, 1.0]), 2.0, 6.0)
    np.testing.assert_allclose(depth, [2.0, 3.0, 6.0])


@pytest.mark.parametrize("near, far", [(0.0, 1.0), (-1.0, 2.0), (5.0, 5.0), (6.0, 5.0), (1.0, np.inf)])
def test_near_far_validated(near, far):
    with pytest.raises(ValueError):
        maps.disparity_to_depth(np.zeros((2, 2)), near, far)
    with pytest.raises(ValueError):
        maps.relative_depth_to_depth(np.zeros((2, 2)), near, far)


def test_normalize_map_quantiles_and_nan():
    values = np.arange(101, dtype=np.float64).reshape(1, -1)
    values[0, 50] = np.nan
    out = reference_math.normalize_map(values)
    assert out.dtype == np.float32
    assert out[0, 0] == 0.0 and out[0, 100] == 1.0 and out[0, 50] == 0.0
    robust = reference_math.normalize_map(values, 0.1, 0.9)
    assert robust[0, 5] == 0.0 and robust[0, 95] == 1.0, "values beyond the quantiles clip"
    assert 0.0 < robust[0, 40] < robust[0, 60] < 1.0
    kept = reference_math.normalize_map(values, nan_value=np.nan)
    assert np.isnan(kept[0, 50])


def test_normalize_map_constant_gives_zeros():
    np.testing.assert_array_equal(reference_math.normalize_map(np.full((3, 3), 7.0)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        reference_math.normalize_map(np.zeros(3), 0.6, 0.4)


# --- normals -------------------------------------------------------------------------------------

def test_lotus_blender_camera_flip_x_only_and_round_trip():
    rng = np.random.default_rng(2)
    lotus = rng.normal(size=(5, 7, 3)).astype(np.float32)
    blender = maps.lotus_to_blender_camera(lotus)
    np.testing.assert_array_equal(blender[..., 0], -lotus[..., 0])
    np.testing.assert_array_equal(blender[..., 1:], lotus[..., 1:])
    np.testing.assert_array_equal(reference_math.blender_camera_to_lotus(blender), lotus)
    assert lotus[0, 0, 0] == pytest.approx(-blender[0, 0, 0]), "input must not be modified"


def test_camera_to_world_rotates_rows_of_vectors():
    # A camera at the origin looking along world -Y with world +Z up: camera +Z (toward viewer) is world +Y
    angle = np.pi / 2
    rotation_x = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    normals = np.zeros((2, 3, 3), dtype=np.float32)
    normals[...] = [0.0, 0.0, 1.0]
    normals[1, :] = [0.0, 1.0, 0.0]
    world = reference_math.camera_to_world(normals, rotation_x)
    np.testing.assert_allclose(world[0, 0], [0.0, -1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(world[1, 0], [0.0, 0.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError):
        reference_math.camera_to_world(normals, np.eye(4))


def test_normalize_vectors_unit_length_and_zero_fallback():
    vectors = np.array([[[3.0, 0.0, 4.0], [0.0, 0.0, 0.0], [np.nan, 1.0, 0.0]]])
    unit = maps.normalize_vectors(vectors)
    np.testing.assert_allclose(unit[0, 0], [0.6, 0.0, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(unit[0, 1], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(unit[0, 2], [0.0, 0.0, 1.0])


def test_block_mean_averages_whole_blocks_and_leaves_the_rest_out():
    values = np.arange(5 * 7 * 2, dtype=np.float64).reshape(5, 7, 2)
    small = maps.block_mean(values, 2)
    assert small.shape == (2, 3, 2)                  # the fifth row and seventh column left out
    np.testing.assert_array_equal(small[1, 2], values[2:4, 4:6].mean(axis=(0, 1)))
    np.testing.assert_array_equal(maps.block_mean(values[..., 0], 3),
                                  [[values[:3, :3, 0].mean(), values[:3, 3:6, 0].mean()]])
    assert maps.block_mean(values, 1) is values


def test_flat_surface_gives_exact_flat_normal_map_colour():
    flat = np.zeros((4, 4, 3), dtype=np.float32)
    flat[..., 2] = 1.0
    for convention in ("OPENGL", "DIRECTX"):
        rgb = maps.normals_to_normal_map(flat, convention)
        assert rgb.dtype == np.float32
        assert np.all(rgb == np.array([0.5, 0.5, 1.0], dtype=np.float32))


def test_normal_map_conventions_and_round_trip():
    tilted_up = maps.normalize_vectors(np.array([[[0.3, 0.6, 0.74]]]))
    opengl = maps.normals_to_normal_map(tilted_up, "OPENGL")
    directx = maps.normals_to_normal_map(tilted_up, "directx")
    assert opengl[0, 0, 1] > 0.5 and directx[0, 0, 1] < 0.5, "DirectX flips green"
    assert opengl[0, 0, 0] == pytest.approx(directx[0, 0, 0])
    rng = np.random.default_rng(3)
    normals = maps.normalize_vectors(rng.normal(size=(8, 8, 3)) + [0.0, 0.0, 2.0])
    for convention in ("OPENGL", "DIRECTX"):
        back = maps.normal_map_to_normals(maps.normals_to_normal_map(normals, convention), convention)
        np.testing.assert_allclose(back, normals, atol=1e-6)
    with pytest.raises(ValueError):
        maps.normals_to_normal_map(normals, "VULKAN")


def test_to_uint16_rounds_and_clips():
    out = maps.to_uint16(np.array([-0.5, 0.0, 0.5, 1.0, 2.0, np.nan]))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [0, 0, 32768, 65535, 65535, 0])


# --- depth preview ----------------------------------------------------------------------------

def _luminance(rgb):
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


@pytest.mark.parametrize("colormap, near_rgb, far_rgb", [
    ("INFERNO", (0.988, 0.998, 0.645), (0.001, 0.0, 0.014)),   # matplotlib inferno ends
    ("VIRIDIS", (0.993, 0.906, 0.144), (0.267, 0.005, 0.329)),  # matplotlib viridis ends
])
def test_colorize_depth_is_perceptually_ordered_and_near_is_bright(colormap, near_rgb, far_rgb):
    ramp = np.linspace(0.0, 1.0, 256)[None, :]
    rgb = maps.colorize_depth(ramp, colormap=colormap)
    assert rgb.shape == (1, 256, 3) and rgb.dtype == np.float32
    assert np.all((rgb >= 0.0) & (rgb <= 1.0))
    assert np.all(np.diff(_luminance(rgb[0].astype(np.float64))) > 0), "lightness must grow toward near"
    np.testing.assert_allclose(rgb[0, -1], near_rgb, atol=0.03)
    np.testing.assert_allclose(rgb[0, 0], far_rgb, atol=0.03)


def test_colorize_depth_relative_depth_and_turbo():
    disparity = np.array([[0.0, 1.0, np.nan]])
    relative = maps.colorize_depth(1.0 - disparity, near_is_high=False)
    np.testing.assert_allclose(relative[:, :2], maps.colorize_depth(disparity)[:, :2], atol=1e-6)
    np.testing.assert_allclose(relative[0, 2], relative[0, 0], atol=1e-6)  # NaN drawn as far
    turbo = maps.colorize_depth(np.array([[0.15, 0.9]]), colormap="turbo")
    assert turbo[0, 1, 0] > turbo[0, 1, 2] and turbo[0, 0, 2] > turbo[0, 0, 0], "near red, far blue"
    with pytest.raises(ValueError):
        maps.colorize_depth(disparity, colormap="JET")
