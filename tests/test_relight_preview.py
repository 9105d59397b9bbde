"""Preview Relight: fast settings while it renders, band assembly, cancel, and an untouched scene."""

import sys

import numpy as np
import pytest

from lotus_blender.core import maps
from tests import blender_env

WIDTH, HEIGHT = 48, 36


def module(addon, name):
    return sys.modules[f"{addon}.blender.builders.{name}"]


def relit_scene(addon, name):
    """A relight setup for a small photo: a near disc on a far background, flat normals."""
    import bpy
    relight, common = module(addon, "relight"), module(addon, "common")
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    disparity = np.where((rows - 18) ** 2 + (cols - 24) ** 2 < 100, 0.9, 0.2).astype(np.float32)
    flat = np.zeros((HEIGHT, WIDTH, 3), dtype=np.float32)
    flat[..., 2] = 1.0
    scene = bpy.data.scenes.new(name)
    with bpy.context.temp_override(scene=scene):
        photo = bpy.data.images.new(f"{name}_photo", WIDTH, HEIGHT)
        rgba = np.ones((HEIGHT, WIDTH, 4), dtype=np.float32)
        rgba[..., 0] = cols / WIDTH
        rgba[..., 1] = 0.6
        photo.pixels.foreach_set(rgba.ravel())
        for suffix, kind, values in (("depth", "disparity", disparity),
                                     ("normal", "normal", maps.normals_to_normal_map(flat))):
            image = common.write_float_image(f"{name}_photo_{suffix}", values)
            image["lotus_kind"], image["lotus_source"] = kind, photo.name
        relight.build_relight_scene(bpy.context, photo, bpy.data.images[f"{name}_photo_depth"],
                                    bpy.data.images[f"{name}_photo_normal"])
    scene.render.threads_mode, scene.render.threads = 'FIXED', 2
    return scene


def rna_values(struct):
    """Every readable property of an RNA struct (pointers by name), for before/after comparisons."""
    values = {}
    for prop in struct.bl_rna.properties:
        if prop.identifier == "rna_type" or prop.type == 'COLLECTION':
            continue
        value = getattr(struct, prop.identifier, None)
        if prop.type == 'POINTER':
            value = getattr(value, "name", None) if value is not None else None
        elif hasattr(value, "__len__") and not isinstance(value, str):
            value = tuple(value)
        values[prop.identifier] = value
    return values


def scene_state(scene):
    scene.view_layers[0].update()  # drivers (the gap fill follows the mesh) are evaluated lazily
    state = {"render": rna_values(scene.render), "cycles": rna_values(scene.cycles),
             "image_settings": rna_values(scene.render.image_settings)}
    compat = blender_env.compat()
    for obj in scene.objects:
        for modifier in obj.modifiers:
            if modifier.type == 'NODES' and modifier.node_group is not None:
                inputs = (item.identifier for item in modifier.node_group.interface.items_tree
                          if item.item_type == 'SOCKET' and item.in_out == 'INPUT'
                          and item.socket_type != 'NodeSocketGeometry')
                state[f"{obj.name}/{modifier.name}"] = {
                    key: getattr(value, "name", value)
                    for key in inputs for value in [compat.get_modifier_input(modifier, key)]}
    return state


def changes(before, after):
    """{(group, property): (before, after)} of every value that differs."""
    found = {(group, key): (values.get(key), after.get(group, {}).get(key))
             for group, values in before.items() for key in set(values) | set(after.get(group, {}))
             if values.get(key) != after.get(group, {}).get(key)}
    # A new scene's EXR colour space is unset ('') until an EXR is first written; Blender then
    # fills in its default, and an unset value cannot be set back.
    if found.get(("image_settings", "linear_colorspace_settings"), ("x",))[0] == "":
        del found[("image_settings", "linear_colorspace_settings")]
    return found


@pytest.fixture
def render_watch():
    """What the render settings were while each render ran."""
    import bpy
    seen = []

    def record(scene, *args):
        cycles, render = scene.cycles, scene.render
        seen.append({"samples": cycles.samples, "denoising": cycles.use_denoising,
                     "adaptive": cycles.use_adaptive_sampling, "compositing": render.use_compositing,
                     "single_layer": render.use_single_layer, "persistent": render.use_persistent_data,
                     "size": (render.resolution_x, render.resolution_y, render.resolution_percentage),
                     "border": render.use_border})
    bpy.app.handlers.render_pre.append(record)
    yield seen
    bpy.app.handlers.render_pre.remove(record)


def test_fast_preview_size_pixels_and_settings_then_the_scene_is_untouched(
        blender_addon, fresh_data, render_watch):
    import bpy
    preview = module(blender_addon, "relight_preview")
    common = module(blender_addon, "common")
    scene = relit_scene(blender_addon, "fastprev")
    scene.render.resolution_x, scene.render.resolution_y = 400, 300  # preview: 40x30
    before = scene_state(scene)
    panels = sys.modules[f"{blender_addon}.blender.panels"]
    panels._file_loaded()
    with bpy.context.temp_override(scene=scene):
        image = preview.render_preview(bpy.context, "fastprev_preview", max_size=40)
    assert tuple(image.size) == (40, 30)
    # Its renders are not the artist's: the panel offers no Render Result after a preview.
    assert not panels.has_pixels(bpy.data.images.get("Render Result"))
    pixels = common.read_pixels(image)[..., :3]
    assert np.isfinite(pixels).all() and pixels.max() > 0.05 and pixels.std() > 0.01
    assert len(render_watch) == preview.math.ceil(30 / preview.BAND_ROWS['FAST'])
    for seen in render_watch:
        assert seen["samples"] == preview.FAST_SAMPLES and seen["adaptive"] and not seen["denoising"]
        assert not seen["compositing"] and seen["single_layer"] and seen["persistent"]
        assert seen["size"] == (40, 30, 100) and seen["border"]
    assert changes(before, scene_state(scene)) == {}


def test_bands_assemble_into_the_single_render(blender_addon, fresh_data, monkeypatch):
    import bpy
    preview = module(blender_addon, "relight_preview")
    common = module(blender_addon, "common")
    scene = relit_scene(blender_addon, "bandprev")
    scene.render.resolution_x, scene.render.resolution_y = 480, 360
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.seed = 3
    with bpy.context.temp_override(scene=scene):
        whole = common.read_pixels(preview.render_preview(
            bpy.context, "band_whole", max_size=48, samples=4, quality='FULL'))
        monkeypatch.setitem(preview.BAND_ROWS, 'FULL', 7)  # 36 rows: six uneven bands
        banded = common.read_pixels(preview.render_preview(
            bpy.context, "band_bands", max_size=48, samples=4, quality='FULL'))
    assert banded.shape == whole.shape == (36, 48, 4)
    np.testing.assert_allclose(banded, whole, atol=1e-5)
    assert whole[..., :3].std() > 0.01


def test_full_quality_keeps_the_scene_sampling_and_denoises_bands_with_margins(
        blender_addon, fresh_data, render_watch, monkeypatch):
    import bpy
    preview = module(blender_addon, "relight_preview")
    common = module(blender_addon, "common")
    scene = relit_scene(blender_addon, "fullprev")
    scene.cycles.samples = 6
    assert scene.cycles.use_denoising  # the relight setup turns it on
    monkeypatch.setitem(preview.BAND_ROWS, 'FULL', 12)
    with bpy.context.temp_override(scene=scene):
        image = preview.render_preview(bpy.context, "fullprev_preview", max_size=24, quality='FULL')
    assert tuple(image.size) == (24, 18)
    assert np.isfinite(common.read_pixels(image)).all()
    assert [seen["samples"] for seen in render_watch] == [6, 6]
    assert all(seen["denoising"] for seen in render_watch)
    assert scene.cycles.samples == 6 and not scene.render.use_border


def test_cancel_midway_puts_everything_back(blender_addon, fresh_data, monkeypatch):
    import bpy
    preview = module(blender_addon, "relight_preview")
    scene = relit_scene(blender_addon, "cancelprev")
    scene.cycles.samples = 2
    before = scene_state(scene)
    monkeypatch.setitem(preview.BAND_ROWS, 'FAST', 10)
    with bpy.context.temp_override(scene=scene):
        job = preview.PreviewRender(bpy.context, "cancelprev_preview", max_size=40)
        job.start()
        assert scene.cycles.samples == preview.FAST_SAMPLES and len(job.bands) == 3
        assert not job.step() and job.fraction == pytest.approx(1 / 3)
        folder = job.folder
        job.cancel()
    assert changes(before, scene_state(scene)) == {}
    assert not __import__("os").path.exists(folder)
    assert "cancelprev_preview" not in bpy.data.images


def test_a_setting_changed_during_the_preview_is_kept(blender_addon, fresh_data):
    import bpy
    preview = module(blender_addon, "relight_preview")
    scene = relit_scene(blender_addon, "editprev")
    with bpy.context.temp_override(scene=scene):
        assert scene.cycles.use_denoising
        job = preview.PreviewRender(bpy.context, "editprev_preview", max_size=20)
        job.start()
        assert not scene.cycles.use_denoising
        scene.cycles.samples = 77  # the artist edits while the bands render
        job.cancel()
    assert scene.cycles.samples == 77
    assert scene.cycles.use_denoising  # the preview's own changes are undone


def test_operator_uses_the_panel_quality_in_background(blender_addon, fresh_data, render_watch):
    import bpy
    scene = relit_scene(blender_addon, "opprev")
    scene.lotus_relight.preview_size = 32
    scene.lotus_relight.preview_quality = 'FULL'
    scene.cycles.samples = 3
    with bpy.context.temp_override(scene=scene):
        assert bpy.ops.lotus.preview_relight('INVOKE_DEFAULT') == {'FINISHED'}
    image = bpy.data.images["opprev_photo_relight_preview"]
    assert tuple(image.size) == (32, 24) and image["lotus_kind"] == "relight_preview"
    assert render_watch and all(seen["samples"] == 3 for seen in render_watch)


def test_a_build_without_a_denoiser_previews_without_denoising(blender_addon, fresh_data, render_watch,
                                                               monkeypatch):
    import bpy
    preview = module(blender_addon, "relight_preview")
    scene = relit_scene(blender_addon, "nodenoise")
    scene.cycles.samples = 2
    # As Debian's Blender 4.3, which has no OpenImageDenoise.
    monkeypatch.setattr(blender_env.compat(), "cycles_can_denoise", lambda scene: False)
    with bpy.context.temp_override(scene=scene):
        job = preview.PreviewRender(bpy.context, "nodenoise_preview", max_size=20, quality='FULL')
        preview.run_blocking(job)
    assert render_watch and not any(seen["denoising"] for seen in render_watch)
    assert job.notes == ["this Blender cannot denoise: the preview is not denoised"]
    assert scene.cycles.use_denoising
