"""Photo -> 2.5D scene builder on synthetic maps: the geometry nodes match the numpy core."""

import io
import math
import sys

import numpy as np
import pytest

from lotus_blender.core import exif, geometry, maps
from tests import blender_env, reference_math


# ---- helpers (also used by test_scene25d_ground_truth.py) ----

def live_module(addon_name, relative):
    return sys.modules[f"{addon_name}.{relative}"]


def float_image(name, values, kind=None):
    """A float, Non-Color Blender image from a top-row-first (H, W) or (H, W, 3) array."""
    import bpy
    values = np.asarray(values, dtype=np.float32)
    height, width = values.shape[:2]
    image = bpy.data.images.new(name, width, height, float_buffer=True, alpha=True)
    image.colorspace_settings.name = 'Non-Color'
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :3] = values[..., None] if values.ndim == 2 else values
    image.pixels.foreach_set(rgba[::-1].ravel())
    if kind:
        image["lotus_kind"] = kind
    return image


def evaluated_mesh_arrays(obj):
    """(vertex positions in object space, corner normals, corner vertex indices, polygon loop starts,
    polygon sizes, UVs per corner) of the evaluated object, copied out with foreach_get."""
    import bpy
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        def get(collection, attribute, width, dtype=np.float32):
            out = np.empty(len(collection) * width, dtype=dtype)
            collection.foreach_get(attribute, out)
            return out.reshape(-1, width) if width > 1 else out
        arrays = {
            "co": get(mesh.vertices, "co", 3),
            "corner_normals": get(mesh.corner_normals, "vector", 3),
            "corner_verts": get(mesh.loops, "vertex_index", 1, np.int32),
            "loop_start": get(mesh.polygons, "loop_start", 1, np.int32),
            "loop_total": get(mesh.polygons, "loop_total", 1, np.int32),
            "polygon_normals": get(mesh.polygons, "normal", 3),
            "uv": get(mesh.uv_layers["UVMap"].data, "uv", 2) if "UVMap" in mesh.uv_layers else None,
            "smooth": get(mesh.polygons, "use_smooth", 1, bool),
        }
    finally:
        evaluated.to_mesh_clear()
    return arrays


def main_mesh(mesh, vertex_count):
    """The 2.5D mesh proper out of evaluated_mesh_arrays (its vertices come first): the first
    vertex_count vertices and the faces made of them only, without the layer behind the tears."""
    corners_per_face = np.split(mesh["corner_verts"], np.cumsum(mesh["loop_total"])[:-1])
    keep = np.array([corners.max() < vertex_count for corners in corners_per_face], bool)
    corner_keep = np.repeat(keep, mesh["loop_total"])
    loop_total = mesh["loop_total"][keep]
    out = dict(mesh, co=mesh["co"][:vertex_count], corner_verts=mesh["corner_verts"][corner_keep],
               corner_normals=mesh["corner_normals"][corner_keep], loop_total=loop_total,
               loop_start=np.concatenate([[0], np.cumsum(loop_total)[:-1]]).astype(np.int32),
               polygon_normals=mesh["polygon_normals"][keep], smooth=mesh["smooth"][keep])
    out["uv"] = None if mesh["uv"] is None else mesh["uv"][corner_keep]
    return out


def vertex_pixels(co, intr, grid_order=False):
    """(row, col) of the pixel whose centre is nearest to each camera-space vertex (the
    outermost vertices lie on the frame's edges: they still count as their own pixels).
    grid_order, for the 2.5D mesh of one vertex per pixel: from the vertex's index instead (the
    Grid's order: columns left to right, each bottom to top), as the near side of a tear reaches
    geonodes.LIP_PX (more than half a pixel) toward the far pixel."""
    if grid_order:
        assert len(co) == intr.width * intr.height
        index = np.arange(len(co))
        return intr.height - 1 - index % intr.height, index // intr.height
    pixel = reference_math.project(co.astype(np.float64), intr)
    rows = np.clip(np.round(pixel[:, 1] - 0.5).astype(int), 0, intr.height - 1)
    return rows, np.clip(np.round(pixel[:, 0] - 0.5).astype(int), 0, intr.width - 1)


@pytest.fixture
def tracked_datablocks(blender_addon):
    """Remove every object, mesh, camera, material, image, texture and node group a test made, and
    restore the scene camera and resolution."""
    import bpy
    kinds = ("objects", "meshes", "cameras", "materials", "images", "textures", "node_groups")
    before = {kind: set(getattr(bpy.data, kind).keys()) for kind in kinds}
    scene = bpy.context.scene
    saved = scene.camera, scene.render.resolution_x, scene.render.resolution_y
    yield
    scene.camera, scene.render.resolution_x, scene.render.resolution_y = saved
    for kind in kinds:
        collection = getattr(bpy.data, kind)
        for name in set(collection.keys()) - before[kind]:
            if kind == "node_groups" and name.startswith("Lotus 2.5D Mesh"):
                continue  # the shared group is kept, like Blender keeps a file's node groups
            collection.remove(collection[name])


@pytest.fixture
def scene25d(blender_addon, tracked_datablocks):
    return live_module(blender_addon, "blender.builders.scene25d")


def _photo(name, width, height):
    import bpy
    return bpy.data.images.new(name, width, height)


# ---- tests ----

def test_geonodes_mesh_matches_core_unprojection(scene25d):
    import bpy
    height, width = 36, 48
    disparity = np.random.default_rng(3).uniform(0.0, 1.0, (height, width)).astype(np.float32)
    photo = _photo("s25_photo.png", width, height)
    depth = float_image("s25_photo_depth", disparity, "disparity")
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, near=1.5, depth_range=6.0,
                                             tear_threshold=0.0, focal_35mm=30.0)
    assert obj.name == "s25_photo" and camera.name == "s25_photo_camera"
    assert bpy.context.scene.camera == camera
    assert (bpy.context.scene.render.resolution_x, bpy.context.scene.render.resolution_y) == (width, height)
    assert camera.data.lens == pytest.approx(geometry.lens_from_35mm(30.0, width, height))
    assert np.allclose(np.array(obj.matrix_world), np.array(camera.matrix_world))

    mesh = evaluated_mesh_arrays(obj)
    assert len(mesh["co"]) == width * height and len(mesh["loop_start"]) == (width - 1) * (height - 1)
    assert mesh["smooth"].all()
    intr = geometry.intrinsics_from_lens(camera.data.lens, camera.data.sensor_width, width, height)
    rows, cols = vertex_pixels(mesh["co"], intr)
    assert len(set(zip(rows.tolist(), cols.tolist()))) == width * height      # one vertex per pixel
    expected = reference_math.unproject_grid(maps.disparity_to_depth(disparity, 1.5, 7.5), intr)
    assert np.abs(mesh["co"] - expected[rows, cols]).max() < 1e-4
    # The mesh covers the whole frame: its outermost vertices lie on the frame's edges.
    pixel = reference_math.project(mesh["co"].astype(np.float64), intr)
    assert pixel[:, 0].min() == pytest.approx(0.0, abs=0.01) and pixel[:, 0].max() == pytest.approx(width, abs=0.01)
    assert pixel[:, 1].min() == pytest.approx(0.0, abs=0.01) and pixel[:, 1].max() == pytest.approx(height, abs=0.01)
    # UVs sit on the vertex's ray: the centre of its pixel inside, the frame's edge at the border
    # (v = 0 at the bottom).
    corner_rows, corner_cols = rows[mesh["corner_verts"]], cols[mesh["corner_verts"]]
    right, down = geometry.RAY_OFFSET_PX
    assert np.allclose(mesh["uv"][:, 0], geometry.grid_ray_coordinates(width, width, right)[corner_cols] / width,
                       atol=1e-6)
    ray_rows = geometry.grid_ray_coordinates(height, height, down)
    assert np.allclose(mesh["uv"][:, 1], 1.0 - ray_rows[corner_rows] / height, atol=1e-6)


def test_relative_depth_and_live_controls(scene25d):
    import bpy
    geonodes = sys.modules[scene25d.__name__.rpartition(".")[0] + ".geonodes"]
    height, width = 20, 30
    relative = np.random.default_rng(4).uniform(0.0, 1.0, (height, width)).astype(np.float32)
    depth = float_image("s25_rel_depth", relative, "depth")
    obj, camera = scene25d.build_photo_scene(bpy.context, _photo("s25_rel", width, height), depth,
                                             near=3.0, depth_range=2.0, tear_threshold=0.0)
    intr = geometry.intrinsics_from_lens(camera.data.lens, camera.data.sensor_width, width, height)

    def check(near, far):
        mesh = evaluated_mesh_arrays(obj)
        rows, cols = vertex_pixels(mesh["co"], intr)
        expected = reference_math.unproject_grid(maps.relative_depth_to_depth(relative, near, far), intr)
        assert np.abs(mesh["co"] - expected[rows, cols]).max() < 1e-4

    check(3.0, 5.0)
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]
    geonodes.set_inputs(modifier, Near=1.0, Depth_Range=9.0)
    check(1.0, 10.0)
    # The field of view follows the camera through drivers.
    camera.data.lens = 80.0
    bpy.context.view_layer.update()
    intr = geometry.intrinsics_from_lens(80.0, camera.data.sensor_width, width, height)
    check(1.0, 10.0)


def test_tearing_and_resolution_are_live(scene25d):
    import bpy
    geonodes = sys.modules[scene25d.__name__.rpartition(".")[0] + ".geonodes"]
    height, width = 24, 32
    relative = np.full((height, width), 0.1, dtype=np.float32)
    relative[6:18, 8:20] = 0.0          # a box in front of a far background
    relative[:, 26:] = np.linspace(0.1, 0.3, height, dtype=np.float32)[:, None]   # a gentle slope
    depth = float_image("s25_step_depth", relative, "depth")
    obj, camera = scene25d.build_photo_scene(bpy.context, _photo("s25_step", width, height), depth,
                                             near=2.0, depth_range=10.0)
    metric = maps.relative_depth_to_depth(relative, 2.0, 12.0)
    torn = geometry.torn_faces(metric, scene25d.DEFAULT_TEAR_THRESHOLD)
    geonodes.set_inputs(obj.modifiers[scene25d.MODIFIER_NAME], Fill_Behind=False)
    obj.update_tag()
    mesh = evaluated_mesh_arrays(obj)
    # The mesh keeps every vertex and the untorn faces; the torn faces move to the layer behind
    # (their own vertices, pushed back to the far side), so each grid quad is there exactly once.
    assert 0 < np.count_nonzero(torn) < (width - 1) * (height - 1)
    assert len(mesh["loop_start"]) == (width - 1) * (height - 1)
    assert len(mesh["co"]) == width * height + 4 * np.count_nonzero(torn)
    assert len(main_mesh(mesh, width * height)["loop_start"]) == np.count_nonzero(~torn)
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]
    geonodes.set_inputs(modifier, Tear_Threshold=1.0)
    obj.update_tag()
    assert len(evaluated_mesh_arrays(obj)["loop_start"]) == (width - 1) * (height - 1)
    geonodes.set_inputs(modifier, Tear=False, Max_Vertices=200)
    obj.update_tag()
    mesh = evaluated_mesh_arrays(obj)
    across, down = geometry.vertex_grid_size(width, height, 200)
    assert len(mesh["co"]) == across * down <= 200
    intr = geometry.intrinsics_from_lens(camera.data.lens, camera.data.sensor_width, width, height)
    samples, rows, cols = geometry.downsample_grid(metric, 200)
    expected = reference_math.unproject_grid(samples, intr).reshape(-1, 3)
    # Each grid vertex is one of the expected pixel-centre points.
    distances = np.linalg.norm(mesh["co"][:, None, :] - expected[None, :, :], axis=-1).min(axis=1)
    assert distances.max() < 1e-4


def test_custom_normals_from_normal_image(scene25d):
    import bpy
    if not blender_env.compat().HAS_SET_MESH_NORMAL:
        pytest.skip("custom normals on the 2.5D mesh need the Set Mesh Normal node (Blender 4.5+)")
    height, width = 12, 16
    tilt = math.radians(30.0)
    normal_cam = np.zeros((height, width, 3), dtype=np.float32)
    normal_cam[:] = (math.sin(tilt), 0.0, math.cos(tilt))     # facing the camera, turned to the right
    normal_cam[:, width // 2:] = (0.0, -math.sin(tilt), math.cos(tilt))
    encoded = maps.normals_to_normal_map(normal_cam, "OPENGL")
    depth = float_image("s25_n_depth", np.full((height, width), 0.5), "disparity")
    normal = float_image("s25_n_normal", encoded, "normal")
    obj, camera = scene25d.build_photo_scene(bpy.context, _photo("s25_n", width, height), depth, normal,
                                             tear_threshold=0.0)
    mesh = evaluated_mesh_arrays(obj)
    intr = geometry.intrinsics_from_lens(camera.data.lens, camera.data.sensor_width, width, height)
    rows, cols = vertex_pixels(mesh["co"], intr)
    corner = mesh["corner_verts"]
    expected = normal_cam[rows[corner], cols[corner]]
    assert np.abs(mesh["corner_normals"] - expected).max() < 2e-3


def test_focal_length_sources(scene25d, tmp_path):
    import bpy
    from PIL import Image
    # 35 mm equivalent from the photo file's EXIF.
    path = tmp_path / "s25_exif.jpg"
    image = Image.new("RGB", (30, 20), (128, 100, 80))
    tags = Image.Exif()
    tags.get_ifd(0x8769)[0xA405] = 24
    image.save(path, exif=tags)
    photo = bpy.data.images.load(str(path))
    depth = float_image("s25_exif_depth", np.full((20, 30), 0.5), "disparity")
    _obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth)
    assert camera.data.lens == pytest.approx(24.0)      # 3:2: the 35 mm equivalent is the lens
    assert camera["lotus_focal_source"] == "recorded"
    assert camera.name == "s25_exif_camera"
    # No EXIF: the scene camera's field of view (now the camera just made), then 50 mm.
    camera.data.lens = 70.0
    plain = _photo("s25_plain", 30, 20)
    _obj, second = scene25d.build_photo_scene(bpy.context, plain, depth)
    assert second.data.lens == pytest.approx(70.0) and second["lotus_focal_source"] == "scene camera"
    bpy.context.scene.camera = None
    _obj, third = scene25d.build_photo_scene(bpy.context, plain, depth)
    assert third.data.lens == pytest.approx(geometry.DEFAULT_LENS_MM) and third["lotus_focal_source"] == "default"


def test_exif_reader_without_35mm_tag():
    from PIL import Image
    buffer = io.BytesIO()
    tags = Image.Exif()
    exif_ifd = tags.get_ifd(0x8769)
    exif_ifd[0x920A] = 4.0            # FocalLength 4 mm
    exif_ifd[0xA002], exif_ifd[0xA003] = 4000, 3000
    exif_ifd[0xA20E] = 4000 / 6.0     # 6 mm wide sensor: pixels per unit
    exif_ifd[0xA210] = 4              # unit: mm
    Image.new("RGB", (8, 6)).save(buffer, "JPEG", exif=tags)
    focal = exif.focal_35mm_from_bytes(buffer.getvalue())
    assert focal == pytest.approx(4.0 * geometry.FULL_FRAME_DIAGONAL_MM / 7.5, rel=1e-3)
    assert exif.focal_35mm_from_bytes(b"\x89PNG\r\n\x1a\n") is None


def test_displace_mode(scene25d):
    import bpy
    height, width = 16, 24
    disparity = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    depth = float_image("s25_disp_depth", disparity, "disparity")
    obj, camera = scene25d.build_photo_scene(bpy.context, _photo("s25_disp", width, height), depth,
                                             mode="DISPLACE", near=2.0, depth_range=4.0)
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]
    assert modifier.type == 'DISPLACE' and modifier.texture.image == depth
    assert np.allclose(np.array(obj.matrix_world), np.array(camera.matrix_world))
    mesh = evaluated_mesh_arrays(obj)
    assert len(mesh["co"]) == width * height and mesh["smooth"].all()
    # A plane at the far distance pushed toward the camera by value * range.
    intr = geometry.intrinsics_from_lens(camera.data.lens, camera.data.sensor_width, width, height)
    base = geometry.unproject(np.full((height, width), 6.0), intr)
    rows, cols = vertex_pixels(base.reshape(-1, 3), intr)
    expected_z = -6.0 + disparity[rows, cols] * 4.0
    assert np.abs(mesh["co"][:, 2] - expected_z).max() < 0.05
    assert np.allclose(mesh["co"][:, :2], base.reshape(-1, 3)[:, :2], atol=1e-5)


def test_operator_finds_the_photo_results(scene25d):
    import bpy
    photo = _photo("s25_op", 20, 10)
    float_image("s25_op_depth", np.full((10, 20), 0.25), "disparity")
    result = bpy.ops.lotus.build_photo_scene(photo=photo.name, material='SHADED', max_vertices=50)
    assert result == {'FINISHED'}
    obj = bpy.data.objects["s25_op"]
    assert bpy.context.view_layer.objects.active == obj
    assert obj.active_material["lotus_material"] == "SHADED"
    assert len(evaluated_mesh_arrays(obj)["co"]) <= 50
    with pytest.raises(RuntimeError, match="no image named 's25_missing'"):   # reported as an error
        bpy.ops.lotus.build_photo_scene(photo="s25_missing")
    panel = bpy.types.LOTUS_PT_scene25d
    assert (panel.bl_parent_id, panel.bl_space_type, panel.bl_category) == ("LOTUS_PT_view3d", 'VIEW_3D', "Lotus")


def test_build_follows_a_camera_not_evaluated_yet(scene25d):
    """Right after an undo (the redo panel undoes, then runs the build again) objects' matrix_world
    is not evaluated yet. Setting the camera's location without a depsgraph update leaves it in the
    same state: the mesh and its camera still go where the scene camera is."""
    import bpy
    from mathutils import Euler
    photo = _photo("s25_moved", 20, 10)
    depth = float_image("s25_moved_depth", np.full((10, 20), 0.25), "disparity")
    camera = bpy.context.scene.camera
    saved = camera.location.copy(), camera.rotation_euler.copy()
    try:
        camera.location, camera.rotation_euler = (1.0, -7.0, 2.5), (1.2, 0.0, 0.3)
        # The builder itself: a bpy.ops call evaluates the depsgraph before it runs the operator.
        scene25d.build_photo_scene(bpy.context, photo, depth, max_vertices=50)
        expected = np.array(Euler((1.2, 0.0, 0.3)).to_matrix())
        for built in (bpy.data.objects["s25_moved"], bpy.data.objects["s25_moved_camera"]):
            assert np.allclose(np.array(built.location), (1.0, -7.0, 2.5), atol=1e-5)
            assert np.allclose(np.array(built.rotation_euler.to_matrix()), expected, atol=1e-5)
    finally:
        camera.location, camera.rotation_euler = saved
        bpy.context.view_layer.update()


def test_no_refinement_at_a_default_depth_range(scene25d):
    """Refining at a guessed depth range bends the depth toward normals it does not match (issue 14):
    when the range falls back to the default the mesh uses the raw map, and the report says why."""
    import bpy
    photo = _photo("s25_guess", 20, 10)
    depth = float_image("s25_guess_depth", np.linspace(0.2, 0.8, 200).reshape(10, 20), "disparity")
    normal = float_image("s25_guess_normal", np.full((10, 20, 3), (0.5, 0.5, 1.0)))
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal)
    assert camera["lotus_depth_range_source"] == "default"
    assert not obj["lotus_refined"] and "s25_guess_depth_refined" not in bpy.data.images
    assert "not refined with the normals (the depth range is a default" in camera["lotus_camera_report"]
    obj, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, depth_range=2.0)
    assert obj["lotus_refined"] and "refined with the normals" in camera["lotus_camera_report"]


def test_second_build_replaces_the_first(scene25d, monkeypatch):
    """Building again (another Focal Source) rebuilds in place: no "<stem>.001" or
    "<stem>_camera.001"; a rebuild that fails leaves the first build as it was."""
    import bpy
    photo = _photo("s25_again", 20, 10)
    depth = float_image("s25_again_depth", np.linspace(0.2, 0.8, 200).reshape(10, 20), "disparity")
    normal = float_image("s25_again_normal", np.full((10, 20, 3), (0.5, 0.5, 1.0)))
    first, _ = scene25d.build_photo_scene(bpy.context, photo, depth, normal, focal_35mm=24.0, depth_range=2.0)
    child = bpy.data.objects.new("s25_again_child", None)
    bpy.context.collection.objects.link(child)
    child.parent = first
    mesh, camera = scene25d.build_photo_scene(bpy.context, photo, depth, normal, focal_35mm=85.0, depth_range=2.0)
    names = lambda collection: sorted(b.name for b in collection if b.name.startswith("s25_again"))
    assert names(bpy.data.objects) == ["s25_again", "s25_again_camera", "s25_again_child"]
    assert (mesh.name, camera.name) == ("s25_again", "s25_again_camera")
    assert names(bpy.data.meshes) == ["s25_again"] and names(bpy.data.cameras) == ["s25_again_camera"]
    assert "s25_again_2.5D" in names(bpy.data.materials)
    assert "s25_again_depth_refined" in names(bpy.data.images)
    for collection in (bpy.data.materials, bpy.data.images, bpy.data.textures):
        copies = [n for n in names(collection) if n[-4:-3] == "." and n[-3:].isdigit()]
        assert not copies, copies
    assert child.parent == mesh and bpy.context.scene.camera == camera
    lens_85 = camera.data.lens

    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(scene25d, "create_photo_material", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        scene25d.build_photo_scene(bpy.context, photo, depth, normal, focal_35mm=35.0)
    assert names(bpy.data.objects) == ["s25_again", "s25_again_camera", "s25_again_child"]
    assert bpy.data.objects["s25_again_camera"].data.lens == lens_85
    assert bpy.context.scene.camera == bpy.data.objects["s25_again_camera"]
    monkeypatch.undo()
    mesh, _ = scene25d.build_photo_scene(bpy.context, photo, depth, None, mode="DISPLACE")
    assert names(bpy.data.objects) == ["s25_again", "s25_again_camera", "s25_again_child"]
    assert names(bpy.data.textures) == ["s25_again_depth"] and mesh["lotus_mode"] == "DISPLACE"
    assert not [n for n in names(bpy.data.materials) if n[-4:-3] == "." and n[-3:].isdigit()]


class _RecordingLayout:
    """Stands in for UILayout: records operators and properties, fails on paths that do not resolve."""

    def __init__(self):
        self.operators, self.properties, self.operator_properties = [], [], []
        self.use_property_split = self.use_property_decorate = False

    def prop(self, data, path, **_options):
        data.path_resolve(path)     # raises for unknown properties or modifier keys
        self.properties.append(path)

    def template_ID(self, data, path, **_options):
        self.prop(data, path)

    def label(self, **_options):
        pass

    def column(self, **_options):
        return self

    box = row = column

    def operator(self, idname, **_options):
        from types import SimpleNamespace
        self.operators.append(idname)
        properties = SimpleNamespace()
        self.operator_properties.append(properties)
        return properties


def test_panel_draws_settings_and_live_controls(scene25d):
    import bpy
    from types import SimpleNamespace
    depth = float_image("s25_panel_depth", np.full((4, 6), 0.5), "disparity")
    obj, _camera = scene25d.build_photo_scene(bpy.context, _photo("s25_panel", 6, 4), depth)
    bpy.context.view_layer.objects.active = obj
    fake = SimpleNamespace(layout=_RecordingLayout())
    # The button, its collapsed Options, and Live Mesh (shown for an active 2.5D object).
    assert bpy.types.LOTUS_PT_scene25d_live.poll(bpy.context)
    settings = bpy.context.scene.lotus_scene25d
    settings.photo = bpy.data.images["s25_panel"]
    try:
        for panel in ("LOTUS_PT_scene25d", "LOTUS_PT_scene25d_options", "LOTUS_PT_scene25d_live"):
            getattr(bpy.types, panel).draw(fake, bpy.context)
    finally:
        settings.photo = None
    assert fake.layout.operators == ["image.open", "lotus.build_photo_scene", "lotus.camera_move"]
    # The button passes the photo; its invoke takes the options from these fields (last used).
    assert fake.layout.operator_properties[1].photo == "s25_panel"
    assert {"photo", "depth", "normal", "near", "depth_range", "tear_threshold", "fill_behind",
            "move_range"} <= set(fake.layout.properties)
    # Live modifier inputs: ID properties before Blender 5.2, input structs' "value" from 5.2;
    # "Use Normals" only where Set Mesh Normal exists (4.5+).
    live = [path for path in fake.layout.properties if path.startswith('["Socket_') or path == "value"]
    assert len(live) == (8 if blender_env.compat().HAS_SET_MESH_NORMAL else 7)


def test_operator_defaults_estimate_camera_and_depth_range(scene25d):
    """Auto focal, automatic depth range and refinement are the panel's defaults."""
    import bpy
    from tests import synthetic_scenes
    settings = bpy.context.scene.lotus_scene25d
    assert (settings.focal_source, settings.auto_depth_range, settings.refine) == ('AUTO', True, True)
    from tests.test_core_camera_estimate import checker_room
    # A tiled room: the focal comes from the photo's lines (the maps alone are not trusted with it).
    photo_pixels, true_depth, normals, focal = checker_room(85.0, width=256, height=192)
    photo = float_image("s25_room", np.repeat(photo_pixels[..., None], 3, axis=-1))
    disparity = synthetic_scenes.lotus_disparity(true_depth, np.random.default_rng(2))
    float_image("s25_room_depth", disparity, "disparity")["lotus_source"] = photo.name
    normal = float_image("s25_room_normal", maps.normals_to_normal_map(normals, "OPENGL"), "normal")
    normal["lotus_source"] = photo.name
    bpy.context.scene.camera = None
    assert bpy.ops.lotus.build_photo_scene(photo=photo.name) == {'FINISHED'}
    camera = bpy.context.scene.camera
    assert camera["lotus_focal_source"] == "estimated" and camera["lotus_depth_range_source"] == "estimated"
    assert "refined with the normals" in camera["lotus_camera_report"]
    assert "photo's lines" in camera["lotus_camera_report"]
    intr = geometry.intrinsics_from_lens(camera.data.lens, camera.data.sensor_width, 256, 192)
    assert intr.focal_px == pytest.approx(focal, rel=0.1)
    obj = bpy.context.view_layer.objects.active
    modifier = obj.modifiers[scene25d.MODIFIER_NAME]
    used = blender_env.compat().get_modifier_input(
        modifier, scene25d.geonodes.input_identifier(modifier.node_group, "Depth"))
    assert obj["lotus_refined"] and used.name == "s25_room_depth_refined" and used.packed_file is not None
    assert used["lotus_kind"] == "disparity" and "lotus_source" not in used   # not taken for a result
