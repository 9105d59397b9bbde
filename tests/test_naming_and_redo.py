"""One naming rule across tools (issue 9, section 5), no pile-up on redo or rebuild (section 6),
and the builders' options in the redo panel and presets (issue 17)."""

from __future__ import annotations

import os

import numpy as np
import pytest

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


# ---------------------------------------------------------------------------------------------
# The builders' settings, Import Images as Planes' way (issue 17): options on the operators, so
# that the redo panel and operator presets adjust them; the scene keeps the last-used values.

def _builder_maps(stem):
    """A photo and its tagged Lotus depth and normal results (flat normals, a tilted depth)."""
    import bpy
    from lotus_blender.core import maps
    photo = new_image(stem, gradient(16, 12))
    for kind, values in (("disparity", np.linspace(0.2, 0.8, 12 * 16).reshape(12, 16)),
                         ("normal", maps.normals_to_normal_map(
                             np.broadcast_to(np.float32([0, 0, 1]), (12, 16, 3))))):
        suffix = "depth" if kind == "disparity" else "normal"
        image = bpy.data.images.new(f"{stem}_{suffix}", 16, 12, float_buffer=True)
        image.colorspace_settings.name = 'Non-Color'
        rgba = np.ones((12, 16, 4), np.float32)
        rgba[..., :3] = values[..., None] if values.ndim == 2 else values
        image.pixels.foreach_set(rgba[::-1].ravel())
        image["lotus_kind"], image["lotus_source"] = kind, photo.name
    return photo


def _modifier_input(obj, name):
    from tests import blender_env
    modifier = obj.modifiers["Lotus 2.5D"]
    key = next(item.identifier for item in modifier.node_group.interface.items_tree
               if item.item_type == 'SOCKET' and item.name == name)
    return blender_env.compat().get_modifier_input(modifier, key)


def _node_input(obj, node, socket):
    return obj.data.materials[0].node_tree.nodes[node].inputs[socket].default_value


# (operator, scene settings, the option changed, what a build shows of it, fixed options)
BUILDERS = {
    "build_photo_scene": ("lotus_scene25d", "near", lambda stem: _modifier_input(
        __import__("bpy").data.objects[stem], "Near"), {"max_vertices": 64, "refine": False}),
    "normal_material": ("lotus_materials", "normal_strength", lambda stem: _node_input(
        __import__("bpy").data.objects[f"{stem}_plane"], "Lotus Normal Map", "Strength"),
        {"save_maps": False}),
    "relight_setup": ("lotus_relight", "roughness", lambda stem: _node_input(
        __import__("bpy").data.objects[f"{stem}_plane"], "Lotus Principled BSDF", "Roughness"),
        {"geometry_mode": 'PLANE', "light_rig": False}),
}


def _redo(operator, **changes):
    """What the redo panel does (ED_undo_operator_repeat): undo the last run, then run the
    operator's execute again with the properties it stored, as the panel changed them."""
    import bpy
    op = bpy.context.active_operator
    assert op.bl_idname == f"LOTUS_OT_{operator}"
    values = {name: getattr(op, name) for name in op.properties.bl_rna.properties.keys()
              if name != "rna_type"}
    values.update(changes)
    bpy.ops.ed.undo()
    return getattr(bpy.ops.lotus, operator)('EXEC_DEFAULT', True, **values)


@pytest.mark.parametrize("operator", sorted(BUILDERS))
def test_redo_and_presets_rebuild_with_the_changed_option(lotus, operator):
    import bpy
    settings_name, option, built, fixed = BUILDERS[operator]
    stem = f"redo_{operator}"
    photo = _builder_maps(stem)
    def last_used():  # looked up each time: an undo replaces the scene's data
        return getattr(getattr(bpy.context.scene, settings_name), option)

    run = getattr(bpy.ops.lotus, operator)
    preset_folder = bpy.utils.user_resource('SCRIPTS', path=f"presets/operator/lotus.{operator}")
    preset = os.path.join(preset_folder, "lotus_redo_test.py")
    camera_before = getattr(bpy.context.scene.camera, "name", None)
    bpy.ops.ed.undo_push(message=f"before {operator}")
    try:
        assert run('EXEC_DEFAULT', True, photo=photo.name, **{option: 0.25}, **fixed) == {'FINISHED'}
        assert built(stem) == pytest.approx(0.25)
        assert last_used() == pytest.approx(0.25)  # the last-used value
        # The redo panel: another value rebuilds with it (one result, not a second one).
        assert _redo(operator, **{option: 0.75}) == {'FINISHED'}
        assert built(stem) == pytest.approx(0.75)
        assert last_used() == pytest.approx(0.75)
        # A preset stores the options (not the photo) and restores them in the redo panel.
        assert bpy.ops.wm.operator_preset_add(name="lotus redo test",
                                              operator=f"LOTUS_OT_{operator}") == {'FINISHED'}
        text = open(preset, encoding="utf-8").read()
        assert f"op.{option} = 0.75" in text and "op.photo" not in text
        assert _redo(operator, **{option: 0.5}) == {'FINISHED'}
        assert built(stem) == pytest.approx(0.5)
        assert bpy.ops.script.execute_preset(filepath=preset,
                                             menu_idname="WM_MT_operator_presets") == {'FINISHED'}
        assert getattr(bpy.context.active_operator, option) == pytest.approx(0.75)
        assert _redo(operator) == {'FINISHED'}
        assert built(stem) == pytest.approx(0.75)
        # invoke (a panel button) takes what the caller left unset from the scene's last-used values.
        # (Called on the last run: background Blender has no window to invoke from.)
        _remove_objects(stem)
        op = bpy.context.active_operator
        op.properties.property_unset(option)
        setattr(getattr(bpy.context.scene, settings_name), option, 0.4)
        assert op.invoke(bpy.context, None) == {'FINISHED'}
        assert built(stem) == pytest.approx(0.4)
    finally:
        if os.path.exists(preset):
            os.remove(preset)
        # Back to before the first run: the scene's camera, render settings and last-used values
        # as other tests expect them.
        bpy.ops.ed.undo()
        _remove_objects(stem)
        remove_images(stem)
    assert getattr(bpy.context.scene.camera, "name", None) == camera_before


def test_every_builder_finds_a_photos_maps_by_tag_or_by_its_name(lotus):
    """One rule for the three builders and their panels: the result tagged as made from the
    photo, else the image named after the photo's stem (maps whose tags were lost)."""
    import sys
    import bpy
    common = sys.modules[f"{lotus.name}.blender.builders.common"]
    photo = _builder_maps("named_maps")
    photo.name = "named_maps.png"
    for image in (bpy.data.images["named_maps_depth"], bpy.data.images["named_maps_normal"]):
        del image["lotus_source"], image["lotus_kind"]      # untagged: found by name only
    assert common.find_result(photo, ("disparity", "depth")).name == "named_maps_depth"
    assert common.find_result(photo, "normal").name == "named_maps_normal"
    scene = bpy.data.scenes.new("lotus_named_maps")
    try:
        with bpy.context.temp_override(scene=scene):
            assert bpy.ops.lotus.build_photo_scene(photo=photo.name, max_vertices=64,
                                                   refine=False) == {'FINISHED'}
            assert bpy.ops.lotus.normal_material(photo=photo.name, save_maps=False) == {'FINISHED'}
            assert _modifier_input(bpy.data.objects["named_maps"], "Depth").name == "named_maps_depth"
            # Relight raises "No Lotus depth" before it reuses the 2.5D scene: it found the map.
            assert bpy.ops.lotus.relight_setup(photo=photo.name, light_rig=False) == {'FINISHED'}
        # A tagged result comes first, whatever its name.
        tagged = bpy.data.images.new("renamed normal", 4, 4)
        tagged["lotus_kind"], tagged["lotus_source"] = "normal", photo.name
        assert common.find_result(photo, "normal") == tagged
    finally:
        for obj in list(scene.objects):
            bpy.data.objects.remove(obj)
        bpy.data.scenes.remove(scene)
        remove_images("named_maps")
        remove_images("renamed normal")


@pytest.mark.parametrize("files, expected", [
    (["clip_0001_a.png", "clip_0002_a.png"], "clip_a"),
    (["shot_0001.png", "shot_0002.png"], "shot"),
    (["plate.0001.left.png", "plate.0002.left.png"], "plate.left"),
])
def test_a_sequence_has_one_name_in_the_panel_and_on_the_command_line(lotus, tmp_path, files, expected):
    """The panel's frames and the command line's folder scan name a sequence by one rule
    (naming.sequence_name), so their result files match."""
    import bpy
    from lotus_blender.blender import cli_sources, inputs
    for name in files:
        _photo_file(str(tmp_path / name))
    image = bpy.data.images.load(str(tmp_path / files[0]))
    image.source = 'SEQUENCE'
    try:
        job = tmp_path / "job"
        job.mkdir()
        prepared = inputs.prepare_frames(image, 1, 2, str(job), 64)
        sources = cli_sources.find_sources([str(tmp_path)], None)
    finally:
        bpy.data.images.remove(image)
    assert {item.name for item in prepared} == {expected}
    assert [source.name for source in sources] == [expected]


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


def test_last_used_values_win_over_blenders_remembered_ones(lotus):
    """A second run takes the scene's changed value, not the one Blender remembers from the first
    run (a "ghost" property, WM_operator_last_properties_init); a value the caller passes stays."""
    import types

    import bpy
    from lotus_blender.blender import last_used
    settings = types.SimpleNamespace(size=0)
    seen, remembered = [], []

    def execute(self, _context):
        remembered.append(self.properties.is_property_set("size", ghost=False))
        last_used.fill(self, settings, ["size"])
        seen.append(self.size)
        return {'FINISHED'}

    # Built with type(): this module's string annotations cannot name a local bpy.
    LOTUS_OT_test_last_used = type("LOTUS_OT_test_last_used", (bpy.types.Operator,), {
        "bl_idname": "lotus.test_last_used", "bl_label": "Last-used probe", "bl_options": {'REGISTER'},
        "__annotations__": {"size": bpy.props.IntProperty()}, "execute": execute})
    bpy.utils.register_class(LOTUS_OT_test_last_used)
    try:
        # undo=True as a button's call: a nested Python call neither loads nor stores the
        # remembered values (WM_operator_call_py).
        settings.size = 5000
        assert bpy.ops.lotus.test_last_used('EXEC_DEFAULT', True) == {'FINISHED'}
        settings.size = 6000   # the panel changed it: Blender still remembers 5000
        assert bpy.ops.lotus.test_last_used('EXEC_DEFAULT', True) == {'FINISHED'}
        assert bpy.ops.lotus.test_last_used('EXEC_DEFAULT', True, size=7) == {'FINISHED'}
        assert remembered[1]   # the second run did get Blender's remembered value
        assert seen == [5000, 6000, 7]
    finally:
        bpy.utils.unregister_class(LOTUS_OT_test_last_used)
