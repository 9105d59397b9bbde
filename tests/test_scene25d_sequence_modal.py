"""Build 2.5D Scene on a sequence from the UI: the layer behind the tears is filled one frame per
timer tick (scene25d_sequence.BehindSequenceFill, which the operator's modal run drives; headless
bpy has no window to send it events, so the stepping is tested here directly), then the mesh is
built in one step; ESC stops it with nothing built and nothing written left."""

import os
import sys
import time

import numpy as np
import pytest

from tests.test_scene25d import live_module, tracked_datablocks  # noqa: F401
from tests.test_scene25d_sequence import FRAMES, NEAR, RANGE, fail_third_write, mesh_depths, shot  # noqa: F401

OPTIONS = dict(near=NEAR, depth_range=RANGE, focal_35mm=35.0, tear_threshold=0.05, fill_behind=True)


def datablock_names():
    import bpy
    return {kind: {block.name for block in getattr(bpy.data, kind)}
            for kind in ("objects", "meshes", "cameras", "materials", "node_groups", "images", "scenes")}


def deferred_fill(scene25d, photo, depth, normal, **options):
    """What the operator's invoke does on a sequence: the build, deferred until the frames are filled."""
    import bpy
    scene25d_behind = sys.modules[scene25d.__package__ + ".scene25d_behind"]
    with pytest.raises(scene25d_behind.FillFramesFirst) as pending:
        scene25d.build_photo_scene(bpy.context, photo, depth, normal, behind_fill=scene25d_behind.DEFER_FILL,
                                   **{**OPTIONS, **options})
    return pending.value.fill


def test_frames_filled_tick_by_tick_then_built_like_execute(blender_addon, shot):
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    outputs = live_module(blender_addon, "blender.outputs")
    photo, depth, normal, folder = shot
    files_before, blocks_before = set(os.listdir(folder)), datablock_names()
    bpy.context.scene.frame_set(3)      # the camera's frame: 1003
    fill = deferred_fill(scene25d, photo, depth, normal)
    # Deferred: nothing built, nothing written yet.
    assert (fill.total, fill.done, fill.finished) == (len(FRAMES), 0, False)
    assert datablock_names() == blocks_before and set(os.listdir(folder)) == files_before

    # Ticks: each returns at once; a frame's fill runs in the background and counts when written.
    bpy.context.scene.frame_set(1)      # the artist scrubs meanwhile: the camera's frame stays 1003
    progress, ticks = [], 0
    while not fill.finished:
        done = fill.step(wait=False)
        ticks += 1
        if not progress or done != progress[-1]:
            progress.append(done)
        assert datablock_names() == blocks_before       # between ticks nothing of the fill in bpy.data
        time.sleep(0.01)
        assert ticks < 10000
    assert progress == [0, 1, 2, 3, 4] and ticks > len(FRAMES)
    assert fill.step(wait=False) == len(FRAMES)     # finished: a late tick changes nothing
    written = sorted(set(os.listdir(folder)) - files_before)
    assert written == sorted([f"shot_behind_{frame}.exr" for frame in FRAMES]
                             + [f"shot_fill_{frame}.png" for frame in FRAMES])

    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, frame=3, behind_fill=fill,
                                             **OPTIONS)
    assert fill.used
    assert "camera from frame 1003" in camera["lotus_camera_report"]
    assert sorted(set(os.listdir(folder)) - files_before) == written     # the build wrote no more
    behind = bpy.data.images["shot_behind"]
    assert os.path.basename(behind.filepath) == "shot_behind_1001.exr"
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]
    assert obj["lotus_fill_opening"] == pytest.approx(fill.opening) and fill.opening > 0
    ticked = {"lens": camera.data.lens, "opening": obj["lotus_fill_opening"],
              "depths": mesh_depths(obj, 2)[0], "counts": [mesh_depths(obj, f)[1] for f in (1, 3)],
              "fill material": modifier.node_group is not None and len(obj.data.materials)}

    # execute's build of the same (all in one go, files of its own beside): the same scene.
    bpy.context.scene.frame_set(3)
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, **OPTIONS)
    assert camera.data.lens == ticked["lens"] and obj["lotus_fill_opening"] == pytest.approx(ticked["opening"])
    assert np.array_equal(mesh_depths(obj, 2)[0], ticked["depths"])
    assert [mesh_depths(obj, f)[1] for f in (1, 3)] == ticked["counts"]
    assert len(obj.data.materials) == ticked["fill material"]
    for frame in FRAMES:
        assert np.array_equal(outputs.read_map(str(folder / f"shot_behind_{frame}.exr")),
                              outputs.read_map(str(folder / f"shot_behind_001_{frame}.exr")))
        assert (folder / f"shot_fill_{frame}.png").read_bytes() == (folder / f"shot_fill_001_{frame}.png").read_bytes()
    bpy.context.scene.frame_set(1)


def test_cancel_after_some_frames_leaves_nothing(blender_addon, shot):
    """ESC after two frames (or while one is computed): their files go, nothing was built."""
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    photo, depth, normal, folder = shot
    files_before, blocks_before = set(os.listdir(folder)), datablock_names()
    fill = deferred_fill(scene25d, photo, depth, normal)
    assert [fill.step() for _ in range(2)] == [1, 2]
    assert len(set(os.listdir(folder)) - files_before) == 4     # behind and fill of two frames
    fill.cancel()
    assert set(os.listdir(folder)) == files_before and datablock_names() == blocks_before
    assert fill.step(wait=False) == 2 and set(os.listdir(folder)) == files_before    # a late tick: nothing

    fill = deferred_fill(scene25d, photo, depth, normal)
    fill.step(wait=False)       # ESC while a frame is computed in the background
    fill.cancel()
    time.sleep(0.05)
    assert set(os.listdir(folder)) == files_before

    # A fill for other inputs (the scene camera's focal changed meanwhile): the build fills the
    # frames again itself, and says so through .used (the operator then removes the fill's files).
    fill = deferred_fill(scene25d, photo, depth, normal)
    while not fill.finished:
        fill.step()
    obj, _camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, behind_fill=fill,
                                              **{**OPTIONS, "near": 3.0})
    assert not fill.used and os.path.basename(bpy.data.images["shot_behind"].filepath) == "shot_behind_001_1001.exr"
    fill.cancel()
    assert sorted(set(os.listdir(folder)) - files_before) == sorted(
        [f"shot_behind_001_{frame}.exr" for frame in FRAMES] + [f"shot_fill_001_{frame}.png" for frame in FRAMES])


def test_a_failed_tick_removes_what_was_written(blender_addon, shot, monkeypatch):
    import bpy  # noqa: F401
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    files = live_module(blender_addon, "blender.files")
    photo, depth, normal, folder = shot
    files_before = set(os.listdir(folder))
    fill = deferred_fill(scene25d, photo, depth, normal)
    fail_third_write(monkeypatch, files)
    with pytest.raises(files.OutputError, match="shot_behind_1003.exr"):
        while not fill.finished:
            fill.step(wait=False)
            time.sleep(0.01)
    assert set(os.listdir(folder)) == files_before


def test_redo_takes_the_modal_runs_frames(blender_addon, shot):
    """The redo panel after a modal run (execute again, same sequence): its frames' files are taken
    as they are when the options give the same fill (no 4-minute refill for a Material change), and
    filled again when they do not (Near changed)."""
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    scene25d_ui = live_module(blender_addon, "blender.builders.scene25d_ui")
    photo, depth, normal, folder = shot
    files_before = set(os.listdir(folder))
    # The modal run's fill, from the operator's own (single-precision) property values.
    fill = deferred_fill(scene25d, photo, depth, normal, tear_threshold=float(np.float32(0.05)),
                         move_range=float(np.float32(scene25d.DEFAULT_MOVE_RANGE)))
    while not fill.finished:
        fill.step()
    scene25d_ui.FILL_RUN.last = fill
    try:
        options = dict(photo=photo.name, focal_source='MANUAL', focal_35mm=35.0, near=NEAR, auto_depth_range=False,
                       depth_range=RANGE, tear_threshold=0.05, fill_behind=True)
        for material in ('EMISSION', 'SHADED'):
            assert bpy.ops.lotus.build_photo_scene(material=material, **options) == {'FINISHED'}
            assert os.path.basename(bpy.data.images["shot_behind"].filepath) == "shot_behind_1001.exr"
            assert len(set(os.listdir(folder)) - files_before) == 2 * len(FRAMES)     # no new files
        assert bpy.ops.lotus.build_photo_scene(**{**options, "near": 3.0}) == {'FINISHED'}
        assert os.path.basename(bpy.data.images["shot_behind"].filepath) == "shot_behind_001_1001.exr"
    finally:
        scene25d_ui.FILL_RUN.last = None


def test_opening_another_file_stops_the_run(blender_addon, shot):
    """The load_pre handler: a running fill stops and its files go (the operator's next tick ends it)."""
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    scene25d_ui = live_module(blender_addon, "blender.builders.scene25d_ui")
    photo, depth, normal, folder = shot
    files_before = set(os.listdir(folder))
    fill = deferred_fill(scene25d, photo, depth, normal)
    fill.step()
    scene25d_ui.FILL_RUN.start(fill)
    assert "frame 2 of 4" in scene25d_ui.FILL_RUN.text() and set(os.listdir(folder)) != files_before
    scene25d_ui._file_loading(None)
    assert scene25d_ui.FILL_RUN.fill is None and fill.cancelled and set(os.listdir(folder)) == files_before
