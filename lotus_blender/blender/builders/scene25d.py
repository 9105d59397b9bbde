"""Photo -> 2.5D scene: a mesh unprojected through a camera that matches the photo.

API (also used by the relighting builder, relight.py):

    build_photo_scene(context, photo, depth, normal=None, *, mode="GEONODES", near=None,
                      depth_range=None, focal_35mm=None, focal_source=None, refine=None,
                      max_vertices=None, tear_threshold=None, material="EMISSION")
        -> (mesh_object, camera_object)

By default the focal length is the one recorded with the result, else estimated from depth +
normals, else the scene camera's; the depth range follows from the estimated depth shift; with a
normal image the mesh uses the depth refined with the normals (scene25d_camera, core.camera_estimate).

photo/depth/normal are bpy Images. The depth image's meaning comes from its "lotus_kind" custom
property: "disparity" (near = 1; the default when absent) or "depth" (relative, near = 0). The
normal image holds camera-space normals encoded rgb = 0.5 n + 0.5 in Blender's camera convention.

GEONODES mode: an object whose geometry-nodes modifier builds the mesh (live controls: near,
depth range, max vertices, tear threshold). DISPLACE mode: a grid mesh with a Displace modifier
driven by the depth image, aligned to the camera (linear in the map value: a relief, not an exact
unprojection). The object's transform is the camera's at build time, so its local space is the
camera space; the objects are not parented, so moving the camera afterwards shows the parallax.

Image sequences and movies (Predict's results of one): the mesh, its materials and the layer
behind the tears follow the scene's frames (scene25d_sequence).
"""

from __future__ import annotations

import functools

import bpy
import numpy as np

from ...core import geometry
from .. import compat
from ..inputs.frames import frame_ranges_text
from . import common, geonodes, scene25d_camera, scene25d_sequence
from .scene25d_behind import build_behind_layer, build_behind_sequence, soft_edges_note
from .transaction import atomic_builder

MODES = ("GEONODES", "DISPLACE")
MATERIALS = ("EMISSION", "SHADED")
# A build's defaults are the live mesh's own (the geometry-nodes group's input defaults).
DEFAULT_NEAR = geonodes.INPUTS["Near"][1]
DEFAULT_DEPTH_RANGE = geonodes.INPUTS["Depth Range"][1]
DEFAULT_TEAR_THRESHOLD = geonodes.INPUTS["Tear Threshold"][1]
DEFAULT_MAX_VERTICES = geonodes.INPUTS["Max Vertices"][1]
DEFAULT_MOVE_RANGE = geonodes.INPUTS["Move Range"][1]
MODIFIER_NAME = "Lotus 2.5D"


def depth_kind(depth_image):
    kind = depth_image.get("lotus_kind", "disparity")
    if kind not in ("disparity", "depth"):
        raise ValueError(f"image {depth_image.name!r} holds {kind!r}, not depth or disparity")
    return kind


def create_photo_material(name, photo, variant="EMISSION", fill_image=None, timing=None):
    """A material showing the photo through the "UVMap" UVs: emission (looks exactly like the photo
    under the Standard view transform) or shaded (Principled BSDF, reacts to lights). With timing
    (scene25d_sequence.FrameTiming) the image sequences and movies among its images follow frames.

    With fill_image (the layer behind the tears): the photo and the filled image mixed by the
    mesh's geonodes.FILL_WEIGHT attribute (the filled background where it is 1)."""
    if variant not in MATERIALS:
        raise ValueError(f"material must be one of {MATERIALS}")
    material = bpy.data.materials.new(name)
    tree = compat.node_tree(material)
    nodes, links = tree.nodes, tree.links
    nodes.clear()
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map = common.UV_MAP_NAME
    uv.location = (-800, 0)
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = photo
    texture.extension = 'EXTEND'
    texture.location = (-600, 0)
    scene25d_sequence.follow_frames(texture, photo, timing)
    links.new(uv.outputs["UV"], texture.inputs["Vector"])
    colour = texture.outputs["Color"]
    if fill_image is not None:
        filled = nodes.new("ShaderNodeTexImage")
        filled.image = fill_image
        filled.extension = 'EXTEND'
        filled.location = (-600, -300)
        scene25d_sequence.follow_frames(filled, fill_image, timing)
        links.new(uv.outputs["UV"], filled.inputs["Vector"])
        weight = nodes.new("ShaderNodeAttribute")
        weight.attribute_name = geonodes.FILL_WEIGHT
        weight.location = (-600, 300)
        # The filled image from a quarter of the way across a torn face: its far corner keeps
        # the photo, and the photo's near-side colours never bleed into the gap a move opens.
        factor = nodes.new("ShaderNodeMath")
        factor.operation = 'MULTIPLY'
        factor.use_clamp = True
        factor.inputs[1].default_value = 4.0
        factor.location = (-450, 300)
        links.new(weight.outputs["Fac"], factor.inputs[0])
        mix = nodes.new("ShaderNodeMix")
        mix.data_type = 'RGBA'
        mix.location = (-300, 0)
        links.new(factor.outputs[0], mix.inputs["Factor"])
        links.new(texture.outputs["Color"], mix.inputs[6])    # A (colour sockets of the RGBA mode)
        links.new(filled.outputs["Color"], mix.inputs[7])     # B
        colour = mix.outputs[2]
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (200, 0)
    if variant == "EMISSION":
        shader = nodes.new("ShaderNodeEmission")
        shader.inputs["Strength"].default_value = 1.0
        links.new(colour, shader.inputs["Color"])
    else:
        shader = nodes.new("ShaderNodeBsdfPrincipled")
        shader.inputs["Roughness"].default_value = 0.8
        links.new(colour, shader.inputs["Base Color"])
    shader.location = (-100, 0)
    links.new(shader.outputs[0], output.inputs["Surface"])
    material["lotus_material"] = variant
    return material


def _drive_from_camera(obj, modifier, input_name, camera, camera_path):
    """Drive a modifier input from a camera property (no Python expression: works without
    auto-run scripts)."""
    key = geonodes.input_identifier(modifier.node_group, input_name)
    fcurve = obj.driver_add(compat.modifier_input_data_path(modifier, key))
    driver = fcurve.driver
    driver.type = 'AVERAGE'
    variable = driver.variables.new()
    variable.type = 'SINGLE_PROP'
    variable.targets[0].id_type = 'CAMERA'
    variable.targets[0].id = camera.data
    variable.targets[0].data_path = camera_path


def shade_fill(obj):
    """Give the layer behind the tears a shaded material (Principled BSDF, the same photo and
    filled images), so that it receives light and shadows like a relit mesh. Returns it, or None
    when the mesh has no filled layer."""
    modifier = obj.modifiers.get(MODIFIER_NAME)
    if modifier is None or modifier.type != 'NODES' or modifier.node_group is None:
        return None
    try:
        key = geonodes.input_identifier(modifier.node_group, "Fill Material")
    except KeyError:        # built before Fill Behind existed
        return None
    current = compat.get_modifier_input(modifier, key)
    if current is None or current.get("lotus_material") == "SHADED":
        return current
    images = [node.image for node in compat.node_tree(current).nodes
              if node.bl_idname == "ShaderNodeTexImage" and node.image is not None]
    fill_image = next((image for image in images if image.get("lotus_kind") == "fill"), None)
    photo = next((image for image in images if image is not fill_image), None)
    if fill_image is None or photo is None:
        return None
    material = create_photo_material(current.name + "_shaded", photo, "SHADED", fill_image,
                                     timing=scene25d_sequence.timing_of(obj))
    obj.data.materials.append(material)
    geonodes.set_inputs(modifier, Fill_Material=material)
    return material


def _build_geonodes(name, depth, normal, material, kind, near, depth_range, max_vertices,
                    tear_threshold, camera, timing=None):
    mesh = bpy.data.meshes.new(name)
    obj = bpy.data.objects.new(name, mesh)
    mesh.materials.append(material)
    modifier = obj.modifiers.new(MODIFIER_NAME, 'NODES')
    modifier.node_group = geonodes.get_node_group()
    geonodes.set_inputs(modifier, Depth=depth, Disparity=(kind == "disparity"), Near=float(near),
                        Depth_Range=float(depth_range), Focal_Length=float(camera.data.lens),
                        Sensor_Width=float(camera.data.sensor_width), Max_Vertices=int(max_vertices),
                        Tear=tear_threshold > 0, Tear_Threshold=float(max(tear_threshold, 0.0)),
                        Use_Normals=normal is not None, Material=material)
    if normal is not None:
        geonodes.set_inputs(modifier, Normal=normal)
    scene25d_sequence.set_geonodes_timing(obj, modifier, timing)
    _drive_from_camera(obj, modifier, "Focal Length", camera, "lens")
    _drive_from_camera(obj, modifier, "Sensor Width", camera, "sensor_width")
    return obj


def mesh_from_arrays(name, points, quads, corner_uv):
    """A quad mesh from numpy arrays: points (N, 3), quads (F, 4) vertex indices, corner_uv (4F, 2)
    stored as the "UVMap" UV map. No Python loop over elements."""
    # Generic attributes take numpy buffers directly; MeshVertex/MeshLoop properties go item by item.
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(points))
    mesh.attributes["position"].data.foreach_set("vector", np.ascontiguousarray(points, np.float32).reshape(-1))
    mesh.loops.add(quads.size)
    mesh.attributes[".corner_vert"].data.foreach_set("value", np.ascontiguousarray(quads, np.int32).reshape(-1))
    mesh.polygons.add(len(quads))
    mesh.polygons.foreach_set("loop_start", np.arange(0, quads.size, 4, dtype=np.int32))
    uv_map = mesh.attributes.new(common.UV_MAP_NAME, 'FLOAT2', 'CORNER')  # a float2 corner attribute is a UV map
    uv_map.data.foreach_set("vector", np.ascontiguousarray(corner_uv, np.float32).reshape(-1))
    mesh.update(calc_edges=True)
    return mesh


def grid_mesh(name, width, height, max_vertices, intrinsics, distance):
    """A camera-facing grid (local space = camera space) at planar `distance`, vertices on the
    centres of the pixels they sample, with the photo's UVs; built with foreach_set."""
    across, down = geometry.vertex_grid_size(width, height, max_vertices)
    rows = geometry.grid_pixel_indices(down, height)
    cols = geometry.grid_pixel_indices(across, width)
    points = geometry.unproject(np.full((down, across), distance), intrinsics, rows=rows, cols=cols)
    # Vertex (r, c) has index r * across + c; quads wind counter-clockwise seen from the camera.
    index = np.arange(down * across).reshape(down, across)
    quads = np.stack([index[1:, :-1], index[1:, 1:], index[:-1, 1:], index[:-1, :-1]], axis=-1).reshape(-1, 4)
    u = (cols + 0.5) / width
    v = 1.0 - (rows + 0.5) / height
    vertex_uv = np.stack(np.broadcast_arrays(u[None, :], v[:, None]), axis=-1).reshape(-1, 2)
    mesh = mesh_from_arrays(name, points.reshape(-1, 3), quads, vertex_uv[quads.reshape(-1)])
    mesh.shade_smooth()
    return mesh


def _build_displace(name, depth, material, kind, near, depth_range, max_vertices, camera, width, height,
                    timing=None):
    intr = geometry.intrinsics_from_lens(camera.data.lens, camera.data.sensor_width, width, height, 'AUTO')
    far = near + depth_range
    # Disparity (near = 1) pushes a plane at `far` toward the camera; relative depth (near = 0)
    # pushes a plane at `near` away from it.
    base, strength = (far, depth_range) if kind == "disparity" else (near, -depth_range)
    mesh = grid_mesh(name, width, height, max_vertices, intr, base)
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    texture = bpy.data.textures.new(name + "_depth", 'IMAGE')
    texture.image = depth
    texture.extension = 'EXTEND'
    texture.use_interpolation = False  # nearest pixel, like the geometry-nodes mode
    scene25d_sequence.follow_frames(texture, depth, timing)
    modifier = obj.modifiers.new(MODIFIER_NAME, 'DISPLACE')
    modifier.texture = texture
    modifier.texture_coords = 'UV'
    modifier.uv_layer = common.UV_MAP_NAME
    modifier.direction = 'Z'
    modifier.space = 'LOCAL'
    modifier.mid_level = 0.0
    modifier.strength = strength
    return obj


def _previous_build(scene, photo) -> list:
    """The 2.5D meshes and cameras an earlier build made for the photo in this scene."""
    return [obj for obj in scene.objects if obj.get("lotus_source") == photo.name
            and ((obj.type == 'CAMERA') or ("lotus_mode" in obj and not obj.get("lotus_gap_fill")))]


_BUILD_IMAGE_SUFFIXES = ("_depth_refined", "_depth_snapped", "_behind", "_fill")


def _replace_previous(previous, obj, camera, name) -> None:
    """A second build replaces the first in the same place: the earlier objects go, with the data
    only they used (children, such as a gap fill, move to the new mesh), and the new objects take
    their names rather than "<stem>.001". Runs last, once nothing can fail any more."""
    if not previous:
        return
    for old in previous:
        for child in old.children:
            matrix = child.matrix_world.copy()
            child.parent = obj
            child.matrix_world = matrix
    owned = []
    for old in previous:
        owned.append(old.data)
        if old.type == 'MESH':
            owned += [slot.material for slot in old.material_slots if slot.material is not None]
            owned += [mod.texture for mod in old.modifiers
                      if mod.type == 'DISPLACE' and mod.texture is not None]
    # The earlier build's own images (refined depth, layer behind the tears, its fill).
    owned += [bpy.data.images.get(name + suffix) for suffix in _BUILD_IMAGE_SUFFIXES]
    bpy.data.batch_remove(previous)
    while True:  # meshes first, then what only they used (materials, refined depth)
        owned = [block for block in dict.fromkeys(owned) if block is not None]
        orphans = [block for block in owned if block.users == 0]
        if not orphans:
            break
        owned = [block for block in owned if block not in orphans]
        bpy.data.batch_remove(orphans)
    obj.name = obj.data.name = name
    camera.name = camera.data.name = name + "_camera"
    for slot in obj.material_slots:  # "<stem>_2.5D.001" -> "<stem>_2.5D", "..._fill.001" -> "..._fill"
        material = slot.material
        base = material.name.rsplit(".", 1)[0] if material is not None else ""
        if material is not None and material.get("lotus_material") and \
                material.name[len(base):][1:].isdigit() and base not in bpy.data.materials:
            material.name = base
    for modifier in obj.modifiers:
        if modifier.type == 'DISPLACE' and modifier.texture is not None:
            modifier.texture.name = name + "_depth"
    for suffix in _BUILD_IMAGE_SUFFIXES:  # the new build's "<stem>_behind.001" -> "<stem>_behind"
        base = name + suffix
        newer = [image for image in bpy.data.images
                 if image.name.startswith(base + ".") and image.name[len(base) + 1:].isdigit()]
        if newer and base not in bpy.data.images:
            max(newer, key=lambda image: image.name).name = base


@atomic_builder
def build_photo_scene(context, photo, depth, normal=None, *, mode="GEONODES", near=None, depth_range=None,
                      focal_35mm=None, focal_source=None, refine=None, max_vertices=None, tear_threshold=None,
                      material="EMISSION", fill_behind=None, move_range=None, frame=None, behind_fill=None):
    """Build the 2.5D mesh and its matching camera (set as the scene camera). Returns (mesh, camera).

    focal_source: one of scene25d_camera.FOCAL_SOURCE_ITEMS (default: 'MANUAL' when focal_35mm is
    given, else 'AUTO'). depth_range None: automatic (from the shift estimated with the normals,
    else DEFAULT_DEPTH_RANGE). refine (default: when there is a normal image, geometry-nodes mode):
    the mesh uses the depth refined with the normals. The camera records where its focal length
    and the depth range came from (custom properties, "lotus_camera_report" in one line).
    fill_behind (default: when tearing, geometry-nodes mode): the background a camera move of
    move_range (fraction of the subject distance, default DEFAULT_MOVE_RANGE) can reveal behind
    every tear is filled (core.fill); with tearing the torn faces always close the tears' gaps.
    frame: the scene frame whose picture of a sequence sets the camera (default: the current).
    behind_fill: how a sequence's per-frame layer behind the tears is made (build_behind_sequence).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if depth is None:
        raise ValueError("a depth image of at least 2x2 pixels is needed")
    kind = depth_kind(depth)
    near = DEFAULT_NEAR if near is None else float(near)
    if near <= 0 or (depth_range is not None and depth_range < 0):
        raise ValueError("near must be positive and the depth range not negative")
    max_vertices = DEFAULT_MAX_VERTICES if max_vertices is None else int(max_vertices)
    tear_threshold = DEFAULT_TEAR_THRESHOLD if tear_threshold is None else float(tear_threshold)
    fill_behind = (tear_threshold > 0 and mode == "GEONODES") if fill_behind is None else bool(fill_behind)
    move_range = DEFAULT_MOVE_RANGE if move_range is None else float(move_range)
    if not 0.0 <= move_range <= 1.0:
        raise ValueError("the move range is a fraction of the subject distance, between 0 and 1")
    focal_source = focal_source or ("MANUAL" if focal_35mm else "AUTO")
    refine = (normal is not None and mode == "GEONODES") if refine is None else bool(refine and normal is not None)
    photo = photo if photo is not None else depth
    # Image sequences and movies: the mesh, materials and fill follow the frames; the camera and
    # depth range come from one frame, the one the scene shows (or the nearest that exists).
    timing = scene25d_sequence.timing_for((depth, photo), context.scene)
    frame = context.scene.frame_current if frame is None else int(frame)
    keys = scene25d_sequence.key_stills(timing, frame, (depth, normal, photo))
    key_depth, key_normal, key_photo = keys
    if key_depth.size[0] < 2 or key_depth.size[1] < 2:
        raise ValueError("a depth image of at least 2x2 pixels is needed")
    sequence_notes = []
    if timing is not None:
        sequence_notes.append(f"{timing.duration}-frame sequence, camera from frame {key_depth.get('lotus_key_frame', '?')}")
        missing = scene25d_sequence.missing_frames(depth)
        if missing:
            # Image Info reads no size where a file is missing, so those frames show no mesh.
            sequence_notes.append(f"depth frames {frame_ranges_text(missing)} missing: no mesh on those frames")
        if refine and mode == "GEONODES":
            # A refined map per frame would need its own depth range per frame: the raw maps it is.
            sequence_notes.append("not refined with the normals (a sequence)")
        refine = False
    # The camera renders at the photo's size; the depth map (same aspect) may be smaller.
    width, height = key_photo.size if key_photo.size[0] > 1 and key_photo.size[1] > 1 else key_depth.size
    name = common.photo_stem(photo)  # the objects are named after the image given as the photo
    previous = _previous_build(context.scene, photo)

    choice, values, normals = scene25d_camera.choose_camera(
        context, key_photo, key_depth, key_normal, kind, focal_source=focal_source, focal_35mm=focal_35mm, near=near,
        depth_range=None if depth_range is None else float(depth_range), default_depth_range=DEFAULT_DEPTH_RANGE,
        width=width, height=height)
    camera = common.new_camera(context, name + "_camera", width, height, choice.lens, choice.sensor)
    mesh_depth, mesh_range = depth, choice.depth_range
    if refine and mode == "GEONODES" and choice.depth_range_origin == "default":
        # Refining bends the depth toward the normals at the depth range it is given; at a guessed
        # range the two disagree by the guess, and refining made the normals worse (issue 14,
        # bench_refine's builder rows: room 6.9 -> 7.1 deg, interior 4.2 -> 4.4 on exact maps).
        choice.extras.append("not refined with the normals (the depth range is a default: set it to refine)")
        refine = False
    if refine and mode == "GEONODES":
        if values is None:
            values = common.read_pixels(depth)[..., 0]
            normals = common.camera_normals(normal, values.shape)
        mesh_depth, mesh_range = scene25d_camera.refined_depth_image(
            name + "_depth_refined", depth, values, normals, kind, choice.lens, choice.sensor, near,
            choice.depth_range, tear_threshold=tear_threshold, max_vertices=max_vertices)
        choice.extras.append("refined with the normals")
    choice.extras += sequence_notes
    choice.record(camera)
    material_block = create_photo_material(name + "_2.5D", photo, material, timing=timing)
    if mode == "GEONODES":
        obj = _build_geonodes(name, mesh_depth, normal, material_block, kind, near, mesh_range, max_vertices,
                              tear_threshold, camera, timing)
        if tear_threshold > 0:
            build_behind = build_behind_layer if timing is None or not scene25d_sequence.is_animated(depth) \
                else functools.partial(build_behind_sequence, context, behind_fill=behind_fill)
            behind, fill_image, opening = build_behind(
                name, mesh_depth, photo, kind, near, mesh_range, choice.lens, choice.sensor, tear_threshold,
                move_range, fill_behind)
            fill_material = None
            if fill_image is not None:
                fill_material = create_photo_material(name + "_2.5D_fill", photo, material, fill_image, timing)
                obj.data.materials.append(fill_material)
            modifier = obj.modifiers[MODIFIER_NAME]
            snapped = bpy.data.images.get(behind.get("lotus_snapped_depth", ""))
            if snapped is not None:     # the soft steps placed at the photo's edges: the mesh tears there too
                geonodes.set_inputs(modifier, Depth=snapped)
            geonodes.set_inputs(modifier, Behind=behind, Fill_Behind=fill_image is not None, Move_Range=move_range)
            if fill_material is not None:
                geonodes.set_inputs(modifier, Fill_Material=fill_material)
            obj["lotus_fill_opening"] = opening
            note = soft_edges_note(behind.get("lotus_soft_edges", 0.0)) if fill_image else None
            if note:
                choice.extras.append(note)
                choice.record(camera)
            obj["lotus_map_size"] = max(key_depth.size)
        obj["lotus_move_range"] = move_range
    else:
        obj = _build_displace(name, depth, material_block, kind, near, mesh_range, max_vertices, camera,
                              *key_depth.size, timing=timing)
    obj.matrix_world = camera.matrix_world.copy()
    context.collection.objects.link(obj)
    obj["lotus_source"] = photo.name
    obj["lotus_mode"] = mode
    obj["lotus_refined"] = mesh_depth is not depth
    camera["lotus_source"] = photo.name
    scene25d_sequence.remove_stills(keys, (depth, normal, photo))
    _replace_previous(previous, obj, camera, name)
    return obj, camera
