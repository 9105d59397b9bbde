"""Blender side: every input kind, colour conversion, big and tiny images, bad files, output
rules (unwritable folder, unsaved .blend, undo)."""

from __future__ import annotations

import os
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from tests import blender_env
from tests.blender_side import (Reports, drive, gradient, image_pixels, moving_frames, new_image,
                                remove_images, write_movie)


def _srgb(linear):
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def _display(lotus, image, resolution=0):
    return lotus.inputs.image_display_array(image, resolution)


def _run(lotus, reports, gather, task='DEPTH'):
    """Build and run jobs through the timer path; returns the runner's result."""
    import bpy
    built = lotus.operators.build_jobs(bpy.context, task, gather, reports)
    for job in built:
        lotus.job_queue.manager.submit(job)
    return drive(lotus.job_runner.JobRunner(built, reports)), built


def _save(image, path, file_format, depth, mode='RGBA'):
    import bpy
    scene = bpy.data.scenes.new("test_save")
    try:
        settings = scene.render.image_settings
        settings.file_format, settings.color_depth, settings.color_mode = file_format, depth, mode
        image.save_render(str(path), scene=scene)
    finally:
        bpy.data.scenes.remove(scene)


# -- colour conversion (no worker) ----------------------------------------------------------------

def test_colour_conversions(lotus, tmp_path):
    import bpy
    from PIL import Image
    rgba = gradient()
    bytes_rgba = np.round(rgba * 255).astype(np.uint8)
    bytes_rgba[..., 3] = 128
    Image.fromarray(bytes_rgba).save(tmp_path / "rgba.png")
    gray16 = np.round(rgba[..., 0] * 65535).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")

    # 8-bit sRGB with alpha: stored values, alpha dropped.
    image = lotus.inputs.load_image_file(str(tmp_path / "rgba.png"))
    display = _display(lotus, image)
    assert display.shape == (24, 32, 3)
    assert np.allclose(display, bytes_rgba[..., :3] / 255.0, atol=1e-6)
    # The same bytes tagged as linear go through the sRGB OETF; tagged as data they do not.
    image.colorspace_settings.name = "Linear Rec.709"
    assert np.allclose(_display(lotus, image), _srgb(bytes_rgba[..., :3] / 255.0), atol=1e-5)
    image.colorspace_settings.name = "Non-Color"
    assert np.allclose(_display(lotus, image), bytes_rgba[..., :3] / 255.0, atol=1e-6)
    bpy.data.images.remove(image)

    # 16-bit grayscale: Blender holds it linear in float; back to the file's values, R = G = B.
    image = lotus.inputs.load_image_file(str(tmp_path / "gray16.png"))
    assert image.is_float
    display = _display(lotus, image)
    assert np.allclose(display[..., 0], gray16 / 65535.0, atol=2e-3)
    assert np.allclose(display[..., 0], display[..., 2])
    bpy.data.images.remove(image)

    # Float (EXR, scene-linear): the plain sRGB OETF, clamped.
    linear = gradient() * 1.5
    source = new_image("lin_src", linear, float_buffer=True)
    _save(source, tmp_path / "linear.exr", 'OPEN_EXR', '32')
    bpy.data.images.remove(source)
    image = lotus.inputs.load_image_file(str(tmp_path / "linear.exr"))
    assert np.allclose(_display(lotus, image), _srgb(linear[..., :3]), atol=1e-5)
    bpy.data.images.remove(image)


def test_generated_dirty_and_packed_images_read_from_pixels(lotus, tmp_path):
    import bpy
    from PIL import Image
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(tmp_path / "black.png")
    image = lotus.inputs.load_image_file(str(tmp_path / "black.png"))
    # Unsaved edits: Blender's pixels, not the black file on disk.
    edited = gradient()
    image.pixels.foreach_set(np.ascontiguousarray(edited[::-1]).ravel())
    assert image.is_dirty
    assert np.allclose(_display(lotus, image), edited[..., :3], atol=1 / 255)
    # Packed, with the file gone from disk.
    image.pack()
    os.remove(tmp_path / "black.png")
    assert np.allclose(_display(lotus, image), edited[..., :3], atol=1 / 255)
    bpy.data.images.remove(image)
    # Generated (never saved) images.
    generated = bpy.data.images.new("gen_src", 16, 8)
    generated.generated_type = 'COLOR_GRID'
    display = _display(lotus, generated)
    assert display.shape == (8, 16, 3) and display.std() > 0.05
    bpy.data.images.remove(generated)


def test_big_image_reduced_without_full_size_copies(lotus):
    """8000x6000: the worker gets ~2x the processing resolution; the result is full size; numpy
    never holds more than one full-size float RGBA buffer at a time."""
    import bpy
    image = bpy.data.images.new("huge_src", 8000, 6000)
    image.generated_type = 'COLOR_GRID'
    full_rgba_bytes = 8000 * 6000 * 4 * 4
    reports = Reports()
    prepared = []

    def gather(context, job_dir, resolution):
        item = lotus.inputs.prepare_image(image, job_dir, resolution, 0)
        prepared.append(item)
        return [item], []
    tracemalloc.start()
    try:
        result, _ = _run(lotus, reports, gather)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == {'FINISHED'}, reports
    sent = np.load(prepared[0].npy_path) if os.path.exists(prepared[0].npy_path) else None
    assert (prepared[0].full_width, prepared[0].full_height) == (8000, 6000)
    if sent is not None:
        assert max(sent.shape[:2]) <= 2 * 64
    depth = bpy.data.images["huge_src_depth"]
    assert tuple(depth.size) == (8000, 6000)
    assert peak < 1.3 * full_rgba_bytes, f"peak {peak / 2**20:.0f} MiB"
    remove_images("huge_src")


def test_tiny_image_and_bad_files(lotus, tmp_path):
    import bpy
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(lotus.inputs.InputError, match="0 bytes"):
        lotus.inputs.prepare_file(str(tmp_path / "empty.png"), str(tmp_path), 64, 0)
    with pytest.raises(lotus.inputs.InputError, match="corrupt.png"):
        lotus.inputs.prepare_file(str(tmp_path / "corrupt.png"), str(tmp_path), 64, 0)
    assert "corrupt.png" not in bpy.data.images
    # One good 1x1 file among bad ones: the bad ones are reported, the good one is processed.
    from PIL import Image
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tmp_path / "dot.png")
    reports = Reports()

    def gather(context, job_dir, resolution):
        prepared, problems = [], []
        for index, name in enumerate(("empty.png", "corrupt.png", "dot.png")):
            try:
                prepared.append(lotus.inputs.prepare_file(str(tmp_path / name), job_dir,
                                                          resolution, index))
            except lotus.inputs.InputError as ex:
                problems.append(str(ex))
        return prepared, problems
    result, _ = _run(lotus, reports, gather, task='BOTH')
    assert result == {'FINISHED'}
    assert len(reports.texts('ERROR')) == 2
    assert tuple(bpy.data.images["dot_depth"].size) == (1, 1)
    assert tuple(bpy.data.images["dot_normal"].size) == (1, 1)
    remove_images("dot")


# -- what the artist points at ----------------------------------------------------------------------

def test_image_editor_and_selected_texture_nodes(lotus):
    import bpy
    photo = new_image("ctx_photo", gradient())
    other = new_image("ctx_other", gradient()[::-1].copy())
    editor = SimpleNamespace(space_data=SimpleNamespace(type='IMAGE_EDITOR', image=photo))
    assert lotus.inputs.images_from_context(editor) == [photo]

    material = bpy.data.materials.new("ctx_material")
    if not material.node_tree:
        material.use_nodes = True
    tree = material.node_tree
    for node in tree.nodes:
        node.select = False
    nodes = []
    for image in (photo, other, photo):
        node = tree.nodes.new("ShaderNodeTexImage")
        node.image = image
        nodes.append(node)
    nodes[0].select = True
    nodes[1].select = False
    nodes[2].select = True
    mesh = bpy.data.meshes.new("ctx_mesh")
    obj = bpy.data.objects.new("ctx_object", mesh)
    obj.data.materials.append(material)
    shader_editor = SimpleNamespace(space_data=SimpleNamespace(type='NODE_EDITOR', edit_tree=tree))
    view3d = SimpleNamespace(space_data=None, active_object=obj)
    try:
        assert lotus.inputs.images_from_context(shader_editor) == [photo]
        nodes[1].select = True
        assert lotus.inputs.images_from_context(view3d) == [photo, other]
        # The operator with no image name uses the context: both selected nodes, end to end.
        bpy.context.scene.collection.objects.link(obj)
        bpy.context.view_layer.objects.active = obj
        assert bpy.ops.lotus.predict_image(task='DEPTH') == {'FINISHED'}
        assert "ctx_photo_depth" in bpy.data.images and "ctx_other_depth" in bpy.data.images
    finally:
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
        bpy.data.materials.remove(material)
        remove_images("ctx_")


def test_file_handler_for_drops_on_the_3d_view(lotus):
    import bpy
    handler = bpy.types.FileHandler.bl_rna_get_subclass_py("LOTUS_FH_image_drop")
    assert handler.bl_import_operator == "lotus.predict_files"
    extensions = handler.bl_file_extensions.split(";")
    assert ".png" in extensions and ".jpg" in extensions and ".exr" in extensions
    assert handler.poll_drop(SimpleNamespace(area=SimpleNamespace(type='VIEW_3D')))
    assert not handler.poll_drop(SimpleNamespace(area=SimpleNamespace(type='IMAGE_EDITOR')))
    # What a drop runs: the operator with directory + files (test_files_to_images_and_files).
    props = bpy.ops.lotus.predict_files.get_rna_type().properties
    assert "directory" in props and "files" in props


# -- renders, passes, frames --------------------------------------------------------------------------

@pytest.fixture
def tiny_render_scene():
    """A small Cycles scene (a cube seen by a camera), 32x24, one sample."""
    import bpy
    scene = bpy.data.scenes.new("lotus_input_scene")
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = 1
    scene.cycles.device = 'CPU'
    scene.render.resolution_x, scene.render.resolution_y = 32, 24
    scene.render.resolution_percentage = 100
    mesh = bpy.data.meshes.new("lotus_input_cube")
    mesh.from_pydata([(-1, -1, -1), (1, -1, -1), (1, 1, -1), (-1, 1, -1),
                      (-1, -1, 1), (1, -1, 1), (1, 1, 1), (-1, 1, 1)], [],
                     [(0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6),
                      (3, 0, 4, 7)])
    cube = bpy.data.objects.new("lotus_input_cube", mesh)
    camera = bpy.data.objects.new("lotus_input_camera", bpy.data.cameras.new("lotus_input_camera"))
    camera.location = (4, -4, 3)
    camera.rotation_euler = (1.1, 0, 0.785)
    world = bpy.data.worlds.new("lotus_input_world")
    world.color = (0.6, 0.7, 0.9)
    scene.world = world
    for obj in (cube, camera):
        scene.collection.objects.link(obj)
    scene.camera = camera
    yield scene
    bpy.data.scenes.remove(scene)
    bpy.data.objects.remove(cube)
    bpy.data.objects.remove(camera)
    bpy.data.meshes.remove(mesh)
    bpy.data.cameras.remove(bpy.data.cameras["lotus_input_camera"])
    bpy.data.worlds.remove(world)


def test_render_result(lotus, tiny_render_scene):
    import bpy
    window = bpy.context.window
    previous = window.scene
    window.scene = tiny_render_scene  # the Render Result shows the active scene's render
    try:
        bpy.ops.render.render()
        user_format = tiny_render_scene.render.image_settings.file_format
        result = bpy.ops.lotus.predict_image(image="Render Result", task='DEPTH')
        assert tiny_render_scene.render.image_settings.file_format == user_format
    finally:
        window.scene = previous
    assert result == {'FINISHED'}
    depth = bpy.data.images[f"{tiny_render_scene.name}_render_depth"]
    assert tuple(depth.size) == (32, 24)
    assert depth["lotus_source"] == "Render Result"
    # The 35 mm equivalent brings back the camera's lens through the builders' convention.
    from lotus_blender.core import geometry
    lens = geometry.lens_from_35mm(depth["lotus_focal_35mm"], 32, 24,
                                   tiny_render_scene.camera.data.sensor_width)
    assert lens == pytest.approx(tiny_render_scene.camera.data.lens)
    remove_images(tiny_render_scene.name)


def test_multilayer_exr_pass(lotus, tiny_render_scene, tmp_path):
    import bpy
    settings = tiny_render_scene.render.image_settings
    blender_env.compat().set_file_format(settings, 'OPEN_EXR_MULTILAYER')
    settings.color_depth = '32'
    tiny_render_scene.render.filepath = str(tmp_path / "layers.exr")
    bpy.ops.render.render(scene=tiny_render_scene.name, write_still=True)
    image = bpy.data.images.load(str(tmp_path / "layers.exr"))
    passes = lotus.inputs.multilayer_passes(image)
    assert ("ViewLayer", "Combined") in passes
    # The Combined pass, extracted by the compositor, is the render itself.
    saved = lotus.inputs.prepare_multilayer_pass(image, "ViewLayer", "Combined", str(tmp_path),
                                                 0, 0)
    array = np.load(saved.npy_path)
    assert array.shape == (24, 32, 3) and array.std() > 0.01
    with pytest.raises(lotus.inputs.InputError, match="no pass"):
        lotus.inputs.prepare_multilayer_pass(image, "ViewLayer", "Nope", str(tmp_path), 0, 1)
    result = bpy.ops.lotus.predict_image(image=image.name, render_pass="Combined", task='NORMAL')
    assert result == {'FINISHED'}
    normal = bpy.data.images["layers_Combined_normal"]
    assert tuple(normal.size) == (32, 24)
    assert normal["lotus_source"] == image.name
    bpy.data.images.remove(image)
    remove_images("layers")


def test_image_sequence_one_result_per_frame_and_a_gap(lotus, tmp_path):
    """The default range runs from the first file to the last; a missing frame is skipped with
    one warning (the command line does the same: test_cli)."""
    import bpy
    from PIL import Image
    frames = tmp_path / "frames"
    frames.mkdir()
    pictures = {}
    for number in (1, 2, 3, 5):
        pictures[number] = np.roll(gradient(), number * 3, axis=1)[..., :3]
        Image.fromarray(np.round(pictures[number] * 255).astype(np.uint8)).save(
            frames / f"clip_{number:04d}.png")
    image = bpy.data.images.load(str(frames / "clip_0001.png"))
    image.source = 'SEQUENCE'
    assert lotus.inputs.frame_range(image) == (1, 5)
    prepared = lotus.inputs.prepare_frames(image, 1, 5, str(tmp_path), 0)
    assert [item.frame for item in prepared] == [1, 2, 3, 5]
    for item in prepared:
        assert np.abs(np.load(item.npy_path) - pictures[item.frame]).max() < 1 / 255 + 1e-6
    assert [n for item in prepared for n in item.notes] == \
        ["clip_####.png: frame 4 missing, skipped (4 frames used)"]
    reports = Reports()
    operator = SimpleNamespace(image=image.name, frame_start=0, frame_end=0)
    gather = lambda context, job_dir, resolution: lotus.operators.LOTUS_OT_predict_image.gather(
        SimpleNamespace(images=lambda context: [image], layer="", render_pass="Combined",
                        **vars(operator)), context, job_dir, resolution)
    result, _ = _run(lotus, reports, gather)
    assert result == {'FINISHED'}
    assert reports.texts('WARNING') == ["clip_####.png: frame 4 missing, skipped (4 frames used)"]
    for number in (1, 2, 3, 5):
        assert (lotus.out / f"clip_depth_{number:04d}.exr").is_file()
    assert not (lotus.out / "clip_depth_0004.exr").exists()
    sequence = bpy.data.images["clip_depth"]
    assert sequence.source == 'SEQUENCE' and list(sequence["lotus_frames"]) == [1, 5]
    assert sequence["lotus_kind"] == "disparity"
    bpy.data.images.remove(image)
    remove_images("clip")


def _nearest_frames(arrays, pictures):
    """For each array, the index of the picture it is closest to (mean absolute difference)."""
    return [int(np.argmin([np.abs(array - picture).mean() for picture in pictures]))
            for array in arrays]


def test_movie_one_result_per_frame_from_that_frame(lotus, tmp_path):
    """Each frame's input is that frame's pixels (issue 15: every frame came out as the movie's
    first, the artist's current frame), and the predict operator writes one map per frame."""
    import bpy
    if not bpy.app.build_options.codec_ffmpeg:
        pytest.skip("this Blender build has no FFmpeg")
    pictures = moving_frames(6)
    movie = write_movie(str(tmp_path / "take_"), pictures)
    image = bpy.data.images.load(movie)
    assert image.source == 'MOVIE'
    assert lotus.inputs.frame_range(image) == (1, 6)
    scene = bpy.context.scene
    scene.frame_current = 4  # the artist's frame must not leak into any other
    try:
        prepared = lotus.inputs.prepare_frames(image, 1, 6, str(tmp_path), 0)
    finally:
        scene.frame_current = 1
    arrays = [np.load(item.npy_path) for item in prepared]
    assert [item.frame for item in prepared] == [1, 2, 3, 4, 5, 6]
    assert _nearest_frames(arrays, pictures) == [0, 1, 2, 3, 4, 5]
    for array, picture in zip(arrays, pictures):
        assert np.abs(array - picture).mean() < 0.02  # the frame as stored (Standard, sRGB)
    assert np.abs(arrays[0] - arrays[5]).max() > 0.3
    result = bpy.ops.lotus.predict_image(image=image.name, task='NORMAL', frame_start=2,
                                         frame_end=4)
    assert result == {'FINISHED'}
    stem = os.path.splitext(os.path.basename(movie))[0]
    for number in (2, 3, 4):
        assert (lotus.out / f"{stem}_normal_{number:04d}.exr").is_file()
        assert (lotus.out / f"{stem}_normal_opengl_{number:04d}.png").is_file()
    assert not (lotus.out / f"{stem}_normal_0001.exr").exists()
    assert bpy.data.images[f"{stem}_normal"].source == 'SEQUENCE'
    bpy.data.images.remove(image)
    remove_images(stem)


def test_movie_cut_short_or_unreadable_is_one_clear_line(lotus, tmp_path):
    """A movie cut at 60% is refused (FFmpeg would repeat its last whole frame, or Blender finds
    a 0x0 image and a 4x4 map came out); frames past its end are skipped with one warning."""
    import bpy
    if not bpy.app.build_options.codec_ffmpeg:
        pytest.skip("this Blender build has no FFmpeg")
    movie = write_movie(str(tmp_path / "whole_"), moving_frames(8), container='MKV')
    data = open(movie, "rb").read()
    for container, cut in (("mkv", 0.6), ("mkv", 0.95)):
        path = tmp_path / f"cut_{cut}.{container}"
        path.write_bytes(data[:int(len(data) * cut)])
        image = bpy.data.images.load(str(path))
        with pytest.raises(lotus.inputs.InputError, match="is incomplete"):
            lotus.inputs.prepare_frames(image, 1, 8, str(tmp_path), 0)
        bpy.data.images.remove(image)
    garbage = tmp_path / "noise.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    image = bpy.data.images.load(str(garbage))
    with pytest.raises(lotus.inputs.InputError) as error:
        lotus.inputs.prepare_frames(image, 1, 1, str(tmp_path), 0)
    assert "noise.mp4" in str(error.value) and "\n" not in str(error.value)
    bpy.data.images.remove(image)
    # Past the end: skipped, one note naming the frames.
    image = bpy.data.images.load(movie)
    prepared = lotus.inputs.prepare_frames(image, 7, 12, str(tmp_path), 0)
    assert [item.frame for item in prepared] == [7, 8]
    notes = [note for item in prepared for note in item.notes]
    assert notes == [f"{os.path.basename(movie)}: frames 9-12 missing, skipped (2 frames used)"]
    bpy.data.images.remove(image)


# -- output rules ---------------------------------------------------------------------------------

def test_preview_png_holds_the_preview_pixels(lotus, tmp_path):
    """The depth preview file is written with the Standard view transform: the file holds the
    pixels the .blend holds (a new scene's AgX changed them by up to 35/255)."""
    import bpy
    from PIL import Image
    from lotus_blender.core import maps
    depth = np.linspace(0.0, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    colours = maps.colorize_depth(depth, near_is_high=True)
    paths = {"exr": str(tmp_path / "m_depth.exr"), "preview": str(tmp_path / "m_preview.png")}
    lotus.outputs.write_map_files(depth, "disparity", 64, 48, paths)
    stored = np.asarray(Image.open(paths["preview"]).convert("RGB"), np.float32) / 255
    assert np.abs(stored - colours).max() <= 1 / 255 + 1e-6
    # The add-on's own result image and its file agree too.
    result = bpy.ops.lotus.predict_image(image=new_image("prev_src", gradient()).name,
                                         task='DEPTH')
    assert result == {'FINISHED'}
    preview = bpy.data.images["prev_src_depth_preview"]
    in_blend = image_pixels(preview)[..., :3]
    on_disk = np.asarray(Image.open(bpy.path.abspath(preview.filepath)).convert("RGB"),
                         np.float32) / 255
    assert np.abs(in_blend - on_disk).max() <= 1 / 255 + 1e-6
    remove_images("prev_src")


def test_unwritable_output_folder_keeps_results(lotus, tmp_path):
    import bpy
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    bpy.context.preferences.addons[lotus.name].preferences.output_dir = str(blocker / "maps")
    image = new_image("nowrite_src", gradient())
    reports = Reports()
    job_dirs = []

    def gather(context, job_dir, resolution):
        job_dirs.append(job_dir)
        return [lotus.inputs.prepare_image(image, job_dir, resolution, 0)], []
    result, built = _run(lotus, reports, gather)
    assert result == {'FINISHED'}
    errors = reports.texts('ERROR')
    assert len(errors) == 1 and errors[0].startswith("Could not create the folder ")
    assert "not a directory" in errors[0] and "packed into the .blend" in errors[0]
    depth = bpy.data.images["nowrite_src_depth"]
    # Packed: the pixels stay in Blender and are saved with the .blend.
    assert depth.packed_file is not None and image_pixels(depth)[..., 0].std() > 0.0
    # Nothing lost: the arrays stay in the job folder.
    assert os.path.isfile(built[0].outputs[0]["path"])
    remove_images("nowrite_src")


def test_unsaved_blend_uses_temp_folder_with_warning(lotus):
    import bpy
    assert not bpy.data.filepath
    bpy.context.preferences.addons[lotus.name].preferences.output_dir = "//lotus/"
    folder, temporary = lotus.outputs.resolve_output_folder("//lotus/")
    assert temporary and folder == lotus.outputs.temporary_output_folder()
    image = new_image("unsaved_src", gradient())
    reports = Reports()
    result, built = _run(lotus, reports, lambda c, d, r: (
        [lotus.inputs.prepare_image(image, d, r, 0)], []))
    assert result == {'FINISHED'}
    assert any("not saved" in text for text in reports.texts('WARNING'))
    written = built[0].output.written
    assert written and all(path.startswith(folder) for path in written)
    assert bpy.ops.lotus.pack_results() == {'FINISHED'}
    assert bpy.data.images["unsaved_src_depth"].packed_file is not None
    for path in written:
        os.remove(path)
    remove_images("unsaved_src")


def test_results_are_one_undo_step_and_undo_keeps_files(lotus):
    import bpy
    new_image("undo_src", gradient())
    bpy.ops.ed.undo_push(message="before Lotus")
    result = bpy.ops.lotus.predict_image('EXEC_DEFAULT', True, image="undo_src", task='BOTH')
    assert result == {'FINISHED'}
    made = [name for name in ("undo_src_depth", "undo_src_depth_preview", "undo_src_normal")
            if name in bpy.data.images]
    assert len(made) == 3
    files = sorted(os.listdir(lotus.out))
    bpy.ops.ed.undo()
    assert not any(name in bpy.data.images for name in made)
    assert "undo_src" in bpy.data.images
    assert sorted(os.listdir(lotus.out)) == files
    remove_images("undo_src")


_SAVED_BLEND_SCRIPT = r'''
prefs = bpy.context.preferences.addons[name].preferences
assert prefs.output_dir == "//lotus/"
bpy.ops.wm.save_as_mainfile(filepath=str(work / "shot.blend"))
bpy.ops.lotus.predict_files(task='DEPTH', directory=str(work), files=[{"name": "photo.png"}])
image = bpy.data.images["photo_depth"]
result = {"filepath": image.filepath, "files": sorted(os.listdir(work / "lotus"))}
blender_env.disable_extension(name)
report(result)
'''


@pytest.mark.blender
def test_saved_blend_writes_next_to_it_with_relative_paths(tiny_checkpoints, tmp_path):
    """The default output folder //lotus/ with a saved .blend (in a fresh Blender process, so
    this session's .blend stays unsaved)."""
    from PIL import Image
    from tests import blender_child
    Image.fromarray(np.round(gradient()[..., :3] * 255).astype(np.uint8)).save(
        tmp_path / "photo.png")
    result = blender_child.run(_SAVED_BLEND_SCRIPT, tmp_path,
                               blender_child.checkpoint_args(tiny_checkpoints))
    assert result["filepath"] == "//lotus/photo_depth.exr"
    assert "photo_depth.exr" in result["files"] and "photo_depth_preview.png" in result["files"]


def test_photo_focal_length_from_exif(lotus, tmp_path):
    """A camera's FocalLengthIn35mmFilm travels with the photo (lotus_focal_35mm on results)."""
    import bpy
    from PIL import Image
    picture = Image.fromarray(np.round(gradient()[..., :3] * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x8769] = {0xA405: 26, 0x920A: 4.2}
    picture.save(tmp_path / "phone.jpg", exif=exif)
    picture.save(tmp_path / "plain.png")
    # A TIFF structure on its own (what TIFF/DNG files start with).
    tiff = exif.tobytes()
    (tmp_path / "tags.tif").write_bytes(tiff[6:] if tiff.startswith(b"Exif") else tiff)
    assert lotus.inputs.exif_focal_35mm(str(tmp_path / "phone.jpg")) == 26.0
    assert lotus.inputs.exif_focal_35mm(str(tmp_path / "tags.tif")) == 26.0
    assert lotus.inputs.exif_focal_35mm(str(tmp_path / "plain.png")) == 0.0
    prepared = lotus.inputs.prepare_file(str(tmp_path / "phone.jpg"), str(tmp_path), 64, 0)
    assert prepared.focal_35mm == 26.0
    image = bpy.data.images.new("exif_result", 4, 4)
    lotus.outputs.results._tag(image, "disparity", prepared)
    assert image["lotus_focal_35mm"] == 26.0
    assert image["lotus_source_path"] == str(tmp_path / "phone.jpg")
    bpy.data.images.remove(image)
    bpy.data.images.remove(bpy.data.images["phone.jpg"])
