"""Refine with Normals measured on model-like maps (issue 14, section 3): shared by the tests and
benchmarks/bench_refine.py (numpy only).

One case: true planar depth and camera-space normals (Blender convention) of a view, degraded by
tests/lotus_errors.py at a severity and seed, turned into what the 2.5D builder reads (a Lotus
disparity map, near = 1, normalised between the degraded map's own nearest and farthest points),
then meshed the way the builder meshes it (core.camera_estimate: the shift estimated with the
normals for the known focal, as the Automatic Depth Range does, or given), once as it is and once
refined (core.camera_estimate.refine_map, the builder's call). Both meshes use the artist's Near
(the true nearest distance): no rescaling to the truth.

Measured per mesh, against the true surfaces: the median angle between the mesh's face normals
and the true ones (faces the truth does not tear), and the median 3D distance of its vertices
from the true points relative to the median true depth; and the Depth Range the refined map asks
for against the unrefined one's.
"""

from __future__ import annotations

import numpy as np

from lotus_blender.core import camera_estimate, geometry, maps
from tests import lotus_errors, synthetic_scenes


def lotus_disparity(depth):
    """Depth -> the disparity map the builder reads (near = 1 at the map's nearest point)."""
    disparity, _near, _far = maps.depth_to_disparity(depth)
    return disparity.astype(np.float64)


def mesh_figures(mesh_depth, true_depth, intrinsics, tear_threshold=0.05):
    """(median face-normal error in degrees, median 3D error / median true depth)."""
    points = geometry.unproject(mesh_depth, intrinsics)
    truth = geometry.unproject(true_depth, intrinsics)
    kept = ~geometry.torn_faces(true_depth, tear_threshold)
    cosine = np.sum(synthetic_scenes.face_normals(points) * synthetic_scenes.face_normals(truth), axis=-1)
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))[kept]
    distance = np.linalg.norm(points - truth, axis=-1) / np.median(true_depth)
    return float(np.median(angle)), float(np.median(distance))


def refine_case(true_depth, true_normals, focal_px, severity, seed, *, depth_range=None, variants=None,
                oracles=True):
    """One case (see the module text). depth_range None: automatic (the estimated shift, as the
    builder's default; the true range when the estimate is not confident). variants: name ->
    function of the refined mesh's change of log-depth (H, W) returning another change: each
    variant mesh's figures are added (the benchmark's trade-off table). oracles False: without the
    two oracles' figures (faster). Returns a dict."""
    true_depth = np.asarray(true_depth, np.float64)
    height, width = true_depth.shape
    degraded = lotus_errors.degrade(true_depth, true_normals, severity, seed)
    values = lotus_disparity(degraded.depth)
    normals = degraded.normals
    near = float(true_depth.min())
    if depth_range is None:
        estimate = camera_estimate.estimate_camera(values, normals, "disparity", focal_px=focal_px)
        if estimate.shift_is_confident:
            depth_range = camera_estimate.depth_range_for_shift(estimate.shift, near)
        else:
            depth_range = float(true_depth.max()) - near
    shift = near / depth_range
    plain = camera_estimate.map_to_depth(values, "disparity", shift, near)
    refined_values, range_ratio = camera_estimate.refine_map(values, normals, "disparity", focal_px, shift)
    refined_range = near * range_ratio
    refined = maps.disparity_to_depth(refined_values, near, near + refined_range).astype(np.float64)
    intrinsics = geometry.Intrinsics(width, height, focal_px)
    plain_normal, plain_3d = mesh_figures(plain, true_depth, intrinsics)
    refined_normal, refined_3d = mesh_figures(refined, true_depth, intrinsics)
    case = {"severity": severity, "seed": seed,
            "normal_deg": [round(plain_normal, 3), round(refined_normal, 3)],
            "error_3d": [round(plain_3d, 7), round(refined_3d, 7)],
            # The unrefined mesh's median signed depth error (log): near the median absolute one,
            # the error is a bias (on exact maps: the noisy extremes the map was normalised at).
            "plain_signed_log_error": round(float(np.median(np.log(plain / true_depth))), 7),
            "depth_range_change": round(refined_range / depth_range - 1.0, 5)}
    if oracles:
        _oracle_normal, oracle_3d = mesh_figures(oracle_high_pass(plain, true_depth), true_depth, intrinsics)
        denoised = oracle_denoised(true_depth, severity, seed, degraded.depth, shift, near)
        denoised_normal, denoised_3d = mesh_figures(denoised, true_depth, intrinsics)
        case.update({"oracle_error_3d": round(oracle_3d, 7), "denoised_normal_deg": round(denoised_normal, 3),
                     "denoised_error_3d": round(denoised_3d, 7)})
    change = np.log(refined / plain)
    for name, variant in (variants or {}).items():
        figures = mesh_figures(plain * np.exp(variant(change)), true_depth, intrinsics)
        case[name] = [round(figures[0], 3), round(figures[1], 7)]
    return case


def oracle_denoised(true_depth, severity, seed, degraded_depth, shift, near):
    """The mesh of the same degraded map without its white noise (the same smooth errors, the
    same normalisation): what a perfect denoiser would give. Its median 3D error moves either way
    by about 1 % against the noisy map's: the error is smooth, so the 3D error's distribution has
    heaps (surfaces where it is nearly constant), and the noise's spread shifts where the median
    falls among them. No refinement, however right, is "never worse" at that level."""
    clean = lotus_errors.degrade_depth(true_depth, severity, seed, noise=False)
    values, _near, _far = maps.depth_to_disparity(clean, float(degraded_depth.min()), float(degraded_depth.max()))
    return camera_estimate.map_to_depth(values.astype(np.float64), "disparity", shift, near)


def oracle_high_pass(depth, true_depth):
    """The best any refinement that keeps the depth's long wavelengths could do: the depth with
    the high-passed part of its own error removed (core.depth_refine's high-pass, the truth's
    detail put back exactly). Its median 3D error is not always below the depth's: where the
    smooth warp and the smeared detail happened to cancel, undoing the smear alone moves the
    surface away from the truth."""
    from lotus_blender.core import depth_refine
    height, width = true_depth.shape
    error = np.log(true_depth) - np.log(depth)
    lock = depth_refine.default_prior(width, height) * depth_refine.LOW_LOCK
    detail = error - depth_refine._low_pass(error, np.ones(error.shape, bool), lock)
    return depth * np.exp(detail - np.median(detail))


def cycles_view(truth):
    """(depth, camera normals, focal px) of a tests.ground_truth.GroundTruth (sensor fit AUTO)."""
    width, height = truth.resolution
    focal = truth.lens / truth.sensor_width * max(width, height)
    return truth.depth.astype(np.float64), truth.camera_normals.astype(np.float64), focal


# ---- through the real builder (needs bpy and the installed add-on) ----------------------------

def build(scene25d, truth, maps_in, name, refine, depth_range=None):
    """build_photo_scene as the panel does it (depth_range None: the automatic Depth Range; refine
    on or off) on maps_in = (disparity (H, W), Blender camera normals), seen through the true
    camera of truth (a GroundTruth), with the artist's Near = the true nearest distance.
    Returns (mesh object, camera, the Depth Range the mesh uses)."""
    import bpy
    from tests import blender_env
    from tests.test_scene25d import float_image
    values, normals = maps_in
    photo = float_image(name, truth.combined[..., :3])
    depth = float_image(name + "_depth", values, "disparity")
    normal = float_image(name + "_normal", maps.normals_to_normal_map(normals, "OPENGL"), "normal")
    camera_data = bpy.data.cameras.new(name + "_true_camera")
    camera_data.lens, camera_data.sensor_width = truth.lens, truth.sensor_width
    true_camera = bpy.data.objects.new(name + "_true_camera", camera_data)
    true_camera.matrix_world = truth.matrix_world.T.tolist()
    bpy.context.scene.camera = true_camera
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, near=float(truth.depth.min()),
                                             depth_range=depth_range, focal_source="SCENE", refine=refine)
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]
    used_range = blender_env.compat().get_modifier_input(
        modifier, scene25d.geonodes.input_identifier(modifier.node_group, "Depth Range"))
    return obj, camera, float(used_range)


def built_depth(obj, camera, shape):
    """(the built mesh's planar depth per pixel, NaN where no vertex; the camera's intrinsics).
    The mesh proper only (its first vertices; the layer behind the tears, pushed back, is not
    the surface the photo shows), one vertex per pixel read in the grid's order: the near side of
    a tear reaches more than half a pixel toward the far pixel (geonodes.LIP_PX), so projecting
    its vertices would give two vertices one pixel and none the next."""
    from tests.test_scene25d import evaluated_mesh_arrays, main_mesh, vertex_pixels
    height, width = shape
    mesh = main_mesh(evaluated_mesh_arrays(obj), width * height)
    intrinsics = geometry.intrinsics_from_lens(camera.data.lens, camera.data.sensor_width, width, height)
    rows, cols = vertex_pixels(mesh["co"], intrinsics, grid_order=len(mesh["co"]) == width * height)
    depth = np.full(shape, np.nan)
    depth[rows, cols] = -mesh["co"][:, 2]
    return depth, intrinsics


def builder_case(scene25d, truth, severity, seed, depth_range=None, tag="rb"):
    """Refined and unrefined builds of one degraded view (see build): a dict like refine_case's."""
    true_depth, true_normals, _focal = cycles_view(truth)
    degraded = lotus_errors.degrade(true_depth, true_normals, severity, seed)
    maps_in = lotus_disparity(degraded.depth), degraded.normals
    figures = {}
    for refine in (False, True):
        obj, camera, used_range = build(scene25d, truth, maps_in, f"{tag}_{severity}_{seed}_{int(refine)}", refine,
                                        depth_range)
        mesh_depth, intrinsics = built_depth(obj, camera, true_depth.shape)
        figures[refine] = mesh_figures(mesh_depth, true_depth, intrinsics) + (used_range, bool(obj["lotus_refined"]))
        range_source = camera.get("lotus_depth_range_source", "")
    return {"severity": severity, "seed": seed, "depth_range": "automatic" if depth_range is None else "given",
            "range_source": range_source,
            "refined": figures[True][3] and not figures[False][3],
            "normal_deg": [round(figures[False][0], 3), round(figures[True][0], 3)],
            "error_3d": [round(figures[False][1], 5), round(figures[True][1], 5)],
            "depth_range_change": round(figures[True][2] / figures[False][2] - 1.0, 5)}
