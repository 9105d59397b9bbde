"""Normal-mapped Principled BSDF materials from Lotus normals, so that a photographed surface
(a wall, a fabric, a texture scan) reacts to light like the relief it shows.

The Lotus normal result ("<photo>_normal") holds camera-space normals encoded the way Blender's Normal
Map node reads them (rgb = 0.5 * n + 0.5, +X right, +Y up, +Z toward the camera). For a surface
photographed head-on, camera space IS the tangent space of a plane whose UVs map the photo (U right,
V up), so the normals become a tangent-space normal map as they are; only the DirectX convention flips
the green channel. The height map is integrated from the same normals (Frankot-Chellappa, core).

Maps are float images (Non-Color) saved as 16-bit PNG next to the other outputs, named after the
photo's stem ("café photo 01_height.png"). The normal map is the prediction's own PNG when it has one
in the chosen convention. A map is written once: a run whose map comes out the same (the redo panel,
another material) uses the file already there.
"""

import os

import bpy
import numpy as np

from ...core import heightmap, image_files, maps
from .. import compat, files, naming, outputs, preferences
from . import common
from .transaction import atomic_builder

CONVENTION_ITEMS = [
    ('OPENGL', "OpenGL", "Green channel up (+Y), what Blender, Unity and glTF expect"),
    ('DIRECTX', "DirectX", "Green channel down (-Y), for Unreal and DirectX engines "
                           "(the material flips it back for Blender)"),
]
CONVENTION_SUFFIX = {'OPENGL': "opengl", 'DIRECTX': "directx"}
CONVENTION_LABEL = {key: label for key, label, _ in CONVENTION_ITEMS}
PLANE_HEIGHT = 1.0  # metres; the width follows the image's aspect ratio
SUBDIVISION_MODIFIER_NAME = "Lotus Displacement"

# Node-editor columns, left to right, and the vertical slots of the three texture rows.
COLUMN_X = {"uv": -1550, "texture": -1250, "separate": -950, "flip": -780, "combine": -610,
            "normal": -420, "bump": -220, "shader": 20, "output": 340}
ROW_Y = {"photo": 300, "normal": -50, "height": -400}


# ---------------------------------------------------------------------------------------------
# Saving maps next to the other outputs.

def output_folder(context, near_images=()):
    """Folder for saved maps: beside the Lotus results' files, else the preferences' output folder
    (a temporary folder while the .blend is unsaved, as blender.outputs does)."""
    for image in near_images:
        if image is not None and image.filepath and image.source in ('FILE', 'SEQUENCE'):
            folder = os.path.dirname(bpy.path.abspath(image.filepath))
            if os.path.isdir(folder):
                return folder
    folder, _temporary = outputs.resolve_output_folder(preferences.get_preferences(context).output_dir)
    files.ensure_folder(folder)
    return folder


def _file_holds(path, values):
    """Whether the 16-bit PNG at path holds values (H, W, 3; top row first) to its precision."""
    if image_files.png_size(path) != (values.shape[1], values.shape[0]):
        return False
    stored = bpy.data.images.load(path, check_existing=False)
    try:
        stored.colorspace_settings.name = 'Non-Color'
        if tuple(stored.size) != (values.shape[1], values.shape[0]):
            return False
        return bool(np.abs(common.read_pixels(stored)[..., :3] - values).max() <= 1.0 / 65535)
    finally:
        bpy.data.images.remove(stored)


def save_map(image, folder, stem=None):
    """Make the float map use a 16-bit PNG in folder holding its pixels: the file of an earlier
    run when one holds the same pixels (redo, a second material), else a new one written
    atomically ("<stem>.png", or "<stem>_001.png" when that holds something else)."""
    stem = naming.file_stem(stem or image.name)
    values = None
    number, path = 0, os.path.join(folder, stem + ".png")
    while os.path.exists(path):
        if values is None:
            values = np.round(np.clip(common.read_pixels(image)[..., :3], 0.0, 1.0) * 65535) / 65535
        if _file_holds(path, values):  # to the PNG's precision
            break
        number += 1
        path = os.path.join(folder, f"{stem}_{number:03d}.png")
    else:
        files.write_image_copy(image, path, 'PNG')  # float buffers are written as 16-bit PNG
    outputs.bind_to_file(image, path, 'PNG')
    image.colorspace_settings.name = 'Non-Color'
    return path


# ---------------------------------------------------------------------------------------------
# The maps.

def _tag_map(image, kind, photo_name):
    image["lotus_kind"] = kind
    image["lotus_source"] = photo_name
    image.use_fake_user = True  # kept in the saved .blend even when no material uses it


def make_normal_map(photo_name, normal_image, *, convention="OPENGL"):
    """The tangent-space normal map image (Non-Color float) of photo_name in a convention."""
    normals = common.camera_normals(normal_image)
    normal_rgb = maps.normals_to_normal_map(normals, convention=convention)
    normal_map = common.write_float_image(
        f"{naming.stem(photo_name)}_normal_{CONVENTION_SUFFIX[convention]}", normal_rgb)
    _tag_map(normal_map, "normal_map", photo_name)
    normal_map["lotus_normal_convention"] = convention
    return normal_map


def prediction_normal_map(photo_name, normal_image, convention):
    """The prediction's own 16-bit normal-map PNG in that convention (blender.outputs records it on the
    normal image), as an image; None when there is none."""
    suffix = CONVENTION_SUFFIX[convention]
    stored = normal_image.get(f"lotus_normal_png_{suffix}")
    path = bpy.path.abspath(stored) if stored else ""
    if not path or not os.path.isfile(path):
        return None
    image = bpy.data.images.load(path, check_existing=True)
    if image.filepath != outputs.stored_path(path):
        image.filepath = outputs.stored_path(path)  # relative to a saved .blend, as every result
    image.colorspace_settings.name = 'Non-Color'
    name = naming.result_image_name(f"{naming.stem(photo_name)}_normal_{suffix}",
                                    lambda other: other == image or common.made_by_lotus(other))
    if image.name != name:
        image.name = name
    _tag_map(image, "normal_map", photo_name)
    image["lotus_normal_convention"] = convention
    return image


def make_height_map(photo_name, normal_image, *, seamless=False):
    """The height map image and the relief the normals imply (see make_texture_maps)."""
    normals = common.camera_normals(normal_image)
    # One integration gives both the map and its physical span (normalize=False keeps pixel units).
    raw = heightmap.height_from_normals(normals, seamless=seamless, normalize=False).astype(np.float64)
    low, high = float(raw.min()), float(raw.max())
    span_px = high - low
    if span_px > 1e-9 * max(1.0, abs(low), abs(high)):
        height = np.clip(0.5 + (raw - 0.5 * (low + high)) / span_px, 0.0, 1.0)
    else:
        height, span_px = np.full(raw.shape, 0.5), 0.0
    # A seamless map is another map: its own name, so a plain one elsewhere keeps its pixels.
    suffix = "height_seamless" if seamless else "height"
    height_image = common.write_float_image(f"{naming.stem(photo_name)}_{suffix}", height)
    relief = span_px / raw.shape[0]
    _tag_map(height_image, "height", photo_name)
    height_image["lotus_relief"] = relief
    return height_image, relief


def make_texture_maps(photo_name, normal_image, *, convention="OPENGL", seamless=False):
    """Create the tangent-space normal map and the height map images for photo_name.

    Returns (normal_map_image, height_image, relief): Non-Color float images, and the height span
    the normals imply as a fraction of the image height (the height map itself spans [0, 1] around
    the midlevel 0.5, exactly as core.heightmap.height_from_normals normalises it).
    """
    normal_map = make_normal_map(photo_name, normal_image, convention=convention)
    height_image, relief = make_height_map(photo_name, normal_image, seamless=seamless)
    return normal_map, height_image, relief


# ---------------------------------------------------------------------------------------------
# Objects.

def new_image_plane(context, name, aspect):
    """An upright plane facing -Y (front view), PLANE_HEIGHT tall, UVs covering the image."""
    half_w, half_h = 0.5 * PLANE_HEIGHT * aspect, 0.5 * PLANE_HEIGHT
    mesh = common.image_quad(name, [(-half_w, 0.0, -half_h), (half_w, 0.0, -half_h),
                                    (half_w, 0.0, half_h), (-half_w, 0.0, half_h)])
    obj = bpy.data.objects.new(name, mesh)
    obj.location = context.scene.cursor.location
    context.collection.objects.link(obj)
    return obj


def _add_displacement_subdivision(obj, levels):
    """Geometry for true displacement: simple subdivision, adaptive in Cycles renders."""
    modifier = obj.modifiers.get(SUBDIVISION_MODIFIER_NAME)
    if modifier is None:
        modifier = obj.modifiers.new(SUBDIVISION_MODIFIER_NAME, 'SUBSURF')
    modifier.subdivision_type = 'SIMPLE'
    modifier.levels = levels
    modifier.render_levels = levels + 2
    compat.enable_adaptive_subdivision(obj, modifier)
    return modifier


# ---------------------------------------------------------------------------------------------
# The material.

def _new_node(tree, kind, column, y, *, label=None, parent=None):
    node = tree.nodes.new(kind)
    if parent is not None:
        node.parent = parent
    compat.set_node_location(node, COLUMN_X[column], y)
    if label:
        node.label = label
    return node


def _image_node(tree, image, y, label, parent, uv_node):
    node = _new_node(tree, "ShaderNodeTexImage", "texture", y, label=label, parent=parent)
    node.image = image
    node.interpolation = 'Linear'
    tree.links.new(uv_node.outputs["UV"], node.inputs["Vector"])
    return node


def build_normal_material(photo, normal_map, height_image, *, uv_map=common.UV_MAP_NAME, convention="OPENGL",
                          normal_strength=1.0, bump_strength=1.0, height_scale=0.05,
                          use_displacement=False, name=None):
    """A Principled BSDF material: photo -> Base Color, normal map -> Normal Map (tangent) -> Normal,
    height -> Bump (default) or -> Displacement output (use_displacement).

    height_scale: metres between height 0 and 1 (Bump Distance, or Displacement Scale).
    """
    material = bpy.data.materials.new(name or f"{naming.source_stem(photo)}_lotus_material")
    tree = compat.node_tree(material)
    tree.nodes.clear()
    links = tree.links

    frames = {}
    for key, label in (("photo", "Photo (Base Color)"),
                       ("normal", f"Normal Map ({CONVENTION_LABEL[convention]})"),
                       ("height", "Height (Displacement)" if use_displacement else "Height (Bump)")):
        frame = tree.nodes.new("NodeFrame")
        frame.name = f"Lotus {key.title()} Frame"
        frame.label = label
        frames[key] = frame

    uv_node = _new_node(tree, "ShaderNodeUVMap", "uv", ROW_Y["normal"], label="UV")
    uv_node.uv_map = uv_map

    photo_node = _image_node(tree, photo, ROW_Y["photo"], "Photo", frames["photo"], uv_node)
    photo_node.name = "Lotus Photo"
    normal_tex = _image_node(tree, normal_map, ROW_Y["normal"], "Normal Map", frames["normal"], uv_node)
    normal_tex.name = "Lotus Normal Texture"
    height_tex = _image_node(tree, height_image, ROW_Y["height"], "Height", frames["height"], uv_node)
    height_tex.name = "Lotus Height Texture"

    normal_color = normal_tex.outputs["Color"]
    if convention == "DIRECTX":
        # Blender's Normal Map node reads OpenGL maps: undo the DirectX green flip (G -> 1 - G).
        separate = _new_node(tree, "ShaderNodeSeparateColor", "separate", ROW_Y["normal"] + 60,
                             label="DirectX to OpenGL", parent=frames["normal"])
        separate.name = "Lotus Separate Normal"
        flip = _new_node(tree, "ShaderNodeMath", "flip", ROW_Y["normal"] - 100,
                         label="Flip Green", parent=frames["normal"])
        flip.name = "Lotus Flip Green"
        flip.operation = 'SUBTRACT'
        flip.inputs[0].default_value = 1.0
        combine = _new_node(tree, "ShaderNodeCombineColor", "combine", ROW_Y["normal"],
                            label="OpenGL Normal Map", parent=frames["normal"])
        combine.name = "Lotus Combine Normal"
        links.new(normal_color, separate.inputs["Color"])
        links.new(separate.outputs["Red"], combine.inputs["Red"])
        links.new(separate.outputs["Green"], flip.inputs[1])
        links.new(flip.outputs["Value"], combine.inputs["Green"])
        links.new(separate.outputs["Blue"], combine.inputs["Blue"])
        normal_color = combine.outputs["Color"]

    normal_node = _new_node(tree, "ShaderNodeNormalMap", "normal", ROW_Y["normal"] - 100,
                            label="Normal Map (Tangent)", parent=frames["normal"])
    normal_node.name = "Lotus Normal Map"
    normal_node.space = 'TANGENT'
    normal_node.uv_map = uv_map
    normal_node.inputs["Strength"].default_value = normal_strength
    links.new(normal_color, normal_node.inputs["Color"])

    bsdf = _new_node(tree, "ShaderNodeBsdfPrincipled", "shader", ROW_Y["photo"])
    bsdf.name = "Lotus Principled BSDF"
    output = _new_node(tree, "ShaderNodeOutputMaterial", "output", ROW_Y["photo"])
    output.name = "Lotus Material Output"
    links.new(photo_node.outputs["Color"], bsdf.inputs["Base Color"])
    links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])

    if use_displacement:
        displacement = _new_node(tree, "ShaderNodeDisplacement", "bump", ROW_Y["height"],
                                 label="Displacement", parent=frames["height"])
        displacement.name = "Lotus Displacement"
        displacement.space = 'OBJECT'
        displacement.inputs["Midlevel"].default_value = 0.5  # the height map's flat level
        displacement.inputs["Scale"].default_value = height_scale
        links.new(height_tex.outputs["Color"], displacement.inputs["Height"])
        links.new(displacement.outputs["Displacement"], output.inputs["Displacement"])
        links.new(normal_node.outputs["Normal"], bsdf.inputs["Normal"])
        material.displacement_method = 'DISPLACEMENT'
    else:
        bump = _new_node(tree, "ShaderNodeBump", "bump", ROW_Y["height"],
                         label="Bump", parent=frames["height"])
        bump.name = "Lotus Bump"
        bump.inputs["Strength"].default_value = bump_strength
        bump.inputs["Distance"].default_value = height_scale
        links.new(height_tex.outputs["Color"], bump.inputs["Height"])
        links.new(normal_node.outputs["Normal"], bump.inputs["Normal"])
        links.new(bump.outputs["Normal"], bsdf.inputs["Normal"])
        material.displacement_method = 'BUMP'
    return material


@atomic_builder
def apply_normal_material(context, photo, normal_image, *, target=None, convention="OPENGL",
                          normal_strength=1.0, bump_strength=1.0, relief_scale=1.0,
                          use_displacement=False, seamless=False, save=True, failures=None):
    """Everything the operator does: maps, (plane), material, subdivision for displacement, saving.

    failures: a list that receives a files.OutputError per map that could not be saved (that map
    is then packed into the .blend); without it the first one is raised.

    target: a mesh object with a UV map, or None for a new plane sized like the photo.
    relief_scale: 1 gives the relief the normals imply (the image spanning the plane's height, or
    the object's largest dimension); more exaggerates it.
    Returns (object, material, normal_map_image, height_image).
    """
    if target is not None and not target.data.uv_layers:
        raise ValueError(f"{target.name} has no UV map: unwrap it first")
    name = naming.source_name(photo)
    height_image, relief = make_height_map(name, normal_image, seamless=seamless)
    # The prediction's own PNG when there is one in this convention, else a map of our own.
    normal_map = prediction_normal_map(name, normal_image, convention)
    made = [height_image]
    if normal_map is None:
        normal_map = make_normal_map(name, normal_image, convention=convention)
        made.append(normal_map)
    if save:
        problems = []
        try:
            folder = output_folder(context, (normal_image,))
        except files.OutputError as error:
            problems.append(error)
            folder = None
        for image in made:
            try:
                if folder is None:
                    raise problems[0]
                save_map(image, folder)
            except files.OutputError as error:
                outputs.keep_in_blend(image)
                if error not in problems:
                    problems.append(error)
        if problems:
            if failures is None:
                raise problems[0]
            failures.extend(problems)
    else:
        for image in made:
            outputs.keep_in_blend(image)  # no file: the pixels live in the .blend
    if target is None:
        width, height = photo.size
        target = new_image_plane(context, f"{naming.stem(name)}_plane", width / max(height, 1))
        uv_map = common.UV_MAP_NAME
        size = PLANE_HEIGHT
    else:
        uv_map = target.data.uv_layers.active.name
        size = max(target.dimensions) or 1.0
    material = build_normal_material(photo, normal_map, height_image, uv_map=uv_map,
                                     convention=convention, normal_strength=normal_strength,
                                     bump_strength=bump_strength,
                                     height_scale=relief * size * relief_scale,
                                     use_displacement=use_displacement)
    common.assign_material(target, material)
    if use_displacement:
        # A lone quad needs many levels; an existing model already has its own density.
        _add_displacement_subdivision(target, 6 if len(target.data.polygons) <= 1 else 2)
    return target, material, normal_map, height_image
