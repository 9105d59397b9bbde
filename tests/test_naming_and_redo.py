"""One naming rule across tools (issue 9, section 5) and no pile-up on redo or rebuild (section 6)."""

from __future__ import annotations

import os

import numpy as np

from tests.blender_side import gradient, image_pixels, new_image, remove_images


def _photo_file(path, width=40, height=30):
    from PIL import Image
    Image.fromarray(np.round(gradient(width, height)[..., :3] * 255).astype(np.uint8)).save(path)


def _remove_objects(prefix):
    import bpy
    for obj in [o for o in bpy.data.objects if o.name.startswith(prefix)]:
        bpy.data.objects.remove(obj)


def test_stem_with_accents_for_every_tool_and_the_prediction_normal_png_reused(lotus, tmp_path):
    import bpy
    _photo_file(tmp_path / "café photo 01.jpg")
    assert bpy.ops.lotus.predict_files(task='BOTH', directory=str(tmp_path),
                                       files=[{"name": "café photo 01.jpg"}]) == {'FINISHED'}
    stem = "café photo 01"
    assert {f"{stem}_depth", f"{stem}_depth_preview", f"{stem}_normal"} <= set(bpy.data.images.keys())
    predicted = sorted(os.listdir(lotus.out))
    assert predicted == sorted([f"{stem}_depth.exr", f"{stem}_depth_preview.png",
                                f"{stem}_normal.exr", f"{stem}_normal_opengl.png"])
    assert bpy.ops.lotus.normal_material(photo="café photo 01.jpg", target='NEW_PLANE',
                                         convention='OPENGL') == {'FINISHED'}
    plane = bpy.data.objects[f"{stem}_plane"]
    material = plane.data.materials[0]
    assert material.name == f"{stem}_lotus_material"
    normal_map = material.node_tree.nodes["Lotus Normal Texture"].image
    height = material.node_tree.nodes["Lotus Height Texture"].image
    assert (normal_map.name, height.name) == (f"{stem}_normal_opengl", f"{stem}_height")
    # The material uses the prediction's own PNG: one more file, the height map, no second normal map.
    assert bpy.path.abspath(normal_map.filepath) == str(lotus.out / f"{stem}_normal_opengl.png")
    assert normal_map.colorspace_settings.name == 'Non-Color'
    assert sorted(os.listdir(lotus.out)) == sorted(predicted + [f"{stem}_height.png"])
    _remove_objects(stem)
    remove_images(stem)
    remove_images("café photo 01")


def test_a_name_the_artist_holds_gets_one_suffix_reused_next_run(lotus):
    import bpy
    source = new_image("taken", gradient())
    mine = new_image("taken_depth", np.full((4, 4, 4), 0.25, np.float32))
    for _run in range(3):
        assert bpy.ops.lotus.predict_image(image="taken", task='DEPTH') == {'FINISHED'}
    names = sorted(image.name for image in bpy.data.images if image.name.startswith("taken_depth"))
    assert names == ["taken_depth", "taken_depth (Lotus)", "taken_depth_preview"]
    assert "lotus_kind" not in mine and np.allclose(image_pixels(mine), 0.25, atol=1 / 255)
    assert bpy.data.images["taken_depth (Lotus)"]["lotus_source"] == source.name
    remove_images("taken")


def _files(folder):
    return sorted(os.listdir(folder))


def test_redo_panel_changes_write_no_new_files(lotus):
    import bpy
    new_image("redo_photo", gradient(36, 24))
    assert bpy.ops.lotus.predict_image(image="redo_photo", task='NORMAL') == {'FINISHED'}
    bpy.ops.ed.undo_push(message="before the material")
    # With an undo step each (True), as from the UI: the redo panel undoes it and runs again.
    assert bpy.ops.lotus.normal_material('EXEC_DEFAULT', True, photo="redo_photo",
                                         target='NEW_PLANE', convention='OPENGL') == {'FINISHED'}
    after_first = _files(lotus.out)
    # The redo panel: undo, then the operator again with another value, many times.
    for strength, relief, displacement in ((0.5, 1.0, False), (2.0, 3.0, False), (1.0, 2.0, True),
                                           (1.5, 0.5, False)):
        bpy.ops.ed.undo()
        assert bpy.ops.lotus.normal_material(
            'EXEC_DEFAULT', True, photo="redo_photo", target='NEW_PLANE', convention='OPENGL', normal_strength=strength,
            relief_scale=relief, use_displacement=displacement) == {'FINISHED'}
        assert _files(lotus.out) == after_first
    # Maps whose content changes are new files, once each; going back reuses the first ones.
    for seamless, convention in ((True, 'OPENGL'), (False, 'DIRECTX'), (True, 'DIRECTX'),
                                 (False, 'OPENGL')):
        bpy.ops.ed.undo()
        assert bpy.ops.lotus.normal_material('EXEC_DEFAULT', True, photo="redo_photo",
                                             target='NEW_PLANE', convention=convention,
                                             seamless=seamless) == {'FINISHED'}
    assert _files(lotus.out) == sorted(after_first + ["redo_photo_height_seamless.png",
                                                      "redo_photo_normal_directx.png"])
    assert len([o for o in bpy.data.objects if o.name.startswith("redo_photo_plane")]) == 1
    _remove_objects("redo_photo")
    remove_images("redo_photo")


def test_relight_setup_reuses_the_2_5d_scene_and_its_camera(lotus):
    import bpy
    new_image("reuse_photo", gradient(32, 24))
    assert bpy.ops.lotus.predict_image(image="reuse_photo", task='BOTH') == {'FINISHED'}
    scene = bpy.data.scenes.new("lotus_reuse")
    with bpy.context.temp_override(scene=scene):
        assert bpy.ops.lotus.build_photo_scene(photo="reuse_photo") == {'FINISHED'}
        mesh, camera = bpy.data.objects["reuse_photo"], bpy.data.objects["reuse_photo_camera"]
        before = set(scene.objects)
        for _run in range(2):
            assert bpy.ops.lotus.relight_setup(photo="reuse_photo") == {'FINISHED'}
        made = set(scene.objects) - before
    assert scene.camera == camera
    assert sorted(obj.name for obj in made) == sorted(
        ["reuse_photo_gap_fill", "reuse_photo_light_rig", "reuse_photo_key", "reuse_photo_fill",
         "reuse_photo_rim"])
    assert mesh.data.materials[0].name.startswith("reuse_photo_relight")
    assert [obj for obj in scene.objects if obj.type == 'CAMERA'] == [camera]
    for obj in list(scene.objects):
        bpy.data.objects.remove(obj)
    bpy.data.scenes.remove(scene)
    remove_images("reuse_photo")


def test_predict_redo_runs_again_with_the_changed_options(lotus):
    """The redo panel of Lotus: Image: undo the run, then run again with the changed options
    (execute, blocking: Blender's redo finishes within the call). The results follow the last
    options, the image keeps its name, and the first run's files stay (never overwritten)."""
    import bpy
    new_image("predict_redo", gradient(36, 24))
    bpy.ops.ed.undo_push(message="before the prediction")
    assert bpy.ops.lotus.predict_image('EXEC_DEFAULT', True, image="predict_redo",
                                       task='DEPTH') == {'FINISHED'}
    assert "predict_redo_depth" in bpy.data.images
    first_files = _files(lotus.out)
    # The redo panel: undo, then the operator again with another task and Seamless.
    bpy.ops.ed.undo()
    assert "predict_redo_depth" not in bpy.data.images and "predict_redo" in bpy.data.images
    assert bpy.ops.lotus.predict_image('EXEC_DEFAULT', True, image="predict_redo", task='BOTH',
                                       seamless=True) == {'FINISHED'}
    assert {"predict_redo_depth", "predict_redo_normal"} <= set(bpy.data.images.keys())
    assert set(first_files) < set(_files(lotus.out))
    remove_images("predict_redo")
