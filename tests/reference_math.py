"""Numpy the tests need beside lotus_blender.core and the product never does: the way back from
ground truth to what Lotus outputs (Blender camera normals -> the Lotus convention, maps
normalised between quantiles), projections of points back to pixels and world <-> camera moves,
and where the 2.5D mesh's vertices should lie (the numpy model of what geometry nodes build)."""

from __future__ import annotations

import numpy as np

from lotus_blender.core import geometry, maps


# -- points and pixels ----------------------------------------------------------------------------

def camera_to_world_points(points_cam: np.ndarray, matrix_world: np.ndarray) -> np.ndarray:
    return geometry.transform_points(points_cam, matrix_world)


def world_to_camera_points(points_world: np.ndarray, matrix_world: np.ndarray) -> np.ndarray:
    return geometry.transform_points(points_world,
                                     np.linalg.inv(np.asarray(matrix_world, dtype=np.float64)))


def project(points_cam: np.ndarray, intrinsics: geometry.Intrinsics) -> np.ndarray:
    """Camera-space points -> (..., 2) pixel coordinates (col, row) from the top-left corner."""
    points_cam = np.asarray(points_cam, dtype=np.float64)
    z = -points_cam[..., 2]
    col = points_cam[..., 0] / z * intrinsics.focal_px + intrinsics.cx
    row = intrinsics.cy - points_cam[..., 1] / z * intrinsics.focal_px
    return np.stack([col, row], axis=-1)


def unproject_grid(samples: np.ndarray, intrinsics: geometry.Intrinsics) -> np.ndarray:
    """Camera-space points (down, across, 3) of the 2.5D mesh's grid vertices as the geometry
    nodes (blender/builders/geonodes.py) place them: planar depth samples (as
    core.geometry.downsample_grid takes them) on the rays of core.geometry.grid_ray_coordinates,
    shifted by core.geometry.RAY_OFFSET_PX."""
    samples = np.asarray(samples, dtype=np.float64)
    down, across = samples.shape
    right, down_shift = geometry.RAY_OFFSET_PX
    x = (geometry.grid_ray_coordinates(across, intrinsics.width, right) - intrinsics.cx) / intrinsics.focal_px
    y = (intrinsics.cy - geometry.grid_ray_coordinates(down, intrinsics.height, down_shift)) / intrinsics.focal_px
    x, y = np.broadcast_arrays(x[None, :], y[:, None])
    return np.stack([x * samples, y * samples, -samples], axis=-1)


# -- maps as Lotus gives them ---------------------------------------------------------------------

def blender_camera_to_lotus(normals: np.ndarray) -> np.ndarray:
    """Blender camera-space normals -> the Lotus convention (+X left): the inverse of
    core.maps.lotus_to_blender_camera (the same flip of X)."""
    return maps.lotus_to_blender_camera(normals)


def camera_to_world(normals_cam: np.ndarray, rotation_3x3: np.ndarray) -> np.ndarray:
    """Rotate camera-space vectors (...x3) to world space by ``camera.matrix_world.to_3x3()`` as
    numpy. The rotation is not assumed orthonormal (a scaled camera), so the result is
    renormalised."""
    rotation = np.asarray(rotation_3x3, dtype=np.float32)
    if rotation.shape != (3, 3):
        raise ValueError(f"rotation must be 3x3, got shape {rotation.shape}")
    # v_world = R @ v for each vector; with vectors as rows that is v @ R.T
    return maps.normalize_vectors(np.asarray(normals_cam, dtype=np.float32) @ rotation.T)


def normalize_map(values, low_q=0.0, high_q=1.0, nan_value=0.0):
    """Robust min/max normalisation to [0, 1] between the low_q and high_q quantiles of the finite
    values. Values beyond the quantiles are clipped. Non-finite inputs become ``nan_value`` (pass
    np.nan to keep them). A constant (or empty) map gives all zeros."""
    if not (0.0 <= low_q < high_q <= 1.0):
        raise ValueError(f"need 0 <= low_q < high_q <= 1, got low_q={low_q}, high_q={high_q}")
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    out = np.zeros(values.shape, dtype=np.float64)
    if finite.any():
        low, high = np.quantile(values[finite], [low_q, high_q])
        if high > low:
            with np.errstate(invalid="ignore"):
                out = np.clip((values - low) / (high - low), 0.0, 1.0)
    out[~finite] = nan_value
    return out.astype(np.float32)
