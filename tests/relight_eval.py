"""Relight Setup measured on model-like maps (issue 14, section 5): shared by tests/test_relight.py
and benchmarks/bench_refine.py. Needs bpy and the installed add-on.

One scene of tests.ground_truth.SCENES is rendered twice with Cycles: under its own sun (the photo:
the Combined pass, lighting baked in) and under a new sun (the truth). Its depth and normals,
degraded by tests/lotus_errors.py at a severity, are what Relight Setup gets, with the true camera,
Near and Depth Range; the relit render under the same new sun is compared with the truth (PSNR of
the display-encoded colours, over the scene's subjects and over the whole frame), for each Albedo
mode: Photo (the photo as it is) and Remove Shading (core.shading's estimate divided out).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from lotus_blender.core import maps, shading
from tests import ground_truth, lotus_errors

NEW_SUN_DIRECTION = (0.45, 0.55, -0.7)   # world direction the new sun shines in: from upper left
NEW_SUN_ENERGY = 3.0
SAMPLES = 16
ALBEDOS = ("PHOTO", "DELIGHT")


def to_display(linear):
    """sRGB encoding (the Standard view transform): errors weighted as the artist sees them."""
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def psnr(a, b, mask=None):
    mask = np.ones(a.shape[:2], bool) if mask is None else mask
    error = float(np.mean((a[mask] - b[mask]) ** 2))
    return 10.0 * math.log10(1.0 / max(error, 1e-12))


def sun_rotation():
    from mathutils import Vector
    return Vector(NEW_SUN_DIRECTION).to_track_quat('-Z', 'Y')


def match_render_settings(scene, samples=SAMPLES):
    """The ground-truth scene's sampling, so both renders are made alike."""
    scene.cycles.samples = samples
    scene.cycles.filter_width = 0.01
    scene.cycles.seed = 1
    scene.cycles.max_bounces = 4
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.render.threads_mode = 'FIXED'
    scene.render.threads = 2


def render_pair(name, resolution=ground_truth.RESOLUTION, samples=SAMPLES):
    """(photo GroundTruth under the scene's sun, truth GroundTruth under the new sun, ambient)."""
    spec = ground_truth.SCENES[name]
    with ground_truth.GroundTruthScene(f"lotus_relight_{name}", objects=spec.objects,
                                       camera_location=spec.camera_location, camera_target=spec.camera_target,
                                       lens=spec.lens, resolution=resolution, samples=samples,
                                       subjects=spec.subjects) as scene:
        photo = scene.render()
        scene.sun.rotation_euler = sun_rotation().to_euler()
        scene.sun.data.energy = NEW_SUN_ENERGY
        truth = scene.render()
        background = scene.scene.world.node_tree.nodes["Background"]
        ambient = float(background.inputs["Color"].default_value[1])
    return photo, truth, ambient


def relit_image(addon, photo_truth, depth, normals, albedo, ambient, tag, samples=SAMPLES):
    """Relight Setup on (photo, depth (H, W) planar, Blender camera normals) with the true camera
    in a scene of its own, lit by the new sun; returns the relit render (H, W, 3), linear."""
    import bpy
    from mathutils import Matrix
    relight = sys.modules[f"{addon}.blender.builders.relight"]
    common = sys.modules[f"{addon}.blender.builders.common"]
    preview_module = sys.modules[f"{addon}.blender.builders.relight_preview"]
    gt = photo_truth
    near, far = float(gt.depth.min()), float(gt.depth.max())
    disparity, _, _ = maps.depth_to_disparity(depth)
    photo = common.write_float_image(f"rl_{tag}", gt.combined[..., :3], non_color=False)
    depth_image = common.write_float_image(f"rl_{tag}_depth", disparity)
    depth_image["lotus_kind"], depth_image["lotus_source"] = "disparity", photo.name
    normal_image = common.write_float_image(f"rl_{tag}_normal", maps.normals_to_normal_map(normals, "OPENGL"))
    normal_image["lotus_kind"], normal_image["lotus_source"] = "normal", photo.name
    scene = bpy.data.scenes.new(f"rl_{tag}_scene")
    with bpy.context.temp_override(scene=scene):
        camera_data = bpy.data.cameras.new(f"rl_{tag}_scene_camera")
        camera_data.lens, camera_data.sensor_width = gt.lens, gt.sensor_width
        scene_camera = bpy.data.objects.new(f"rl_{tag}_scene_camera", camera_data)
        scene.collection.objects.link(scene_camera)
        scene_camera.matrix_world = Matrix(gt.matrix_world.tolist())
        scene.camera = scene_camera
        made = relight.build_relight_scene(bpy.context, photo, depth_image, normal_image, near=near,
                                           depth_range=far - near, focal_source="SCENE", albedo=albedo,
                                           light_rig=False, ambient=ambient, roughness=0.8)
        camera = made["camera"]
        sun = bpy.data.lights.new(f"rl_{tag}_sun", 'SUN')
        sun.energy = NEW_SUN_ENERGY
        sun.angle = math.radians(2.0)
        sun_object = bpy.data.objects.new(f"rl_{tag}_sun", sun)
        scene.collection.objects.link(sun_object)
        # The same light relative to the camera (the builder's camera is the true one here).
        to_relit = camera.matrix_world @ Matrix(gt.matrix_world.tolist()).inverted()
        sun_object.matrix_world = to_relit @ sun_rotation().to_matrix().to_4x4()
        match_render_settings(scene, samples)
        preview = preview_module.render_preview(bpy.context, f"rl_{tag}_preview", max_size=1000, samples=samples,
                                         quality='FULL')
    return common.read_pixels(preview)[..., :3]


def relight_cases(addon, name, severities=(0.0, 1.0), seeds=(0,), albedos=ALBEDOS, pair=None):
    """Relit PSNR (dB, display-encoded) per severity, seed and Albedo mode, against the truth."""
    photo_truth, truth, ambient = pair or render_pair(name)
    subject = photo_truth.subject_mask
    target = to_display(truth.combined[..., :3])
    unchanged = to_display(photo_truth.combined[..., :3])
    cases = []
    for severity in severities:
        for seed in seeds:
            degraded = lotus_errors.degrade(photo_truth.depth, photo_truth.camera_normals, severity, seed)
            for albedo in albedos:
                relit = relit_image(addon, photo_truth, degraded.depth, degraded.normals, albedo, ambient,
                                    f"{name}_{severity}_{seed}_{albedo}")
                shown = to_display(relit)
                cases.append({"scene": name, "severity": severity, "seed": seed, "albedo": albedo,
                              "psnr_subject_db": round(psnr(shown, target, subject), 2),
                              "psnr_frame_db": round(psnr(shown, target), 2),
                              "unrelit_subject_db": round(psnr(unchanged, target, subject), 2)})
    return cases


STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def albedo_psnr(albedo, truth, mask):
    """PSNR (dB) of an albedo estimate against Cycles' Diffuse Color pass over mask, after the one
    global gain that fits it best (an albedo's overall level is not known from a photo)."""
    estimate, target = albedo[mask].astype(np.float64), truth[mask].astype(np.float64)
    gain = float(np.sum(estimate * target) / max(float(np.sum(estimate * estimate)), 1e-12))
    return psnr(gain * estimate, target)


def albedo_cases(photo_truth, severities=(0.0, 1.0), seeds=(0, 1)):
    """Remove Shading's albedo (core.shading.estimate_albedo) on the photo (its Combined pass) with
    the normals degraded at each severity, against the Diffuse Color pass over the subjects: the
    strength it chose and its PSNR, and the PSNR at each strength of STRENGTHS (0: Albedo Photo)."""
    rgb = photo_truth.combined[..., :3]
    cases = []
    for severity in severities:
        for seed in seeds:
            normals = lotus_errors.degrade(photo_truth.depth, photo_truth.camera_normals, severity, seed).normals
            albedo, _divided = shading.estimate_albedo(rgb, normals)
            grid = {k: albedo_psnr(shading.estimate_albedo(rgb, normals, strength=k)[0], photo_truth.diffuse_color,
                                   photo_truth.subject_mask) for k in STRENGTHS}
            luminance = rgb @ shading.LUMINANCE
            fitted = shading.estimate_albedo(rgb, normals, strength=1.0)[1]
            cases.append({"severity": severity, "seed": seed,
                          "strength": round(shading.shading_strength(luminance, fitted), 3),
                          "chosen_db": round(albedo_psnr(albedo, photo_truth.diffuse_color, photo_truth.subject_mask), 3),
                          "grid_db": {str(k): round(v, 3) for k, v in grid.items()}})
    return cases
