"""Builders are all-or-nothing: a failure mid-build leaves no datablock and no scene change behind,
and never poisons a later build (the cached node group counts only once complete)."""

import sys

import numpy as np
import pytest

from lotus_blender.core import maps

KINDS = ("objects", "meshes", "cameras", "lights", "materials", "images", "textures",
         "node_groups", "worlds", "collections")


def _module(addon, name):
    return sys.modules[f"{addon}.blender.builders.{name}"]


def _datablocks():
    import bpy
    return {kind: sorted(getattr(bpy.data, kind).keys()) for kind in KINDS}


def _scene_state(scene):
    return (scene.camera, scene.world, scene.render.resolution_x, scene.render.resolution_y,
            scene.render.engine, scene.view_settings.view_transform, scene.render.film_transparent)


@pytest.fixture
def scene(blender_addon, fresh_data):
    """A scene of its own with a camera and a render size that a failed build must keep."""
    import bpy
    scene = bpy.data.scenes.new("lotus_atomic")
    camera = bpy.data.objects.new("atomic_own_camera", bpy.data.cameras.new("atomic_own_camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = 640, 480
    scene.render.engine = 'BLENDER_WORKBENCH'
    with bpy.context.temp_override(scene=scene):
        yield scene


def _inputs(common, name, width=12, height=8):
    import bpy
    photo = bpy.data.images.new(name, width, height)
    depth = common.write_float_image(f"{name}_depth",
                                     np.linspace(0.2, 0.9, width * height).reshape(height, width))
    depth["lotus_kind"], depth["lotus_source"] = "disparity", photo.name
    flat = np.zeros((height, width, 3), np.float32)
    flat[..., 2] = 1.0
    normal = common.write_float_image(f"{name}_normal", maps.normals_to_normal_map(flat))
    normal["lotus_kind"], normal["lotus_source"] = "normal", photo.name
    return photo, depth, normal


def _boom(*_args, **_kwargs):
    raise RuntimeError("forced failure")


def test_failed_node_group_build_leaves_nothing_and_does_not_poison(blender_addon, scene,
                                                                     monkeypatch):
    import bpy
    scene25d = _module(blender_addon, "scene25d")
    geonodes = _module(blender_addon, "geonodes")
    photo, depth, normal = _inputs(_module(blender_addon, "common"), "atomic_gn")
    group = bpy.data.node_groups.get(geonodes.GROUP_NAME)
    if group is not None:
        bpy.data.node_groups.remove(group)  # make this build the shared group
    before, state = _datablocks(), _scene_state(scene)

    real_build = geonodes._build

    def half_build(tree):
        tree.nodes.new("NodeGroupInput")  # part of the group exists when it fails
        raise KeyError("Mesh")
    monkeypatch.setattr(geonodes, "_build", half_build)
    with pytest.raises(KeyError):
        scene25d.build_photo_scene(bpy.context, photo, depth, normal)
    assert _datablocks() == before
    assert _scene_state(scene) == state

    monkeypatch.setattr(geonodes, "_build", real_build)
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, tear_threshold=0.0)
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    assert len(evaluated.data.vertices) == 12 * 8  # the group was built anew, complete (untorn)
    assert scene.camera == camera


def test_failure_after_the_camera_restores_the_scene(blender_addon, scene, monkeypatch):
    import bpy
    scene25d = _module(blender_addon, "scene25d")
    photo, depth, normal = _inputs(_module(blender_addon, "common"), "atomic_cam")
    scene25d.geonodes.get_node_group()  # the shared group exists: only the build's own blocks count
    before, state = _datablocks(), _scene_state(scene)
    monkeypatch.setattr(scene25d, "_drive_from_camera", _boom)
    with pytest.raises(RuntimeError, match="forced failure"):
        scene25d.build_photo_scene(bpy.context, photo, depth, normal)
    assert _datablocks() == before
    assert _scene_state(scene) == state


def test_failed_relight_setup_leaves_nothing(blender_addon, scene, monkeypatch):
    import bpy
    relight = _module(blender_addon, "relight")
    photo, depth, normal = _inputs(_module(blender_addon, "common"), "atomic_relight")
    relight.scene25d.geonodes.get_node_group()
    before, state = _datablocks(), _scene_state(scene)
    monkeypatch.setattr(relight, "build_shadow_catcher", _boom)  # the last step but the world
    with pytest.raises(RuntimeError, match="forced failure"):
        relight.build_relight_scene(bpy.context, photo, depth, normal, shadow_catcher=True)
    assert _datablocks() == before
    assert _scene_state(scene) == state
    # The operator reports the failure in one line and leaves nothing either.
    with pytest.raises(RuntimeError, match="forced failure"):
        bpy.ops.lotus.relight_setup(photo=photo.name, shadow_catcher=True)
    assert _datablocks() == before
    assert _scene_state(scene) == state


def test_failed_normal_material_leaves_nothing(blender_addon, scene, monkeypatch):
    import bpy
    materials = _module(blender_addon, "materials")
    photo, _depth, normal = _inputs(_module(blender_addon, "common"), "atomic_material")
    before, state = _datablocks(), _scene_state(scene)
    monkeypatch.setattr(materials, "build_normal_material", _boom)
    with pytest.raises(RuntimeError, match="forced failure"):
        materials.apply_normal_material(bpy.context, photo, normal)
    assert _datablocks() == before
    assert _scene_state(scene) == state
