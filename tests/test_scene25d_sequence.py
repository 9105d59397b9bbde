"""Build 2.5D Scene, Fill Behind and Relight Setup on image sequences and movies: the mesh, its
materials and the layer behind the tears follow the frames, live and after save and reopen."""

import json
import os
import sys

import numpy as np
import pytest

from lotus_blender.core import maps
from tests import blender_child, blender_env
from tests.test_scene25d import evaluated_mesh_arrays, live_module, tracked_datablocks  # noqa: F401

HEIGHT, WIDTH = 16, 24
FRAMES = (1001, 1002, 1003, 1004)       # numbered like a farm's shot: the scene starts at its frame 1
NEAR, RANGE = 2.0, 6.0


def frame_disparity(index):
    """Frame index's disparity: a far wall (0.2) and a box moving right and nearing frame by frame."""
    values = np.full((HEIGHT, WIDTH), 0.2, np.float32)
    values[4:12, 3 + 3 * index:11 + 3 * index] = 0.5 + 0.1 * index
    return values


def frame_photo(index):
    """Frame index's photo: red says the frame, green a ramp across."""
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    rgb[..., 0] = 0.2 * index
    rgb[..., 1] = np.linspace(0.0, 1.0, WIDTH)[None, :]
    rgb[..., 2] = 0.5
    return rgb


def save_png(rgba, path):
    """An 8-bit PNG of (H, W, 4) top-row-first values, written by Blender."""
    import bpy
    image = bpy.data.images.new("frame", rgba.shape[1], rgba.shape[0])
    image.pixels.foreach_set(rgba[::-1].ravel())
    image.filepath_raw = str(path)
    image.file_format = 'PNG'
    image.save()
    bpy.data.images.remove(image)


def fail_third_write(monkeypatch, files):
    """files.save_render fails on its third call (a full disk), as Blender's writer reports it."""
    real, calls = files.save_render, []

    def failing(image, path, scene):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("Error: Could not write image: No space left on device, '%s'" % path)
        real(image, path, scene)
    monkeypatch.setattr(files, "save_render", failing)


@pytest.fixture
def shot(blender_addon, tracked_datablocks, tmp_path):  # noqa: F811
    """A 4-frame photo sequence (8-bit PNGs) and its Lotus depth and normal results as Predict
    leaves them (blender.outputs: "<name>_depth_FFFF.exr" by Blender's writers, an image sequence
    tagged with its kind, source and frames)."""
    import bpy
    outputs = live_module(blender_addon, "blender.outputs")
    for index, frame in enumerate(FRAMES):
        rgba = np.ones((HEIGHT, WIDTH, 4), np.float32)
        rgba[..., :3] = frame_photo(index)
        save_png(rgba, tmp_path / f"shot_{frame}.png")
        outputs.write_map_files(frame_disparity(index), "disparity", WIDTH, HEIGHT,
                                {"exr": str(tmp_path / f"shot_depth_{frame}.exr")})
        normals = np.zeros((HEIGHT, WIDTH, 3), np.float32)
        normals[..., 2] = 1.0       # facing the camera (Lotus convention: +Z toward the camera)
        normals[..., 0] = 0.1 * index
        outputs.write_map_files(normals, "normal", WIDTH, HEIGHT,
                                {"exr": str(tmp_path / f"shot_normal_{frame}.exr")})
    photo = bpy.data.images.load(str(tmp_path / f"shot_{FRAMES[0]}.png"))
    photo.source = 'SEQUENCE'

    def result(kind, suffix):
        image = bpy.data.images.load(str(tmp_path / f"shot_{suffix}_{FRAMES[0]}.exr"), check_existing=False)
        image.name = f"shot_{suffix}"
        image.source = 'SEQUENCE'
        image.colorspace_settings.is_data = True
        image["lotus_kind"], image["lotus_source"] = kind, photo.name
        image["lotus_frames"] = [FRAMES[0], FRAMES[-1]]
        return image

    scene = bpy.context.scene
    saved = scene.frame_start, scene.frame_current
    scene.frame_start = 1
    scene.frame_set(1)
    yield photo, result("disparity", "depth"), result("normal", "normal"), tmp_path
    scene.frame_start = saved[0]
    scene.frame_set(saved[1])


def mesh_depths(obj, frame):
    """Planar depths of the 2.5D mesh's own vertices (one per pixel, the Grid's order) and the
    evaluated vertex count, at a scene frame."""
    import bpy
    bpy.context.scene.frame_set(frame)
    co = evaluated_mesh_arrays(obj)["co"]
    # The Grid's order: columns left to right, each bottom to top.
    depths = -co[:WIDTH * HEIGHT, 2].reshape(WIDTH, HEIGHT).T[::-1]
    return depths, len(co)


def metric(disparity, near=NEAR, depth_range=RANGE):
    return maps.disparity_to_depth(disparity.astype(np.float64), near, near + depth_range)


def frame_driven(obj):
    """Whether the mesh's Frame input is driven (by the scene's frame)."""
    modifier = obj.modifiers[0]
    key = next(item.identifier for item in modifier.node_group.interface.items_tree
               if item.item_type == 'SOCKET' and item.in_out == 'INPUT' and item.name == "Frame")
    drivers = obj.animation_data.drivers if obj.animation_data is not None else ()
    return any(key in fcurve.data_path for fcurve in drivers)


def updated_by_frame_change(frame):
    """The names of the IDs the depsgraph evaluates again when the scene goes to frame."""
    import bpy
    seen = set()

    def collect(_scene, depsgraph):
        seen.update(update.id.name for update in depsgraph.updates)
    bpy.app.handlers.frame_change_post.append(collect)
    try:
        bpy.context.scene.frame_set(frame)
    finally:
        bpy.app.handlers.frame_change_post.remove(collect)
    return seen


def image_users(material):
    return {node.image.name: node.image_user for node in material.node_tree.nodes
            if node.bl_idname == "ShaderNodeTexImage" and node.image is not None}


def evaluated_frames(material):
    """The frame each image texture of the material shows at the scene's frame (what Cycles reads:
    the evaluated copy's image user)."""
    import bpy
    evaluated = material.evaluated_get(bpy.context.evaluated_depsgraph_get())
    return {node.image.name: node.image_user.frame_current for node in evaluated.node_tree.nodes
            if node.bl_idname == "ShaderNodeTexImage" and node.image is not None}


def test_mesh_photo_and_fill_follow_the_frames(blender_addon, shot):
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    scene25d_behind = live_module(blender_addon, "blender.builders.scene25d_behind")
    geonodes = live_module(blender_addon, "blender.builders.geonodes")
    compat = live_module(blender_addon, "blender.compat")
    photo, depth, normal, folder = shot
    bpy.context.scene.frame_set(3)      # the camera comes from the frame shown: 1003
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, near=NEAR, depth_range=RANGE,
                                             focal_35mm=35.0, tear_threshold=0.05, fill_behind=True)
    assert obj.name == "shot" and camera.name == "shot_camera"      # the results' name, not "shot_1001"
    assert "4-frame sequence, camera from frame 1003" in camera["lotus_camera_report"]
    assert "not refined" in camera["lotus_camera_report"]
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]

    def live(name):
        return compat.get_modifier_input(modifier, geonodes.input_identifier(modifier.node_group, name))
    assert (live("Frame Start"), live("Frame Offset"), live("Frame Duration")) == (1, 1000, 4)
    assert live("Depth") == depth and live("Normal") == normal     # the sequences themselves
    assert frame_driven(obj) and obj.name in updated_by_frame_change(2)

    # The evaluated mesh is each frame's depth, exactly.
    depths = {}
    for scene_frame, index in ((1, 0), (3, 2)):
        depths[index], _ = mesh_depths(obj, scene_frame)
        assert np.abs(depths[index] - metric(frame_disparity(index))).max() < 1e-4
    assert np.abs(depths[0] - depths[2]).max() > 0.5
    # Before the first frame and past the last the sequence's ends hold.
    assert np.abs(mesh_depths(obj, 0)[0] - depths[0]).max() < 1e-6
    assert np.abs(mesh_depths(obj, 9)[0] - metric(frame_disparity(3))).max() < 1e-4

    # The layer behind the tears: per frame, written beside the depth's files as image sequences,
    # each frame the core's fill of that frame's depth.
    behind, fill_image = bpy.data.images["shot_behind"], bpy.data.images["shot_fill"]
    assert behind.source == fill_image.source == 'SEQUENCE'
    assert live("Behind") == behind and live("Fill Behind")
    # The largest share of any frame's edges too soft to fill behind (none: the frames' steps are
    # sharp), for the build's report as on a still.
    assert behind["lotus_soft_edges"] == 0.0 and "unfilled" not in camera["lotus_camera_report"]
    outputs = live_module(blender_addon, "blender.outputs")
    for index, frame in enumerate(FRAMES):
        assert (folder / f"shot_fill_{frame}.png").is_file()
        stored = outputs.read_map(str(folder / f"shot_behind_{frame}.exr"))
        expected, _colour, _opening = scene25d_behind.behind_arrays(frame_disparity(index), None, "disparity", NEAR, RANGE,
                                                              camera.data.lens, camera.data.sensor_width, 0.05, 0.1)
        assert np.abs(stored - expected[..., 0]).max() < 1e-6
    assert not [name for name in os.listdir(folder) if name.startswith(".")]   # no partial files
    counts = {frame: mesh_depths(obj, frame)[1] for frame in (1, 3)}
    assert min(counts.values()) > WIDTH * HEIGHT and counts[1] != counts[3]   # the layer behind, per frame

    # The photo and the filled photo follow the frames (the materials' image users).
    fill_material = compat.get_modifier_input(modifier, geonodes.input_identifier(modifier.node_group,
                                                                                 "Fill Material"))
    for material in (obj.data.materials[0], fill_material):
        for user in image_users(material).values():
            assert (user.frame_start, user.frame_offset, user.frame_duration) == (1, 1000, 4)
            assert user.use_auto_refresh and not user.use_cyclic
    for scene_frame, shown in ((1, 1001), (3, 1003), (7, 1004)):
        bpy.context.scene.frame_set(scene_frame)
        assert set(evaluated_frames(fill_material).values()) == {shown}

    # Live Mesh still works on a sequence: Near, Depth Range and Tear Threshold.
    geonodes.set_inputs(modifier, Near=3.0, Depth_Range=4.0, Tear_Threshold=0.5)
    for scene_frame, index in ((2, 1), (4, 3)):
        moved, count = mesh_depths(obj, scene_frame)
        assert np.abs(moved - metric(frame_disparity(index), 3.0, 4.0)).max() < 1e-4
    geonodes.set_inputs(modifier, Tear_Threshold=0.05)
    bpy.context.scene.frame_set(1)


def test_photo_follows_frames_in_a_cycles_render(blender_addon, shot):
    """What Cycles shows: the photo's frame at each scene frame (the red channel says which)."""
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    photo, depth, _normal, _folder = shot
    scene = bpy.context.scene
    obj, _camera = scene25d.build_photo_scene(bpy.context, photo, depth, near=NEAR, depth_range=RANGE,
                                              focal_35mm=35.0, tear_threshold=0.0)
    saved = scene.render.engine, scene.view_settings.view_transform, scene.render.filepath
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.view_settings.view_transform = 'Standard'
    reds = {}
    try:
        for scene_frame in (1, 3):
            scene.frame_set(scene_frame)
            bpy.ops.render.render()
            result = bpy.data.images["Render Result"]
            path = str(_folder / f"render_{scene_frame}.png")
            result.save_render(path, scene=scene)
            rendered = bpy.data.images.load(path, check_existing=False)
            pixels = np.empty(WIDTH * HEIGHT * 4, np.float32)
            rendered.pixels.foreach_get(pixels)
            bpy.data.images.remove(rendered)
            reds[scene_frame] = float(np.median(pixels.reshape(-1, 4)[:, 0]))
    finally:
        scene.render.engine, scene.view_settings.view_transform, scene.render.filepath = saved
        scene.frame_set(1)
    assert reds[1] == pytest.approx(0.0, abs=0.02) and reds[3] == pytest.approx(0.4, abs=0.02)
    assert obj.name == "shot"


def test_a_still_mesh_does_not_depend_on_the_frame(blender_addon, tracked_datablocks):  # noqa: F811
    """A still's 2.5D mesh has no frame driver: an animation (Camera Move) does not evaluate it again."""
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    photo = bpy.data.images.new("still.png", WIDTH, HEIGHT)
    depth = bpy.data.images.new("still_depth", WIDTH, HEIGHT, float_buffer=True)
    rgba = np.ones((HEIGHT, WIDTH, 4), np.float32)
    rgba[..., :3] = frame_disparity(1)[..., None]
    depth.pixels.foreach_set(rgba[::-1].ravel())
    depth["lotus_kind"] = "disparity"
    obj, _camera = scene25d.build_photo_scene(bpy.context, photo, depth, near=NEAR, depth_range=RANGE,
                                              focal_35mm=35.0)
    assert not frame_driven(obj)
    bpy.context.evaluated_depsgraph_get()
    assert obj.name not in updated_by_frame_change(4)
    assert np.abs(mesh_depths(obj, 5)[0] - metric(frame_disparity(1))).max() < 1e-4
    bpy.context.scene.frame_set(1)


def test_a_failed_frame_leaves_nothing(blender_addon, shot, monkeypatch):
    """A write that fails at the third frame: the build stops with the file's error, and neither
    the files of the frames before nor any object is left."""
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    files = live_module(blender_addon, "blender.files")
    photo, depth, _normal, folder = shot
    before = set(os.listdir(folder))
    fail_third_write(monkeypatch, files)
    with pytest.raises(files.OutputError, match="shot_behind_1003.exr"):
        scene25d.build_photo_scene(bpy.context, photo, depth, near=NEAR, depth_range=RANGE, focal_35mm=35.0)
    assert set(os.listdir(folder)) == before
    assert "shot" not in bpy.data.objects and "shot_behind" not in bpy.data.images


def test_displace_mode_follows_the_frames(blender_addon, shot):
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    photo, depth, _normal, _folder = shot
    obj, _camera = scene25d.build_photo_scene(bpy.context, photo, depth, mode="DISPLACE", near=NEAR,
                                              depth_range=RANGE, focal_35mm=35.0, tear_threshold=0.0)
    user = obj.modifiers[scene25d.MODIFIER_NAME].texture.image_user
    assert (user.frame_start, user.frame_offset, user.frame_duration, user.use_auto_refresh) == (1, 1000, 4, True)
    spans = []
    for scene_frame in (1, 4):
        bpy.context.scene.frame_set(scene_frame)
        co = evaluated_mesh_arrays(obj)["co"]
        spans.append(float(co[:, 2].max() - co[:, 2].min()))
    bpy.context.scene.frame_set(1)
    # The relief is linear in the map: the box's disparity 0.5 then 0.8 over the wall's 0.2.
    assert spans[1] / spans[0] == pytest.approx((0.8 - 0.2) / (0.5 - 0.2), rel=0.05)


def test_relight_on_a_sequence_follows_the_frames(blender_addon, shot):
    import bpy
    relight = live_module(blender_addon, "blender.builders.relight")
    photo, depth, normal, _folder = shot
    with pytest.raises(ValueError, match="still photo"):
        relight.build_relight_scene(bpy.context, photo, depth, normal, albedo="DELIGHT", near=NEAR,
                                    depth_range=RANGE, focal_35mm=35.0)
    assert "shot" not in bpy.data.objects        # nothing built
    built = relight.build_relight_scene(bpy.context, photo, depth, normal, near=NEAR, depth_range=RANGE,
                                        focal_35mm=35.0, light_rig=False)
    obj = built["object"]
    users = image_users(built["material"])
    assert set(users) == {photo.name, normal.name}    # the normals are used as they are (camera space)
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    shaded_fill = [scene25d.shade_fill(obj)]     # the layer behind the tears, lit like the mesh
    assert shaded_fill[0] is not None and shaded_fill[0]["lotus_material"] == "SHADED"
    assert set(image_users(shaded_fill[0])) == {photo.name, "shot_fill"}
    for material in [built["material"]] + shaded_fill:
        for user in image_users(material).values():
            assert (user.frame_start, user.frame_offset, user.frame_duration) == (1, 1000, 4)
            assert user.use_auto_refresh
    bpy.context.scene.frame_set(2)
    assert set(evaluated_frames(built["material"]).values()) == {1002}
    assert set(evaluated_frames(shaded_fill[0]).values()) == {1002}
    bpy.context.scene.frame_set(1)
    gap_fill = built["gap_fill"]
    assert np.abs(mesh_depths(gap_fill, 4)[0] - metric(frame_disparity(3))).max() < 1e-4
    bpy.context.scene.frame_set(1)


# A fresh Blender without the add-on: what a saved file holds must do on its own (the node group,
# the drivers without Python, the images' sequence settings).
_REOPEN = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import bpy
from tests.blender_child import report
args = json.loads(sys.argv[2])
bpy.ops.wm.open_mainfile(filepath=args["blend"])
obj = bpy.data.objects["shot"]
found = {}
for frame in args["frames"]:
    bpy.context.scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    material = obj.data.materials[0].evaluated_get(depsgraph)
    shown = [node.image_user.frame_current for node in material.node_tree.nodes
             if node.bl_idname == "ShaderNodeTexImage"]
    found[str(frame)] = {"z": co.reshape(-1, 3)[:, 2].tolist(), "shown": shown}
report(found)
"""


def test_sequence_scene_survives_save_and_reopen(blender_addon, shot, tmp_path):
    """Saved, then opened in a fresh Blender: the mesh still follows the frames, with the fill."""
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    photo, depth, normal, _folder = shot
    obj, _camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, near=NEAR, depth_range=RANGE,
                                              focal_35mm=35.0, fill_behind=True)
    expected = {}
    for frame in (2, 4):
        bpy.context.scene.frame_set(frame)
        expected[frame] = evaluated_mesh_arrays(obj)["co"][:, 2]
    bpy.context.scene.frame_set(1)
    blend = tmp_path / "saved" / "shot.blend"
    blend.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    (tmp_path / "user").mkdir()
    found = blender_child.result_of([sys.executable, "-c", _REOPEN, str(blender_env.REPO_ROOT),
                                     json.dumps({"blend": str(blend), "frames": [2, 4]})], tmp_path / "user",
                                    timeout=120)
    for frame in (2, 4):
        z = np.array(found[str(frame)]["z"], np.float32)
        assert len(z) == len(expected[frame]) and np.abs(z - expected[frame]).max() < 1e-5
        assert found[str(frame)]["shown"] == [1000 + frame]
    assert np.abs(np.array(found["2"]["z"][:WIDTH * HEIGHT]) - np.array(found["4"]["z"][:WIDTH * HEIGHT])).max() > 0.5


def test_movie_scene_follows_its_frames(blender_addon, tracked_datablocks, tmp_path):  # noqa: F811
    """A movie's results are numbered from 1: the mesh reads each frame's depth; the fill's
    colours come from the movie's own frames (decoded by Blender's movie reader)."""
    import bpy
    if not bpy.app.build_options.codec_ffmpeg:
        pytest.skip("this Blender build has no FFmpeg")
    from tests.blender_side import write_movie
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    outputs = live_module(blender_addon, "blender.outputs")
    pictures = [frame_photo(index) for index in range(3)]
    movie = bpy.data.images.load(write_movie(str(tmp_path / "take_"), pictures))
    assert movie.source == 'MOVIE'
    stem = os.path.splitext(os.path.basename(movie.filepath))[0]
    for index in range(3):
        outputs.write_map_files(frame_disparity(index), "disparity", WIDTH, HEIGHT,
                                {"exr": str(tmp_path / f"{stem}_depth_{index + 1:04d}.exr")})
    depth = bpy.data.images.load(str(tmp_path / f"{stem}_depth_0001.exr"), check_existing=False)
    depth.source = 'SEQUENCE'
    depth["lotus_kind"], depth["lotus_source"], depth["lotus_frames"] = "disparity", movie.name, [1, 3]
    scene = bpy.context.scene
    scene.frame_start = 1
    obj, _camera = scene25d.build_photo_scene(bpy.context, movie, depth, near=NEAR, depth_range=RANGE,
                                              focal_35mm=35.0, fill_behind=True)
    try:
        assert obj.name == stem
        for scene_frame in (1, 3):
            depths, _ = mesh_depths(obj, scene_frame)
            assert np.abs(depths - metric(frame_disparity(scene_frame - 1))).max() < 1e-4
        fill_image = bpy.data.images[f"{stem}_fill"]
        for index in range(3):
            path = tmp_path / f"{stem}_fill_{index + 1:04d}.png"
            stored = bpy.data.images.load(str(path), check_existing=False)
            stored.colorspace_settings.name = 'Non-Color'     # the values as stored (sRGB-encoded)
            pixels = np.empty(WIDTH * HEIGHT * 4, np.float32)
            stored.pixels.foreach_get(pixels)
            bpy.data.images.remove(stored)
            # Away from the band the fill is the frame itself (red says which frame).
            assert np.median(pixels.reshape(-1, 4)[:, 0]) == pytest.approx(0.2 * index, abs=0.03)
        assert fill_image.source == 'SEQUENCE'
        assert set(image_users(obj.data.materials[0]).values()).pop().frame_duration == 3
    finally:
        scene.frame_set(1)
        bpy.data.images.remove(movie)


def test_build_operator_finds_the_sequences_results(blender_addon, shot):
    """The panel's button on the photo sequence: its depth and normal results found by their tags."""
    import bpy
    photo, _depth, _normal, _folder = shot
    result = bpy.ops.lotus.build_photo_scene(photo=photo.name, focal_source='MANUAL', focal_35mm=35.0, near=NEAR,
                                             auto_depth_range=False, depth_range=RANGE)
    assert result == {'FINISHED'}
    obj = bpy.data.objects["shot"]
    assert obj.modifiers[0].node_group is not None and bpy.context.view_layer.objects.active == obj
    assert np.abs(mesh_depths(obj, 2)[0] - metric(frame_disparity(1))).max() < 1e-4
    # Again: the new build takes the place and names of the first; its files never overwrite the
    # first one's (which stay on disk, the artist's to keep or delete).
    assert bpy.ops.lotus.build_photo_scene(photo=photo.name, focal_source='MANUAL', focal_35mm=35.0, near=NEAR,
                                           auto_depth_range=False, depth_range=RANGE) == {'FINISHED'}
    assert [o.name for o in bpy.data.objects if o.name.startswith("shot")] in (["shot", "shot_camera"],
                                                                            ["shot_camera", "shot"])
    behind = bpy.data.images["shot_behind"]
    assert behind.users > 0 and "shot_behind.001" not in bpy.data.images
    assert os.path.basename(behind.filepath) == "shot_behind_001_1001.exr"
    assert (_folder / "shot_behind_1001.exr").is_file() and (_folder / "shot_behind_001_1004.exr").is_file()
    bpy.context.scene.frame_set(1)


def test_predicted_sequence_builds_a_scene_that_follows_it(lotus, tracked_datablocks, tmp_path):  # noqa: F811
    """End to end: Predict (tiny random-weight model) on a photo sequence, then Build 2.5D Scene on
    what it made: the mesh reads each frame's depth file, the fill sits beside them."""
    import bpy
    scene25d = live_module(lotus.name, "blender.builders.scene25d")
    for index in range(3):
        rgba = np.ones((HEIGHT, WIDTH, 4), np.float32)
        rgba[..., :3] = frame_photo(index)
        rgba[4:12, 3 + 5 * index:11 + 5 * index, :3] = 1.0     # something that moves
        save_png(rgba, tmp_path / f"clip_{index + 1:04d}.png")
    photo = bpy.data.images.load(str(tmp_path / "clip_0001.png"))
    photo.source = 'SEQUENCE'
    assert bpy.ops.lotus.predict_image(image=photo.name, task='DEPTH', frame_start=1, frame_end=3) == {'FINISHED'}
    depth = bpy.data.images["clip_depth"]
    assert depth.source == 'SEQUENCE' and depth["lotus_source"] == photo.name
    scene = bpy.context.scene
    saved_start = scene.frame_start
    scene.frame_start = 1
    try:
        assert bpy.ops.lotus.build_photo_scene(photo=photo.name, focal_source='MANUAL', focal_35mm=35.0, near=NEAR,
                                               auto_depth_range=False, depth_range=RANGE,
                                               tear_threshold=0.01) == {'FINISHED'}
        obj = bpy.data.objects["clip"]
        kind = depth["lotus_kind"]
        maps_by_frame = [lotus.outputs.read_map(str(lotus.out / f"clip_depth_{frame:04d}.exr")) for frame in (1, 2, 3)]
        assert np.abs(maps_by_frame[0] - maps_by_frame[2]).max() > 1e-3     # the frames' depths differ
        for frame in (1, 3):
            depths, _ = mesh_depths(obj, frame)
            values = maps_by_frame[frame - 1].astype(np.float64)
            expected = metric(values) if kind == "disparity" else \
                maps.relative_depth_to_depth(values, NEAR, NEAR + RANGE)
            assert np.abs(depths - expected).max() < 1e-3
        assert (lotus.out / "clip_behind_0003.exr").is_file()
    finally:
        scene.frame_start = saved_start
        scene.frame_set(1)


def test_missing_depth_frames_are_named_in_the_report(blender_addon, shot):
    """A shot Predict left gaps in (missing source frames are skipped): the build says which frames
    have no mesh instead of leaving the artist to find them by scrubbing."""
    import bpy
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    photo, depth, normal, folder = shot
    os.remove(folder / f"shot_depth_{FRAMES[2]}.exr")
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, near=NEAR, depth_range=RANGE,
                                             focal_35mm=35.0)
    assert f"depth frames {FRAMES[2]} missing: no mesh on those frames" in camera["lotus_camera_report"]
    assert len(mesh_depths(obj, 1)[0]) and mesh_depths(obj, 4)[1] > 0


def test_soft_edges_are_placed_at_each_frames_photo_edge(blender_addon, tracked_datablocks, tmp_path):  # noqa: F811
    """Model-like depth (a box's edge blurred like tests/lotus_errors.py: log-depth over 1 % of the
    frame) under a photo whose edge is sharp:
    per frame, Fill Behind moves the soft step to the photo's edge, and the mesh shows that
    depth (its Depth: the "_depth_snapped" sequence), so its tears meet the layer. A frame whose
    photo is one flat colour keeps its soft depth (its file: the depth as it is)."""
    import bpy
    from tests.lotus_errors import gaussian_blur
    outputs = live_module(blender_addon, "blender.outputs")
    scene25d = live_module(blender_addon, "blender.builders.scene25d")
    height, width, far = 128, 192, NEAR + RANGE
    box = np.zeros((height, width), bool)
    box[32:96, 48:120] = True
    blurred = np.exp(gaussian_blur(np.log(np.where(box, 2.6, 5.0)), 0.01 * width))
    disparity = ((1 / blurred - 1 / far) / (1 / NEAR - 1 / far)).astype(np.float32)
    frames = FRAMES[:2]
    for index, frame in enumerate(frames):
        rgba = np.ones((height, width, 4), np.float32)
        rgba[..., :3] = np.where(box[..., None], (0.8, 0.2, 0.1), (0.1, 0.3, 0.6)) if index == 0 else 0.5
        save_png(rgba, tmp_path / f"soft_{frame}.png")
        outputs.write_map_files(disparity, "disparity", width, height, {"exr": str(tmp_path / f"soft_depth_{frame}.exr")})
    photo = bpy.data.images.load(str(tmp_path / f"soft_{frames[0]}.png"))
    photo.source = 'SEQUENCE'
    depth = bpy.data.images.load(str(tmp_path / f"soft_depth_{frames[0]}.exr"), check_existing=False)
    depth.name, depth.source = "soft_depth", 'SEQUENCE'
    depth.colorspace_settings.is_data = True
    depth["lotus_kind"], depth["lotus_source"], depth["lotus_frames"] = "disparity", photo.name, list(frames)
    scene = bpy.context.scene
    saved = scene.frame_start, scene.frame_current
    scene.frame_start = 1
    scene.frame_set(1)
    try:
        obj, _camera = scene25d.build_photo_scene(bpy.context, photo, depth, near=NEAR, depth_range=RANGE,
                                                  focal_35mm=35.0)
        modifier = obj.modifiers[scene25d.MODIFIER_NAME]
        compat = live_module(blender_addon, "blender.compat")
        geonodes = live_module(blender_addon, "blender.builders.geonodes")
        snapped = compat.get_modifier_input(modifier, geonodes.input_identifier(modifier.node_group, "Depth"))
        assert snapped.name.endswith("_depth_snapped") and snapped.source == 'SEQUENCE'
        assert sorted(name for name in os.listdir(tmp_path) if "snapped" in name) == \
            [f"soft_depth_snapped_{frame}.exr" for frame in frames]

        def depths(frame):
            scene.frame_set(frame)
            co = evaluated_mesh_arrays(obj)["co"]
            return -co[:width * height, 2].reshape(width, height).T[::-1]
        first, second = depths(1), depths(2)
        # Frame 1: the step lies at the photo's edge, in one pixel; the blurred map ramped across it.
        assert blurred[64, 47] < 4.0 and blurred[64, 48] > 3.2 and first[64, 48] < 2.8 and first[64, 47] > 4.5
        assert np.abs(first - blurred)[~box].max() < np.abs(blurred - 5.0)[~box].max()
        # Frame 2 (flat photo): the depth as predicted.
        assert np.allclose(second, blurred, rtol=1e-3)
    finally:
        scene.frame_start = saved[0]
        scene.frame_set(saved[1])
