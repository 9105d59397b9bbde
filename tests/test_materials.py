"""Normal-mapped materials: conventions, the height map and the node wiring, in the real Blender."""

import os
import sys

import numpy as np
import pytest

from lotus_blender.core import heightmap, maps
from tests import compositor_passes

DOME_RADIUS_PX = 12.0
WIDTH, HEIGHT = 48, 32


def materials_module(addon):
    return sys.modules[f"{addon}.blender.builders.materials"]


def common_module(materials):
    """The builders' shared pixels in and out (common.py), beside the materials module."""
    return sys.modules[materials.__name__.rsplit(".", 1)[0] + ".common"]


def dome(width=WIDTH, height=HEIGHT, radius=DOME_RADIUS_PX):
    """A spherical cap (height in pixels, top row first) and its unit normals (+X right, +Y up)."""
    rows, cols = np.mgrid[0:height, 0:width]
    x = cols + 0.5 - width / 2
    y = height / 2 - (rows + 0.5)
    inside = np.clip(1.0 - (x * x + y * y) / radius ** 2, 0.0, 1.0)
    z = radius * np.sqrt(inside)
    slope = np.where(inside > 0, 1.0 / np.maximum(z, 1e-6), 0.0)  # dz/dx = -x / z on the cap
    normals = maps.normalize_vectors(np.stack([x * slope, y * slope, np.ones_like(z)], axis=-1))
    return z, normals


def lotus_images(module, name, normals):
    """A photo and its Lotus normal result as outputs/results.py tags them."""
    import bpy
    height, width = normals.shape[:2]
    photo = bpy.data.images.new(name, width, height)
    normal = common_module(module).write_float_image(f"{name}_normal", maps.normals_to_normal_map(normals, "OPENGL"))
    normal["lotus_kind"] = "normal"
    normal["lotus_source"] = name
    return photo, normal


def links_into(material, node_name, socket_name):
    node = material.node_tree.nodes[node_name]
    return [link for link in material.node_tree.links
            if link.to_node == node and link.to_socket.name == socket_name]


def absolute_x(node):
    """A node's x in the editor: its location plus its frames' (``location_absolute`` is 4.4+)."""
    x = 0.0
    while node is not None:
        x += node.location.x
        node = node.parent
    return x


def assert_tidy(material):
    """Every link runs left to right (nodes in columns); textures sit in labelled frames."""
    for link in material.node_tree.links:
        assert absolute_x(link.from_node) < absolute_x(link.to_node), link
    for texture in (n for n in material.node_tree.nodes if n.type == 'TEX_IMAGE'):
        assert texture.parent is not None and texture.parent.label


def test_flat_surface_facing_camera_is_half_half_one(blender_addon, fresh_data):
    module = materials_module(blender_addon)
    flat = np.zeros((8, 12, 3), dtype=np.float32)
    flat[..., 2] = 1.0
    _photo, normal = lotus_images(module, "flat_photo", flat)
    for convention in ("OPENGL", "DIRECTX"):
        normal_map, height, relief = module.make_texture_maps("flat_photo", normal, convention=convention)
        rgb = common_module(module).read_pixels(normal_map)[..., :3]
        np.testing.assert_allclose(rgb, np.broadcast_to([0.5, 0.5, 1.0], rgb.shape), atol=1e-6)
        np.testing.assert_allclose(common_module(module).read_pixels(height)[..., 0], 0.5, atol=1e-6)
        assert relief == 0.0
        assert normal_map.colorspace_settings.name == 'Non-Color'
        assert height.colorspace_settings.name == 'Non-Color'


def test_opengl_and_directx_differ_in_green_only(blender_addon, fresh_data):
    module = materials_module(blender_addon)
    _z, normals = dome()
    _photo, normal = lotus_images(module, "dome_conv", normals)
    gl = common_module(module).read_pixels(module.make_texture_maps("dome_conv", normal, convention="OPENGL")[0])
    dx = common_module(module).read_pixels(module.make_texture_maps("dome_conv", normal, convention="DIRECTX")[0])
    np.testing.assert_allclose(dx[..., 0], gl[..., 0], atol=1e-6)
    np.testing.assert_allclose(dx[..., 2], gl[..., 2], atol=1e-6)
    np.testing.assert_allclose(dx[..., 1], 1.0 - gl[..., 1], atol=1e-6)
    # The top of the dome faces up: OpenGL green above 0.5 there, DirectX below.
    top = (HEIGHT // 2 - 6, WIDTH // 2)
    assert gl[top][1] > 0.6 and dx[top][1] < 0.4


def test_height_image_matches_core_and_recovers_the_dome(blender_addon, fresh_data):
    module = materials_module(blender_addon)
    z, normals = dome()
    _photo, normal = lotus_images(module, "dome_height", normals)
    _normal_map, height, relief = module.make_texture_maps("dome_height", normal)
    stored = common_module(module).read_pixels(height)[..., 0]
    # The same map core.heightmap makes from the normals the image holds (float32 round trip).
    expected = heightmap.height_from_normals(maps.normal_map_to_normals(
        common_module(module).read_pixels(normal)[..., :3]))
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    assert np.corrcoef(stored.ravel(), z.ravel())[0, 1] > 0.99
    # The relief is the dome's true height as a fraction of the image height.
    assert relief == pytest.approx(DOME_RADIUS_PX / HEIGHT, rel=0.05)
    assert height["lotus_relief"] == pytest.approx(relief)


def test_bump_material_wiring(blender_addon, fresh_data):
    import bpy
    module = materials_module(blender_addon)
    _z, normals = dome()
    photo, normal = lotus_images(module, "wired", normals)
    obj, material, normal_map, height = module.apply_normal_material(
        bpy.context, photo, normal, convention="OPENGL", save=False)
    nodes = material.node_tree.nodes
    assert obj.data.materials[0] == material
    assert obj.dimensions.x == pytest.approx(WIDTH / HEIGHT) and obj.dimensions.z == pytest.approx(1.0)

    normal_node = nodes["Lotus Normal Map"]
    assert normal_node.space == 'TANGENT' and normal_node.uv_map == "UVMap"
    assert obj.data.uv_layers.active.name == "UVMap"
    assert links_into(material, "Lotus Normal Map", "Color")[0].from_node.image == normal_map
    bump = links_into(material, "Lotus Bump", "Height")[0].from_node
    assert bump.image == height and height.colorspace_settings.name == 'Non-Color'
    assert links_into(material, "Lotus Bump", "Normal")[0].from_node == normal_node
    assert links_into(material, "Lotus Principled BSDF", "Normal")[0].from_node.name == "Lotus Bump"
    assert links_into(material, "Lotus Principled BSDF", "Base Color")[0].from_node.image == photo
    assert not links_into(material, "Lotus Material Output", "Displacement")
    assert material.displacement_method == 'BUMP'
    assert "Lotus Displacement" not in obj.modifiers
    # Bump distance = the relief the normals imply on a plane 1 m tall.
    assert nodes["Lotus Bump"].inputs["Distance"].default_value == pytest.approx(height["lotus_relief"])

    assert_tidy(material)


def test_directx_material_flips_green_back(blender_addon, fresh_data):
    import bpy
    module = materials_module(blender_addon)
    _z, normals = dome()
    photo, normal = lotus_images(module, "wired_dx", normals)
    _obj, material, normal_map, _height = module.apply_normal_material(
        bpy.context, photo, normal, convention="DIRECTX", save=False)
    assert normal_map.name == "wired_dx_normal_directx"
    combine = links_into(material, "Lotus Normal Map", "Color")[0].from_node
    assert combine.name == "Lotus Combine Normal"
    flip = links_into(material, "Lotus Combine Normal", "Green")[0].from_node
    assert flip.operation == 'SUBTRACT' and flip.inputs[0].default_value == 1.0
    assert links_into(material, "Lotus Flip Green", "Value")[0].from_socket.name == "Green"
    assert_tidy(material)


def test_displacement_only_on_request(blender_addon, fresh_data):
    import bpy
    module = materials_module(blender_addon)
    _z, normals = dome()
    photo, normal = lotus_images(module, "displaced", normals)
    obj, material, _normal_map, height = module.apply_normal_material(
        bpy.context, photo, normal, use_displacement=True, relief_scale=2.0, save=False)
    displacement = links_into(material, "Lotus Material Output", "Displacement")[0].from_node
    assert displacement.name == "Lotus Displacement"
    assert links_into(material, "Lotus Displacement", "Height")[0].from_node.image == height
    assert displacement.inputs["Midlevel"].default_value == pytest.approx(0.5)
    assert displacement.inputs["Scale"].default_value == pytest.approx(2.0 * height["lotus_relief"])
    assert material.displacement_method == 'DISPLACEMENT'
    assert links_into(material, "Lotus Principled BSDF", "Normal")[0].from_node.name == "Lotus Normal Map"
    assert "Lotus Bump" not in material.node_tree.nodes
    subdivision = obj.modifiers["Lotus Displacement"]
    assert subdivision.type == 'SUBSURF' and subdivision.subdivision_type == 'SIMPLE'
    assert _adaptive_subdivision_enabled(obj, subdivision)
    assert_tidy(material)



def _adaptive_subdivision_enabled(obj, modifier) -> bool:
    """What compat.enable_adaptive_subdivision switched on: the modifier's option from Blender
    5.0, the Cycles object setting before."""
    if hasattr(modifier, "use_adaptive_subdivision"):
        return bool(modifier.use_adaptive_subdivision)
    return bool(getattr(getattr(obj, "cycles", None), "use_adaptive_subdivision", False))


def _render_normal_pass(scene):
    """Render scene's Normal pass through a compositor File Output; world-space, top row first."""
    import tempfile

    import bpy
    folder = tempfile.mkdtemp(prefix="lotus-material-")
    paths, owned = compositor_passes.render_passes(scene, folder, {"Normal": 'RGBA'})
    try:
        image = bpy.data.images.load(paths["Normal"], check_existing=False)
        width, height = image.size
        buffer = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(buffer)
        bpy.data.images.remove(image)
    finally:
        if owned is not None:
            bpy.data.node_groups.remove(owned)
    return buffer.reshape(height, width, 4)[::-1, :, :3]


@pytest.mark.parametrize("convention", ["OPENGL", "DIRECTX"])
def test_rendered_shading_normals_are_the_lotus_normals(blender_addon, fresh_data, convention):
    """Cycles shades the plane with exactly the normals Lotus predicted, in either convention."""
    import bpy
    module = materials_module(blender_addon)
    _z, normals = dome()
    scene = bpy.data.scenes.new("lotus_material_render")
    scene.render.engine = 'CYCLES'
    scene.cycles.device = 'CPU'
    scene.cycles.samples = 1
    scene.cycles.filter_width = 0.01
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    scene.render.resolution_percentage = 100
    scene.view_layers[0].use_pass_normal = True
    with bpy.context.temp_override(scene=scene):
        photo, normal = lotus_images(module, f"rendered_{convention.lower()}", normals)
        obj, _material, _nm, _height = module.apply_normal_material(
            bpy.context, photo, normal, convention=convention, bump_strength=0.0, save=False)
        camera_data = bpy.data.cameras.new("lotus_material_camera")
        camera_data.type = 'ORTHO'
        camera_data.ortho_scale = WIDTH / HEIGHT  # the plane's width fills the frame
        camera = bpy.data.objects.new("lotus_material_camera", camera_data)
        camera.location = (obj.location.x, obj.location.y - 3.0, obj.location.z)
        camera.rotation_euler = (np.pi / 2, 0.0, 0.0)  # looking along +Y at the plane
        scene.collection.objects.link(camera)
        scene.camera = camera
        rendered = _render_normal_pass(scene)
    # The plane faces -Y with U along +X and V along +Z: tangent space (x, y, z) -> world (x, -z, y).
    expected = np.stack([normals[..., 0], -normals[..., 2], normals[..., 1]], axis=-1)
    cosine = np.sum(maps.normalize_vectors(rendered) * expected, axis=-1)
    angles = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    # Cycles bends shading normals that are too grazing for a valid reflection, so compare the
    # normals within 45 degrees of the view (the dome's slopes included, hundreds of pixels).
    facing = normals[..., 2] > np.cos(np.radians(45.0))
    slopes = facing & (normals[..., 2] < 0.999)
    assert slopes.sum() > 200
    assert angles[facing].max() < 1.0


def test_operator_saves_16bit_maps_next_to_outputs(blender_addon, fresh_data, tmp_path):
    import bpy
    module = materials_module(blender_addon)
    _z, normals = dome()
    photo, normal = lotus_images(module, "saved_photo", normals)
    # A saved Lotus result: the maps go next to it.
    normal.filepath_raw = str(tmp_path / "saved_photo_normal.exr")
    normal.file_format = 'OPEN_EXR'
    normal.save()

    mesh = bpy.data.meshes.new("uv_plane")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [], [(0, 1, 2, 3)])
    mesh.uv_layers.new(name="Texture UV")
    target = bpy.data.objects.new("uv_plane", mesh)
    bpy.context.collection.objects.link(target)
    bpy.context.view_layer.objects.active = target

    result = bpy.ops.lotus.normal_material(photo=photo.name, target='ACTIVE', convention='DIRECTX')
    assert result == {'FINISHED'}
    material = target.data.materials[0]
    assert material.node_tree.nodes["Lotus Normal Map"].uv_map == "Texture UV"
    normal_map = bpy.data.images["saved_photo_normal_directx"]
    height = bpy.data.images["saved_photo_height"]
    for image in (normal_map, height):
        path = bpy.path.abspath(image.filepath)
        assert os.path.dirname(path) == str(tmp_path)
        with open(path, "rb") as handle:
            header = handle.read(26)
        assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[24] == 16  # 16 bits per channel
        reloaded = bpy.data.images.load(path, check_existing=False)
        try:
            reloaded.colorspace_settings.name = 'Non-Color'
            np.testing.assert_allclose(common_module(module).read_pixels(reloaded)[..., :3],
                                       common_module(module).read_pixels(image)[..., :3], atol=1.0 / 65535 + 1e-6)
        finally:
            bpy.data.images.remove(reloaded)
        assert image.colorspace_settings.name == 'Non-Color'

    # Again: the same files are overwritten, not multiplied.
    assert bpy.ops.lotus.normal_material(photo=photo.name, target='ACTIVE', convention='DIRECTX') == {'FINISHED'}
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["saved_photo_height.png",
                                                              "saved_photo_normal_directx.png"]


def test_operator_refuses_without_normals_or_uvs(blender_addon, fresh_data):
    import bpy
    photo = bpy.data.images.new("no_normals_photo", 4, 4)
    with pytest.raises(RuntimeError, match="No Lotus normals"):
        bpy.ops.lotus.normal_material(photo=photo.name)
    module = materials_module(blender_addon)
    _z, normals = dome(8, 8, 3.0)
    photo, _normal = lotus_images(module, "no_uv_photo", normals)
    mesh = bpy.data.meshes.new("no_uv")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0)], [], [(0, 1, 2)])
    target = bpy.data.objects.new("no_uv", mesh)
    bpy.context.collection.objects.link(target)
    bpy.context.view_layer.objects.active = target
    with pytest.raises(RuntimeError, match="no UV map"):
        bpy.ops.lotus.normal_material(photo=photo.name, target='ACTIVE')
