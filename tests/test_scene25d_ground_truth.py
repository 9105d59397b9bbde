"""The 2.5D builder proven on a Cycles render with known geometry (issue 5, section 4).

The Depth pass becomes Lotus disparity (near = 1, with the true near/far), the Normal pass becomes
Lotus camera-space normals and then the normal image the Blender side stores (Blender camera
convention, rgb = 0.5 n + 0.5). The built mesh must land on the true surfaces and its normals,
taken back to world space, must match the Normal pass.
"""

import math

import numpy as np
import pytest

from lotus_blender.core import geometry, maps
from tests import reference_math
from tests.ground_truth import OBJECTS
from tests.test_scene25d import (evaluated_mesh_arrays, float_image, live_module, main_mesh,  # noqa: F401
                                 tracked_datablocks, vertex_pixels)


def _index(name):
    return list(OBJECTS).index(name) + 1


def test_cycles_depth_pass_is_planar(ground_truth_scene):
    gt = ground_truth_scene
    intr = geometry.intrinsics_from_lens(gt.lens, gt.sensor_width, *gt.resolution, gt.sensor_fit)
    ground = gt.object_index == _index("gt_ground")
    heights = {kind: reference_math.camera_to_world_points(geometry.unproject(gt.depth, intr, kind), gt.matrix_world)[..., 2]
               for kind in ("PLANAR", "RAY")}
    assert np.median(np.abs(heights["PLANAR"][ground])) < 1e-4      # the ground plane is z = 0
    assert np.median(np.abs(heights["RAY"][ground])) > 0.05


@pytest.fixture
def built_from_ground_truth(blender_addon, ground_truth_scene, tracked_datablocks):
    """build_photo_scene fed with the ground truth in Lotus form, seen through the true camera."""
    import bpy
    gt = ground_truth_scene
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    near, far = float(gt.depth.min()), float(gt.depth.max())
    disparity, near, far = maps.depth_to_disparity(gt.depth, near, far)
    rotation = gt.matrix_world[:3, :3]
    normal_camera = gt.normal @ rotation          # world -> camera: R^T n for each row vector
    lotus_normals = reference_math.blender_camera_to_lotus(normal_camera)    # what the model outputs
    stored = maps.normals_to_normal_map(maps.lotus_to_blender_camera(lotus_normals), "OPENGL")

    photo = float_image("gt_photo", gt.combined[..., :3])
    depth = float_image("gt_photo_depth", disparity, "disparity")
    normal = float_image("gt_photo_normal", stored, "normal")
    camera_data = bpy.data.cameras.new("gt_true_camera")
    camera_data.lens, camera_data.sensor_width, camera_data.sensor_fit = gt.lens, gt.sensor_width, gt.sensor_fit
    true_camera = bpy.data.objects.new("gt_true_camera", camera_data)
    true_camera.matrix_world = gt.matrix_world.T.tolist()
    bpy.context.scene.camera = true_camera
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, near=near, depth_range=far - near,
                                             focal_source="SCENE", refine=False)
    width, height = gt.resolution
    return gt, obj, camera, main_mesh(evaluated_mesh_arrays(obj), width * height)   # without the layer behind


def test_mesh_lands_on_the_true_surfaces(built_from_ground_truth):
    gt, obj, camera, mesh = built_from_ground_truth
    width, height = gt.resolution
    assert camera.data.lens == pytest.approx(gt.lens)
    assert np.allclose(np.array(camera.matrix_world), gt.matrix_world, atol=1e-5)
    assert len(mesh["co"]) == width * height and len(mesh["loop_start"]) < (width - 1) * (height - 1)
    intr = geometry.intrinsics_from_lens(gt.lens, gt.sensor_width, width, height, gt.sensor_fit)
    rows, cols = vertex_pixels(mesh["co"], intr, grid_order=True)
    world = reference_math.camera_to_world_points(mesh["co"], np.array(obj.matrix_world))
    truth = reference_math.camera_to_world_points(geometry.unproject(gt.depth, intr), gt.matrix_world)[rows, cols]
    error = np.linalg.norm(world - truth, axis=-1)
    subject = gt.subject_mask[rows, cols]
    subject_distance = float(np.median(gt.depth[gt.subject_mask]))
    assert np.median(error[subject]) <= 0.01 * subject_distance
    assert np.median(error) <= 0.01 * subject_distance
    # Tearing: no face joins the subjects to the wall behind them.
    labels = gt.object_index[rows, cols]
    corner_labels = labels[mesh["corner_verts"]]
    face_of_corner = np.repeat(np.arange(len(mesh["loop_start"])), mesh["loop_total"])
    touches_wall = np.zeros(len(mesh["loop_start"]), bool)
    touches_subject = np.zeros(len(mesh["loop_start"]), bool)
    np.logical_or.at(touches_wall, face_of_corner, corner_labels == _index("gt_wall"))
    np.logical_or.at(touches_subject, face_of_corner, np.isin(corner_labels, [_index("gt_sphere"), _index("gt_box")]))
    assert not (touches_wall & touches_subject).any()
    assert touches_subject.sum() > 500


def test_normals_match_the_normal_pass(built_from_ground_truth):
    gt, obj, _camera, mesh = built_from_ground_truth
    width, height = gt.resolution
    intr = geometry.intrinsics_from_lens(gt.lens, gt.sensor_width, width, height, gt.sensor_fit)
    rows, cols = vertex_pixels(mesh["co"], intr, grid_order=True)
    rotation = np.array(obj.matrix_world)[:3, :3]
    corner = mesh["corner_verts"]
    world_normals = reference_math.camera_to_world(mesh["corner_normals"], rotation)
    truth = gt.normal[rows[corner], cols[corner]]
    angle = np.degrees(np.arccos(np.clip(np.sum(world_normals * truth, axis=-1), -1.0, 1.0)))
    assert np.median(angle) <= 1.0
    # Independent of the normal image: flat faces built from depth alone face the same way as the
    # Normal pass says (this fixes the sign conventions of the whole chain).
    face_normals = reference_math.camera_to_world(mesh["polygon_normals"], rotation)
    first_corner = corner[mesh["loop_start"]]
    labels = gt.object_index[rows[first_corner], cols[first_corner]]
    flat = np.isin(labels, [_index("gt_ground"), _index("gt_wall")])
    face_truth = gt.normal[rows[first_corner], cols[first_corner]]
    face_angle = np.degrees(np.arccos(np.clip(np.sum(face_normals * face_truth, axis=-1), -1.0, 1.0)))
    assert np.median(face_angle[flat]) <= 2.0
    # And the Lotus convention itself: a floor seen by a camera looking down points up and
    # toward the camera, with X pointing left in Lotus space for a surface turned to the right.
    ground = gt.object_index == _index("gt_ground")
    lotus = reference_math.blender_camera_to_lotus(gt.normal @ gt.matrix_world[:3, :3])
    assert np.median(lotus[ground][:, 1]) > 0.5 and np.median(lotus[ground][:, 2]) > 0.1
    sphere_rows, sphere_cols = np.nonzero(gt.object_index == _index("gt_sphere"))
    left_half = sphere_cols < np.median(sphere_cols)
    assert np.median(lotus[sphere_rows[left_half], sphere_cols[left_half], 0]) > 0.15      # +X is left
    assert np.median(lotus[sphere_rows[~left_half], sphere_cols[~left_half], 0]) < -0.15
    assert math.isclose(float(np.median(gt.normal[ground][:, 2])), 1.0, abs_tol=1e-3)
