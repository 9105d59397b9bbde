"""Temporal stabilization measured on ground truth: a Cycles-rendered shot (a sphere crossing the
frame, a slowly trucking camera) whose true depth is turned into what Lotus outputs per frame: the
error model of tests/lotus_errors.py at severities 0, 0.5 and 1 with errors drifting from frame to
frame, then Lotus disparity with a different random scale and shift per frame, the per-frame
ambiguity of an affine-invariant model (tests/synthetic_scenes.lotus_disparity).

Prints and checks, before and after stabilization and for the best per-frame affine fit to the
truth (the oracle): flicker (mean frame-to-frame change of depth, relative to the true depth, on
pixels of world-static surfaces) and the error against the true depth after one affine fit for the
whole shot. The numpy shots of tests/stabilize_cases.py cover the harder cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lotus_blender.core import temporal
from tests import lotus_errors, synthetic_scenes

FRAMES = 24
RESOLUTION = (96, 64)
SPHERE_PASS_INDEX = 1  # tests/ground_truth.py OBJECTS order: gt_sphere first


def _render_shot():
    """True planar depth and object index per frame."""
    from mathutils import Vector

    from tests import ground_truth
    depths, indices = [], []
    with ground_truth.GroundTruthScene("lotus_temporal_gt") as shot:
        scene = shot.scene
        scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
        scene.cycles.samples = 1
        camera, sphere = shot.camera, shot.objects["gt_sphere"]
        start = Vector(ground_truth.CAMERA_LOCATION)
        for frame in range(FRAMES):
            t = frame / (FRAMES - 1)
            # The camera trucks 0.5 m sideways and keeps looking at the scene's centre.
            location = start + Vector((-0.25 + 0.5 * t, 0.0, 0.0))
            camera.location = location
            camera.rotation_euler = ground_truth._look_at_matrix(
                location, ground_truth.CAMERA_TARGET).to_euler()
            sphere.location = (-2.2 + 4.0 * t, 0.0, 0.8 + 0.3 * math.sin(math.pi * t))
            truth = shot.render()
            depths.append(truth.depth)
            indices.append(truth.object_index)
    return np.stack(depths), np.stack(indices)


def shot_metrics(estimates, true_depth, static):
    """(flicker, error): one affine fit of all frames' disparity to the true disparity, then
    depth = 1 / disparity. Flicker: mean |change between frames| / true depth on static pixels;
    error: mean absolute relative depth error."""
    a = np.concatenate([e.ravel() for e in estimates]).astype(np.float64)
    b = (1.0 / true_depth).ravel()
    scale, shift = np.polyfit(a, b, 1)
    depth = 1.0 / np.maximum(np.stack(estimates) * scale + shift, 1e-3)
    error = float(np.mean(np.abs(depth - true_depth) / true_depth))
    change = np.abs(np.diff(depth, axis=0)) / true_depth[:-1]
    return float(change[static].mean()), error


@pytest.fixture(scope="module")
def shot(blender_addon):
    return _render_shot()


@pytest.mark.parametrize("severity", lotus_errors.SEVERITIES)
def test_stabilization_on_a_rendered_shot(shot, severity):
    true_depth, index = shot
    assert true_depth.shape == (FRAMES, RESOLUTION[1], RESOLUTION[0])
    moving = index == SPHERE_PASS_INDEX
    assert moving[0].any() and moving[-1].any()
    assert not np.array_equal(moving[0], moving[-1])   # the sphere really crosses the frame
    # World-static pixels of a pair: no moving object in either frame.
    static = ~(moving[:-1] | moving[1:])
    true_flicker, _ = shot_metrics(list(1.0 / true_depth), true_depth, static)
    for seed in range(2):
        rng = np.random.default_rng([7, seed])
        predicted = [synthetic_scenes.lotus_disparity(
            lotus_errors.degrade_depth(depth, severity, seed, frame=frame), rng).astype(np.float32)
            for frame, depth in enumerate(true_depth)]
        oracle = []
        for values, depth in zip(predicted, true_depth):
            scale, shift = np.polyfit(values.ravel().astype(np.float64), 1.0 / depth.ravel(), 1)
            oracle.append(values * scale + shift)
        stabilized, fits = temporal.stabilize_sequence(predicted)
        flicker_before, error_before = shot_metrics(predicted, true_depth, static)
        flicker_after, error_after = shot_metrics(stabilized, true_depth, static)
        flicker_oracle, error_oracle = shot_metrics(oracle, true_depth, static)
        print(f"\ntemporal ground truth ({FRAMES} frames {RESOLUTION[0]}x{RESOLUTION[1]}, severity "
              f"{severity}, seed {seed}): flicker before {flicker_before:.4f}, after "
              f"{flicker_after:.4f}, oracle {flicker_oracle:.4f} (true depth itself "
              f"{true_flicker:.4f}); whole-shot affine error (AbsRel) before {error_before:.4f}, "
              f"after {error_after:.4f}, oracle {error_oracle:.4f}; inliers min "
              f"{min(f.inliers for f in fits[1:]):.2f}; statuses "
              f"{''.join(f.status[0] for f in fits)}")
        # 3x less flicker, or down to what the model's own per-frame errors leave.
        assert flicker_after <= max(flicker_before / 3, 1.1 * flicker_oracle)
        assert error_after <= error_before
