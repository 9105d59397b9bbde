"""Fill Behind in Blender (issue 18): the layer behind the tears follows the live controls, the
Camera Move helper keys a move inside the Move Range, relighting lights the fill."""

import math
import sys

import numpy as np
import pytest

from lotus_blender.core import fill, maps
from tests.test_scene25d import (_RecordingLayout, evaluated_mesh_arrays, float_image, live_module,  # noqa: F401
                                 main_mesh, tracked_datablocks)

WIDTH, HEIGHT = 48, 32


@pytest.fixture
def modules(blender_addon, tracked_datablocks):
    return {name: live_module(blender_addon, f"blender.builders.{name}")
            for name in ("scene25d", "geonodes", "camera_move", "relight")}


def _stage(scene25d, name="fill_stage", **options):
    """A box in front of a striped wall, as disparity, with a striped photo."""
    import bpy
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    disparity = np.full((HEIGHT, WIDTH), 0.2)
    box = (abs(x - WIDTH / 2) < 8) & (abs(y - HEIGHT / 2) < 8)
    disparity[box] = 0.9
    stripes = ((x // 3) % 2).astype(float)
    colours = np.stack([0.2 + 0.6 * stripes, np.full(x.shape, 0.4), np.full(x.shape, 0.3)], axis=-1)
    colours[box] = (0.9, 0.1, 0.1)
    photo = float_image(name, colours)
    depth = float_image(name + "_depth", disparity, "disparity")
    options.setdefault("focal_35mm", 35.0)
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, near=2.0, depth_range=6.0, **options)
    return obj, camera, box


def _fill_faces(obj):
    """Faces of the layer behind the tears, and how many of its corners show the filled image."""
    import bpy
    arrays = evaluated_mesh_arrays(obj)
    faces = len(arrays["loop_start"]) - len(main_mesh(arrays, WIDTH * HEIGHT)["loop_start"])
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    try:
        attribute = mesh.attributes.get("lotus_fill")
        weights = np.zeros(len(mesh.vertices), np.float32)
        if attribute is not None:
            attribute.data.foreach_get("value", weights)
    finally:
        evaluated.to_mesh_clear()
    return faces, int(np.count_nonzero(weights > 0.5))


def test_fill_layer_follows_the_live_controls(modules):
    import bpy
    scene25d, geonodes = modules["scene25d"], modules["geonodes"]
    obj, _camera, box = _stage(scene25d, move_range=0.2)
    behind, filled = bpy.data.images["fill_stage_behind"], bpy.data.images["fill_stage_fill"]
    assert behind.packed_file is not None and filled.packed_file is not None
    assert [m.name for m in obj.data.materials] == ["fill_stage_2.5D", "fill_stage_2.5D_fill"]
    assert obj["lotus_fill_opening"] > 0.5
    faces, filled_corners = _fill_faces(obj)
    assert faces > 100 and filled_corners > 100
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]
    # A smaller Move Range fills a narrower band; Fill Behind off keeps only the torn faces.
    geonodes.set_inputs(modifier, Move_Range=0.05)
    narrow, _ = _fill_faces(obj)
    geonodes.set_inputs(modifier, Fill_Behind=False)
    torn_only, corners_off = _fill_faces(obj)
    assert 0 < torn_only < narrow < faces and corners_off == 0
    # Tear off: no layer behind; a high tear threshold tears nothing here either.
    geonodes.set_inputs(modifier, Fill_Behind=True, Tear=False)
    assert _fill_faces(obj) == (0, 0)
    geonodes.set_inputs(modifier, Tear=True, Tear_Threshold=20.0)
    assert _fill_faces(obj)[0] == 0
    # Near and Depth Range move the layer with the mesh: it stays behind the box.
    geonodes.set_inputs(modifier, Tear_Threshold=0.05, Near=4.0, Depth_Range=12.0)
    obj.update_tag()
    mesh = evaluated_mesh_arrays(obj)
    main = main_mesh(mesh, WIDTH * HEIGHT)
    box_depth = -main["co"][:, 2].reshape(HEIGHT, WIDTH)[box].max()
    layer_depth = -mesh["co"][WIDTH * HEIGHT:, 2]
    assert box_depth == pytest.approx(float(maps.disparity_to_depth(0.9, 4.0, 16.0)), rel=1e-3)
    assert np.median(layer_depth) == pytest.approx(float(maps.disparity_to_depth(0.2, 4.0, 16.0)), rel=0.02)


def test_no_fill_without_tearing_or_when_off(modules):
    import bpy
    scene25d = modules["scene25d"]
    obj, _camera, _box = _stage(scene25d, name="fill_off", fill_behind=False)
    assert "fill_off_fill" not in bpy.data.images and "fill_off_behind" in bpy.data.images
    assert _fill_faces(obj)[1] == 0
    obj, _camera, _box = _stage(scene25d, name="fill_untorn", tear_threshold=0.0)
    assert "fill_untorn_behind" not in bpy.data.images and _fill_faces(obj) == (0, 0)
    with pytest.raises(ValueError, match="move range"):
        _stage(scene25d, name="fill_bad", move_range=2.0)


def test_panel_shows_the_band_and_camera_move(modules):
    import bpy
    from types import SimpleNamespace
    scene25d = modules["scene25d"]
    obj, camera, _box = _stage(scene25d, move_range=0.1)
    bpy.context.view_layer.objects.active = obj
    texts = []
    ui = sys.modules[scene25d.__name__.rpartition(".")[0] + ".scene25d_ui"]
    original = ui.draw_wrapped
    ui.draw_wrapped = lambda layout, context, text, **options: texts.append(text)
    try:
        fake = SimpleNamespace(layout=_RecordingLayout())
        bpy.types.LOTUS_PT_scene25d_live.draw(fake, bpy.context)
    finally:
        ui.draw_wrapped = original
    assert "lotus.camera_move" in fake.layout.operators
    focal_px = camera.data.lens / camera.data.sensor_width * WIDTH
    expected = fill.band_width(1.0, 1.0 / (1.0 - obj["lotus_fill_opening"]), focal_px, 0.1)
    assert any(f"up to {expected:.0f} px" in text for text in texts), texts
    # Nothing filled (every step too soft, as on a model's blurred edges): no band to speak of.
    obj["lotus_fill_opening"], texts[:] = 0.0, []
    ui.draw_wrapped = lambda layout, context, text, **options: texts.append(text)
    try:
        bpy.types.LOTUS_PT_scene25d_live.draw(SimpleNamespace(layout=_RecordingLayout()), bpy.context)
    finally:
        ui.draw_wrapped = original
    assert any("no sharp depth edge" in text for text in texts) and not any("up to" in text for text in texts)


class _RowsLayout(_RecordingLayout):
    """A layout whose rows record whether they are active and the labels of what they draw."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def row(self, **_options):
        layout = self

        class Row:
            active = True

            def prop(self, data, path, text="", **_options):
                layout.prop(data, path)
                layout.rows.append((text, self.active))
        return Row()


def test_live_mesh_greys_what_the_group_ignores(modules):
    """Tear off: Tear Threshold, Fill Behind and Move Range do nothing, so they are drawn greyed;
    Fill Behind off: Move Range is."""
    import bpy
    from types import SimpleNamespace
    scene25d, geonodes = modules["scene25d"], modules["geonodes"]
    obj, _camera, _box = _stage(scene25d, name="fill_greyed", move_range=0.1)
    bpy.context.view_layer.objects.active = obj
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]

    def drawn():
        fake = SimpleNamespace(layout=_RowsLayout())
        bpy.types.LOTUS_PT_scene25d_live.draw(fake, bpy.context)
        return dict(fake.layout.rows)
    rows = drawn()
    assert rows["Tear Threshold"] and rows["Fill Behind"] and rows["Move Range"] and rows["Near"]
    geonodes.set_inputs(modifier, Fill_Behind=False)
    rows = drawn()
    assert rows["Fill Behind"] and not rows["Move Range"]
    geonodes.set_inputs(modifier, Fill_Behind=True, Tear=False)
    rows = drawn()
    assert not (rows["Tear Threshold"] or rows["Fill Behind"] or rows["Move Range"])
    assert rows["Tear"] and rows["Near"] and rows["Depth Range"]


@pytest.mark.parametrize("move", ["DOLLY", "ORBIT_LEFT"])
def test_camera_move_keys_a_move_within_the_range(modules, move):
    import bpy
    scene25d, camera_move, relight = modules["scene25d"], modules["camera_move"], modules["relight"]
    obj, camera, _box = _stage(scene25d, name=f"fill_move_{move.lower()}", move_range=0.1)
    bpy.context.view_layer.objects.active = obj
    scene = bpy.context.scene
    scene.frame_set(1)
    start = camera.matrix_world.copy()
    distance = relight.subject_distance(bpy.context, obj, camera)
    assert bpy.ops.lotus.camera_move(move=move, amount=1.0, frames=24) == {'FINISHED'}
    fcurves = {(fc.data_path, fc.array_index): fc for fc in camera.animation_data.action.fcurves} \
        if hasattr(camera.animation_data.action, "fcurves") else None
    scene.frame_set(25)
    end = camera.matrix_world.copy()
    scene.frame_set(1)
    assert np.allclose(np.array(camera.matrix_world), np.array(start), atol=1e-5)
    travel = (end.translation - start.translation).length
    forward = -(start.to_3x3().col[2])
    if move == "DOLLY":
        assert travel == pytest.approx(0.1 * distance, rel=1e-3)
        assert (end.translation - start.translation).normalized().dot(forward) == pytest.approx(1.0, abs=1e-4)
    else:
        # An orbit of 0.1 rad about the subject: the subject stays in the middle of the view.
        assert travel == pytest.approx(2 * distance * math.sin(0.05), rel=1e-3)
        pivot = start.translation + forward * distance
        assert (end.inverted() @ pivot).xy.length < 1e-3 * distance
        assert (end.translation - start.translation).dot(start.to_3x3().col[0]) < 0     # to the left
    assert fcurves is None or len(fcurves) >= 6
    assert "UNDO" in bpy.types.LOTUS_OT_camera_move.bl_options
    camera.animation_data_clear()


def test_relight_lights_the_fill(modules):
    import bpy
    scene25d, relight = modules["scene25d"], modules["relight"]
    obj, _camera, _box = _stage(scene25d, name="fill_relight")
    photo = bpy.data.images["fill_relight"]
    result = relight.build_relight_scene(bpy.context, photo, bpy.data.images["fill_relight_depth"],
                                         light_rig=False, gap_fill=False)
    assert result["object"] == obj
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]
    key = scene25d.geonodes.input_identifier(modifier.node_group, "Fill Material")
    material = scene25d.compat.get_modifier_input(modifier, key)
    assert material["lotus_material"] == "SHADED"
    kinds = {node.bl_idname for node in scene25d.compat.node_tree(material).nodes}
    assert {"ShaderNodeBsdfPrincipled", "ShaderNodeAttribute"} <= kinds
    for name in ("lotus_fill_relight_world",):
        if name in bpy.data.worlds:
            bpy.data.worlds.remove(bpy.data.worlds[name])


def test_near_side_lip_only_at_steps(modules):
    """The near side of a step reaches past its edge pixels (no outline at the tear), but a slope
    that tears column after column keeps its vertices on their pixels' rays: a lip there opened
    cracks onto the world between the torn faces (model-like maps: soft edges are such slopes)."""
    import bpy
    scene25d, geonodes = modules["scene25d"], modules["geonodes"]
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    near, far = 2.0, 8.0
    depth = np.full((HEIGHT, WIDTH), 5.0)
    ramp = x < 12
    depth[ramp] = 2.2 * 1.08 ** x[ramp]            # 8% deeper per column: torn, but not a step
    box = (abs(x - 32) < 6) & (abs(y - HEIGHT / 2) < 6)
    depth[box] = 2.5                                # a step in front of the wall at 5
    disparity = (1 / depth - 1 / far) / (1 / near - 1 / far)
    photo = float_image("lip_stage", np.full((HEIGHT, WIDTH, 3), 0.5))
    image = float_image("lip_stage_depth", disparity, "disparity")
    obj, _camera = scene25d.build_photo_scene(bpy.context, photo, image, near=near, depth_range=far - near,
                                              focal_35mm=35.0)

    def projected():
        co = main_mesh(evaluated_mesh_arrays(obj), WIDTH * HEIGHT)["co"]
        return co[:, :2] / -co[:, 2:3], -co[:, 2]

    torn, vertex_depth = projected()
    geonodes.set_inputs(obj.modifiers[scene25d.MODIFIER_NAME], Tear=False)
    obj.update_tag()
    on_rays, _ = projected()
    shift = np.abs(torn - on_rays).max(axis=1)      # per axis: the lip reaches LIP_PX along each
    pixel = np.median(np.abs(np.diff(np.unique(np.round(on_rays[:, 0], 6)))))
    # The left columns, less the frame's outermost vertices (with Fill Behind they reach past it).
    inside = ~np.isclose(torn[:, 0], torn[:, 0].min()) & ~np.isclose(torn[:, 1], torn[:, 1].min()) \
        & ~np.isclose(torn[:, 1], torn[:, 1].max())
    on_ramp = (on_rays[:, 0] < np.quantile(on_rays[:, 0], 0.15)) & inside
    on_box = np.isclose(vertex_depth, 2.5, rtol=1e-3)
    assert on_ramp.sum() > 100 and on_box.sum() > 50
    assert shift[on_ramp].max() < 1e-3 * pixel
    assert shift[on_box].max() == pytest.approx(geonodes.LIP_PX * pixel, rel=0.05)
    # The box's corners reach along both axes (a pixel is a square; a unit direction fell short).
    both_axes = np.abs(torn - on_rays).min(axis=1)
    assert both_axes[on_box].max() == pytest.approx(geonodes.LIP_PX * pixel, rel=0.05)


def test_frame_edges_reach_past_the_frame_with_fill_behind(modules):
    """With Fill Behind the outermost vertices lie past the frame's edges by what a move of Move
    Range can bring into view there (f_px * Move Range * BAND_MARGIN pixels); without, on them."""
    scene25d, geonodes = modules["scene25d"], modules["geonodes"]
    obj, camera, _box = _stage(scene25d, name="fill_skirt", move_range=0.1)
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]

    def frame_extent():
        co = main_mesh(evaluated_mesh_arrays(obj), WIDTH * HEIGHT)["co"]
        projected = co[:, :2] / -co[:, 2:3]
        return projected[:, 0].max() - projected[:, 0].min()      # across, in units of the focal length

    focal_px = camera.data.lens / camera.data.sensor_width * WIDTH
    assert frame_extent() * focal_px == pytest.approx(WIDTH + 2 * focal_px * 0.1 * geonodes.BAND_MARGIN, rel=1e-3)
    geonodes.set_inputs(modifier, Fill_Behind=False)
    obj.update_tag()
    assert frame_extent() * focal_px == pytest.approx(WIDTH, rel=1e-3)
