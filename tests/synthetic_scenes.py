"""Analytic scenes for the camera estimate and the depth refinement (numpy only, no Blender).

A pinhole camera (Blender camera space: +X right, +Y up, looking down -Z) ray-casts planes and
spheres. Each scene returns the planar depth, the camera-space normals (Blender convention), a label
per pixel (planes 1.., spheres 100..) and the focal length in pixels. The helpers turn true depth
into what Lotus outputs and measure meshes the way the ground-truth tests do.
"""

from __future__ import annotations

import math

import numpy as np

from lotus_blender.core import camera_estimate, geometry
from tests import reference_math

SPHERE_LABEL = 100


def turned(pitch_deg, yaw_deg):
    """World -> camera rotation: the camera pitched (down < 0) and turned (yaw) in the world."""
    pitch, yaw = math.radians(pitch_deg), math.radians(yaw_deg)
    about_x = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    about_y = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    return about_x @ about_y


def ray_cast(width, height, focal_35mm, rotation, planes=(), spheres=()):
    """planes: ((normal), offset) with normal . P = offset in world space (normal toward the camera);
    spheres: ((centre), radius). Returns (depth, normals, labels, focal_px)."""
    focal = float(camera_estimate.focal_px_from_35mm(focal_35mm, width, height))
    rays = geometry.unproject(np.ones((height, width)), geometry.Intrinsics(width, height, focal))
    depth = np.full((height, width), np.inf)
    labels = np.zeros((height, width), np.int32)
    normals = np.zeros((height, width, 3))
    for index, (normal, offset) in enumerate(planes):
        normal = rotation @ np.asarray(normal, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = offset / (rays @ normal)
        hit = (distance > 0) & (distance < depth)
        depth[hit], labels[hit], normals[hit] = distance[hit], index + 1, normal
    for index, (centre, radius) in enumerate(spheres):
        centre = rotation @ np.asarray(centre, float)
        a = np.sum(rays * rays, axis=-1)
        b = -2.0 * (rays @ centre)
        c = centre @ centre - radius * radius
        disc = b * b - 4 * a * c
        distance = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
        hit = (disc > 0) & (distance > 0) & (distance < depth)
        depth[hit], labels[hit] = distance[hit], SPHERE_LABEL + index
        normals[hit] = ((rays * distance[..., None] - centre) / radius)[hit]
    return depth, normals, labels, focal


def room(width=128, height=96, focal_35mm=35.0, pitch=-12.0, yaw=20.0):
    """Floor, ceiling, three walls (and the wall behind the camera) and a ball."""
    planes = [((0, 1, 0), -1.4), ((1, 0, 0), -2.5), ((-1, 0, 0), -3.0), ((0, 0, 1), -9.0),
              ((0, -1, 0), -1.6), ((0, 0, -1), -4.0)]
    return ray_cast(width, height, focal_35mm, turned(pitch, yaw), planes, [((0.6, -0.6, -5.0), 0.8)])


def balls(width=128, height=96, focal_35mm=35.0, pitch=-10.0, yaw=15.0):
    """Five balls in front of a wall, over a floor: mostly curved surfaces and occlusions."""
    planes = [((0, 1, 0), -1.4), ((0, 0, 1), -9.0), ((1, 0, 0), -4.0)]
    spheres = [((-1.2, -0.6, -5.0), 0.8), ((0.8, -0.9, -4.2), 0.5), ((0.3, 0.4, -6.5), 1.0),
               ((-0.2, -1.0, -3.2), 0.35), ((1.8, 0.2, -5.5), 0.7)]
    return ray_cast(width, height, focal_35mm, turned(pitch, yaw), planes, spheres)


def wall(width=128, height=96, focal_35mm=35.0):
    """One wall facing the camera square on: no perspective cue at all."""
    return ray_cast(width, height, focal_35mm, np.eye(3), [((0, 0, 1), -6.0)])


def lotus_disparity(depth, rng, noise=2e-4):
    """True planar depth -> what a Lotus disparity model outputs: inverse depth normalised between
    its 2 % and 98 % quantiles (near = 1), then a random scale and shift and a little noise,
    clamped to [0, 1] like the model's decoder."""
    disparity = reference_math.normalize_map(1.0 / depth, 0.02, 0.98).astype(np.float64)
    scale = rng.uniform(0.6, 0.95)
    shift = rng.uniform(0.0, 1.0 - scale)
    return np.clip(scale * disparity + shift + rng.normal(0.0, noise, depth.shape), 0.0, 1.0)


def unclipped_labels(depth, labels, inverse=True):
    """Labels with the pixels the 2 %/98 % normalisation clipped set to 0 (their values are flat)."""
    values = 1.0 / depth if inverse else depth
    low, high = np.quantile(values, [0.02, 0.98])
    return np.where((values > low) & (values < high), labels, 0)


def lotus_relative_depth(depth, rng, noise=2e-4):
    """True planar depth -> a relative depth map (near = 0) with a random scale and shift."""
    relative = reference_math.normalize_map(depth, 0.02, 0.98).astype(np.float64)
    scale = rng.uniform(0.6, 0.95)
    shift = rng.uniform(0.0, 1.0 - scale)
    return np.clip(scale * relative + shift + rng.normal(0.0, noise, depth.shape), 0.0, 1.0)


def gaussian_blur(values, sigma):
    """Separable Gaussian blur with edge padding (a stand-in for the model's smooth depth)."""
    radius = int(3 * sigma + 0.5)
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma * sigma))
    taps /= taps.sum()
    padded = np.pad(values, radius, mode="edge")
    rows = sum(w * padded[:, i:i + values.shape[1]] for i, w in enumerate(taps))
    return sum(w * rows[i:i + values.shape[0], :] for i, w in enumerate(taps))


def fitted_plane_normals(points, labels, min_pixels=200):
    """Least-squares plane normal per plane label (points (H, W, 3))."""
    fitted = {}
    for label in np.unique(labels):
        if 0 < label < SPHERE_LABEL and np.count_nonzero(labels == label) >= min_pixels:
            selected = points[labels == label]
            _, _, vt = np.linalg.svd(selected - selected.mean(axis=0), full_matrices=False)
            fitted[int(label)] = vt[-1]
    return fitted


def plane_angle_errors(points, true_normals, labels):
    """|angle between two fitted planes - the true angle| (degrees) for every pair of planes."""
    fitted = fitted_plane_normals(points, labels)
    truth = {label: true_normals[labels == label][0] for label in fitted}
    errors = []
    keys = sorted(fitted)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            measured = math.degrees(math.acos(min(1.0, abs(float(fitted[a] @ fitted[b])))))
            expected = math.degrees(math.acos(min(1.0, abs(float(truth[a] @ truth[b])))))
            errors.append(abs(measured - expected))
    return errors


def face_normals(points):
    """Normals of the grid quads (H-1, W-1, 3), from their diagonals, facing the camera."""
    a = points[1:, 1:] - points[:-1, :-1]
    b = points[:-1, 1:] - points[1:, :-1]
    normal = np.cross(b, a)
    return normal / np.linalg.norm(normal, axis=-1, keepdims=True)


def mesh_errors(depth, true_depth, intrinsics, tear_threshold=0.05):
    """(median face-normal error in degrees, median 3D error relative to the median depth) of the
    mesh unprojected from depth, over its faces that are not torn, against the true geometry."""
    points = geometry.unproject(depth, intrinsics)
    truth = geometry.unproject(true_depth, intrinsics)
    kept = ~geometry.torn_faces(depth, tear_threshold)
    cosine = np.sum(face_normals(points) * face_normals(truth), axis=-1)
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))[kept]
    distance = np.linalg.norm(points - truth, axis=-1) / np.median(true_depth)
    return float(np.median(angle)), float(np.median(distance))
