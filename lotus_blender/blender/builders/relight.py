"""Relighting setup: a photo's 2.5D scene that Blender lights act on, so that an artist can light
a photographed subject again (and render it) as if it were modelled.

One click builds:
- the 2.5D mesh (scene25d.build_photo_scene) or, without depth, an image plane filling the camera;
- a Principled BSDF material: albedo from the photo (as is, or with an estimated shading divided out)
  and the Lotus normals as an object-space normal map, so lights follow the predicted normals while
  the predicted geometry casts the shadows;
- a camera-only, untorn copy of the mesh just behind it that fills the one-pixel gaps the tearing
  leaves at silhouettes (otherwise the world shows through them as a dark outline);
- a key/fill/rim rig of area lights parented to an Empty at the subject ("<photo>_light_rig"): each
  light tracks the Empty, so a light can be dragged anywhere and stays aimed, and rotating the Empty
  turns the whole rig around the subject;
- optionally a shadow-catcher ground under the subject (Cycles), the matching camera, Cycles settings;
and "Preview Relight" (relight_preview.py) renders a small preview into "<photo>_relight_preview".
"""

import bpy
import numpy as np
from mathutils import Matrix, Vector

from ...core import geometry, maps, shading
from .. import compat, naming, outputs
from . import common, existing, scene25d, scene25d_camera, scene25d_sequence
from .transaction import atomic_builder

ALBEDO_ITEMS = [
    ('PHOTO', "Photo", "Use the photo's colours as they are (its lighting stays baked in)"),
    ('DELIGHT', "Remove Shading", "Divide out the shading a low-order lighting fit to the photo "
                                  "and the predicted normals explains (flatter, relightable albedo)"),
]
GEOMETRY_ITEMS = [
    ('MESH', "2.5D Mesh", "The photo unprojected through its camera with the predicted depth"),
    ('PLANE', "Image Plane", "A flat plane filling the camera view (no depth needed)"),
]
# Rig layout in the camera's frame (+X right, +Y up, +Z toward the camera), as directions from
# the subject, and each light's share of the key's power.
RIG_LIGHTS = {
    "key": (Vector((-1.0, 0.8, 1.0)), 1.0),
    "fill": (Vector((1.0, 0.1, 0.9)), 0.3),
    "rim": (Vector((0.7, 1.0, -1.2)), 1.0),
}
# Area light power per square metre of distance, so the subject's irradiance (about 3 W/m^2, like a
# clear sun at Blender's scale) does not depend on the scene's scale.
KEY_POWER_PER_M2 = 10.0
SUBJECT_DEPTH_QUANTILE = 0.25  # the subject is usually nearer than the background behind it
PLANE_DISTANCE = 5.0
RENDER_SAMPLES = 128
PREVIEW_SAMPLES = 16


# ---------------------------------------------------------------------------------------------
# Albedo: divide out an estimated shading.

def photo_linear_rgb(photo):
    """The photo's colours in linear Rec.709, (H, W, 3) top row first.

    Byte images hold their colour space's encoded values; float images are already linear.
    """
    rgb = common.read_pixels(photo)[..., :3]
    if not photo.is_float and photo.colorspace_settings.name == 'sRGB':
        rgb = shading.srgb_to_linear(rgb)
    return rgb


# ---------------------------------------------------------------------------------------------
# Normals in the object's space.

def object_space_normals(normals_cam, camera, obj):
    """Blender camera-space normals -> the object's local space (what the Normal Map node's Object
    space reads). Objects scaled unevenly are handled by the transposed (not inverted) matrix."""
    camera_rotation = np.array(camera.matrix_world.to_3x3().normalized(), dtype=np.float64)
    object_linear = np.array(obj.matrix_world.to_3x3(), dtype=np.float64)
    # world = R_cam @ n; object-space normal n_obj with (M^-T) n_obj ~ world, so n_obj ~ M^T world.
    to_object = object_linear.T @ camera_rotation
    return maps.normalize_vectors(np.asarray(normals_cam, dtype=np.float32) @ to_object.T.astype(np.float32))


def object_normal_image(name, normal_image, camera, obj):
    """The normal image to use in Object space: the Lotus image itself when the object's space is
    the camera's (scene25d's meshes), else a converted copy named name."""
    camera_rotation = np.array(camera.matrix_world.to_3x3().normalized())
    object_rotation = np.array(obj.matrix_world.to_3x3().normalized())
    if np.allclose(camera_rotation, object_rotation, atol=1e-5):
        return normal_image
    if scene25d_sequence.is_animated(normal_image):
        raise ValueError(f"{obj.name} no longer faces the way its camera looked when it was built: the normals "
                         f"of a sequence cannot be turned into its space frame by frame; build it again")
    normals = object_space_normals(common.camera_normals(normal_image), camera, obj)
    image = common.write_float_image(name, normals * 0.5 + 0.5)
    image["lotus_kind"] = "normal_object"
    image["lotus_source"] = naming.source_name(normal_image)
    outputs.keep_in_blend(image)  # made here, written nowhere: its pixels live in the .blend
    return image


# ---------------------------------------------------------------------------------------------
# Material.

def build_relight_material(name, albedo_image, normal_image=None, *, roughness=0.8,
                           normal_strength=1.0, timing=None):
    """Principled BSDF: albedo -> Base Color, object-space normals -> Normal Map (Object) -> Normal.
    With timing (scene25d_sequence.FrameTiming) image sequences and movies follow the frames."""
    material = bpy.data.materials.new(name)
    tree = compat.node_tree(material)
    tree.nodes.clear()
    links = tree.links
    uv = tree.nodes.new("ShaderNodeUVMap")
    uv.name = "Lotus UV"
    uv.uv_map = common.UV_MAP_NAME
    uv.location = (-900, 0)
    albedo = tree.nodes.new("ShaderNodeTexImage")
    albedo.name = albedo.label = "Lotus Albedo"
    albedo.image = albedo_image
    albedo.extension = 'EXTEND'
    albedo.location = (-650, 200)
    scene25d_sequence.follow_frames(albedo, albedo_image, timing)
    links.new(uv.outputs["UV"], albedo.inputs["Vector"])
    bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.name = "Lotus Principled BSDF"
    bsdf.location = (-50, 150)
    bsdf.inputs["Roughness"].default_value = roughness
    links.new(albedo.outputs["Color"], bsdf.inputs["Base Color"])
    if normal_image is not None:
        texture = tree.nodes.new("ShaderNodeTexImage")
        texture.name = texture.label = "Lotus Normals (Object)"
        texture.image = normal_image
        texture.extension = 'EXTEND'
        texture.location = (-650, -150)
        scene25d_sequence.follow_frames(texture, normal_image, timing)
        links.new(uv.outputs["UV"], texture.inputs["Vector"])
        normal_map = tree.nodes.new("ShaderNodeNormalMap")
        normal_map.name = "Lotus Normal Map"
        normal_map.space = 'OBJECT'
        normal_map.inputs["Strength"].default_value = normal_strength
        normal_map.location = (-300, -150)
        links.new(texture.outputs["Color"], normal_map.inputs["Color"])
        links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    output.name = "Lotus Material Output"
    output.location = (300, 150)
    links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    material["lotus_material"] = "RELIGHT"
    return material


def replace_material(obj, material):
    """Put material on the object: its first slot, and the 2.5D geometry nodes' Material input."""
    common.assign_material(obj, material)
    modifier = obj.modifiers.get(scene25d.MODIFIER_NAME)
    if modifier is not None and modifier.type == 'NODES' and modifier.node_group is not None:
        scene25d.geonodes.set_inputs(modifier, Material=material)


# Cycles' shadow-ray offset along the smooth normal (default 0.1). A model's depth is jagged at the
# pixel scale, most where Fill Behind placed its soft steps at the photo's edges (a per-pixel
# choice that leaves steep sub-tear steps along the rims): shadow rays leaving the normal-mapped
# rim hit those steps, a speckled self-shadow. bench_refine.py's relight rows (severity 1, 2
# seeds, subjects): objects 18.23 -> 18.53 dB, outdoor 14.91 -> 15.28, table 15.63 -> 15.90,
# closeup 16.10 -> 16.26, room +0.01, interior -0.06; severity 0 within 0.15 dB.
SHADOW_TERMINATOR_GEOMETRY_OFFSET = 1.0


# ---------------------------------------------------------------------------------------------
# Filling the tears' gaps.

GAP_FILL_PUSH = 1.01  # the filler sits 1% farther along every view ray than the mesh
GAP_FILL_FOLLOWS = ("Near", "Depth Range", "Max Vertices", "Disparity", "Depth", "Normal")


def build_gap_fill(context, obj):
    """An untorn, camera-only copy of the 2.5D mesh just behind it.

    Torn edges leave gaps one pixel wide at silhouettes, through which the camera would see the
    world (a dark halo around the subject in relit renders). The copy, scaled about the camera
    (the object's origin) so every point moves back along its own view ray, shows up only in those
    gaps: it is invisible to every other ray, so it casts no shadow and lights nothing. Its inputs
    follow the mesh's through drivers, so the artist's changes apply to both.
    """
    modifier = obj.modifiers.get(scene25d.MODIFIER_NAME)
    fill = obj.copy()  # the copy shares the mesh data and keeps the camera drivers
    fill.name = f"{obj.name}_gap_fill"
    context.collection.objects.link(fill)
    fill.parent = obj
    fill.matrix_parent_inverse = Matrix.Identity(4)
    fill.matrix_basis = Matrix.Scale(GAP_FILL_PUSH, 4)
    fill_modifier = fill.modifiers[scene25d.MODIFIER_NAME]
    scene25d.geonodes.set_inputs(fill_modifier, Tear=False)
    tree = modifier.node_group
    for input_name in GAP_FILL_FOLLOWS:
        key = scene25d.geonodes.input_identifier(tree, input_name)
        value = compat.get_modifier_input(modifier, key)
        if isinstance(value, bpy.types.ID) or value is None:
            continue  # images are not animatable: the copy already holds the same ones
        driver = fill.driver_add(compat.modifier_input_data_path(fill_modifier, key)).driver
        driver.type = 'AVERAGE'
        variable = driver.variables.new()
        variable.type = 'SINGLE_PROP'
        variable.targets[0].id_type = 'OBJECT'
        variable.targets[0].id = obj
        variable.targets[0].data_path = compat.modifier_input_data_path(modifier, key)
    for ray in ("visible_diffuse", "visible_glossy", "visible_transmission", "visible_volume_scatter",
                "visible_shadow"):
        setattr(fill, ray, False)
    fill.hide_select = True
    fill["lotus_gap_fill"] = True
    return fill


# ---------------------------------------------------------------------------------------------
# Geometry without depth: an image plane filling the camera view.

def build_image_plane(context, photo, focal_35mm=None, focal_source=None):
    """A plane at PLANE_DISTANCE in front of a new camera, exactly filling its view. Its local space
    is the camera's (like scene25d's meshes). The focal length follows the 2.5D builder's Focal
    Source rule (scene25d_camera.choose_focal: the photo's EXIF first). Returns (plane, camera)."""
    width, height = scene25d_sequence.image_size(photo)
    name = common.photo_stem(photo)
    lens, sensor, origin = scene25d_camera.choose_focal(
        context, photo, focal_source=focal_source or ("MANUAL" if focal_35mm else "AUTO"),
        focal_35mm=focal_35mm, width=width, height=height)
    camera = common.new_camera(context, name + "_camera", width, height, lens, sensor)
    camera["lotus_focal_source"] = origin
    intrinsics = geometry.intrinsics_from_lens(lens, sensor, width, height, 'AUTO')
    half_w = 0.5 * width / intrinsics.focal_px * PLANE_DISTANCE
    half_h = 0.5 * height / intrinsics.focal_px * PLANE_DISTANCE
    mesh = common.image_quad(name + "_plane", [
        (-half_w, -half_h, -PLANE_DISTANCE), (half_w, -half_h, -PLANE_DISTANCE),
        (half_w, half_h, -PLANE_DISTANCE), (-half_w, half_h, -PLANE_DISTANCE)])
    plane = bpy.data.objects.new(name + "_plane", mesh)
    plane.matrix_world = camera.matrix_world.copy()
    context.collection.objects.link(plane)
    plane["lotus_source"] = photo.name
    return plane, camera


# ---------------------------------------------------------------------------------------------
# Light rig and ground.

def subject_distance(context, obj, camera):
    """Planar distance from the camera to the subject: a low quantile of the evaluated mesh's depths."""
    evaluated = obj.evaluated_get(context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    try:
        count = len(mesh.vertices)
        if count == 0:
            return PLANE_DISTANCE
        coordinates = np.empty(count * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", coordinates)
    finally:
        evaluated.to_mesh_clear()
    local = coordinates.reshape(-1, 3)
    to_camera = np.array(camera.matrix_world.inverted() @ obj.matrix_world, dtype=np.float64)
    in_camera = geometry.transform_points(local, to_camera)
    return float(np.quantile(-in_camera[:, 2], SUBJECT_DEPTH_QUANTILE))


def _link(context, obj):
    context.collection.objects.link(obj)
    return obj


def build_light_rig(context, photo, camera, distance, *, key_power=None):
    """An Empty at the subject (oriented like the camera) with key/fill/rim area lights parented
    to it, each tracking it, named after the photo's stem. Returns (rig_empty, {role: light_object})."""
    name = common.photo_stem(photo)
    rotation = camera.matrix_world.to_3x3().normalized()
    centre = camera.matrix_world.translation + rotation @ Vector((0.0, 0.0, -distance))
    rig = _link(context, bpy.data.objects.new(f"{name}_light_rig", None))
    rig.empty_display_type = 'SPHERE'
    rig.empty_display_size = 0.1 * distance
    rig.matrix_world = Matrix.Translation(centre) @ rotation.to_4x4()
    key_power = KEY_POWER_PER_M2 * distance * distance if key_power is None else key_power
    lights = {}
    for role, (direction, share) in RIG_LIGHTS.items():
        data = bpy.data.lights.new(f"{name}_{role}", 'AREA')
        data.energy = key_power * share
        data.shape = 'DISK'
        data.size = 0.35 * distance
        light = _link(context, bpy.data.objects.new(f"{name}_{role}", data))
        light.parent = rig
        light.location = direction.normalized() * distance  # in the rig's (camera-aligned) frame
        track = light.constraints.new('TRACK_TO')
        track.target = rig
        track.track_axis = 'TRACK_NEGATIVE_Z'
        track.up_axis = 'UP_Y'
        light["lotus_light_role"] = role
        lights[role] = light
    rig["lotus_source"] = photo.name
    rig["lotus_light_rig"] = True
    return rig, lights


def build_shadow_catcher(context, name, obj, camera, distance):
    """A large horizontal plane at the lowest point of the mesh, catching shadows (Cycles)."""
    evaluated = obj.evaluated_get(context.evaluated_depsgraph_get())
    corners = [evaluated.matrix_world @ Vector(corner) for corner in evaluated.bound_box]
    lowest = min(corner.z for corner in corners) if corners else 0.0
    centre = camera.matrix_world.translation + camera.matrix_world.to_3x3().normalized() @ \
        Vector((0.0, 0.0, -distance))
    size = 4.0 * distance
    mesh = bpy.data.meshes.new(f"{name}_shadow_catcher")
    half = 0.5 * size
    mesh.from_pydata([(-half, -half, 0.0), (half, -half, 0.0), (half, half, 0.0), (-half, half, 0.0)],
                     [], [(0, 1, 2, 3)])
    ground = _link(context, bpy.data.objects.new(f"{name}_shadow_catcher", mesh))
    ground.location = (centre.x, centre.y, lowest)
    ground.is_shadow_catcher = True
    return ground


def configure_cycles(scene, *, ambient=0.05, film_transparent=False):
    """Cycles with denoising, the Standard view transform (the photo's colours stay as they are),
    and a dim uniform world so that the rig does the lighting."""
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = RENDER_SAMPLES
    scene.cycles.preview_samples = PREVIEW_SAMPLES * 2
    # Denoised renders fail where the build has no denoiser (Debian's 4.3): render noisy there.
    scene.cycles.use_denoising = compat.cycles_can_denoise(scene)
    scene.view_settings.view_transform = 'Standard'
    scene.view_settings.look = 'None'
    scene.render.film_transparent = film_transparent
    world = bpy.data.worlds.get("Lotus Relight World") or bpy.data.worlds.new("Lotus Relight World")
    compat.node_tree(world)
    background = next((n for n in world.node_tree.nodes if n.type == 'BACKGROUND'), None)
    if background is None:
        background = world.node_tree.nodes.new("ShaderNodeBackground")
        output = next((n for n in world.node_tree.nodes if n.type == 'OUTPUT_WORLD'), None) \
            or world.node_tree.nodes.new("ShaderNodeOutputWorld")
        world.node_tree.links.new(background.outputs[0], output.inputs["Surface"])
    background.inputs["Color"].default_value = (ambient, ambient, ambient, 1.0)
    background.inputs["Strength"].default_value = 1.0
    world.color = (ambient, ambient, ambient)
    scene.world = world
    return world


# ---------------------------------------------------------------------------------------------
# The whole setup.

@atomic_builder
def build_relight_scene(context, photo, depth=None, normal=None, *, geometry_mode="MESH", albedo="PHOTO",
                        near=None, depth_range=None, focal_35mm=None, focal_source=None, refine=None,
                        max_vertices=None, tear_threshold=None, light_rig=True, shadow_catcher=False,
                        ambient=0.05, roughness=0.8, gap_fill=True):
    """Build the relightable scene for photo. depth/normal: its Lotus results (None: not used).

    Returns a dict with "object", "camera", "material", "albedo", "rig", "lights", "ground",
    "gap_fill" (None where not made).
    """
    if albedo == "DELIGHT" and (scene25d_sequence.is_animated(photo) or scene25d_sequence.is_animated(normal)):
        raise ValueError("Remove Shading works on a still photo: use the Photo albedo for an image sequence "
                         "or movie")
    name = common.photo_stem(photo)
    reused = False
    if geometry_mode == "MESH":
        if depth is None:
            raise ValueError(f"No Lotus depth for {photo.name}: predict depth first, or use an image plane")
        # Build 2.5D Scene (or an earlier setup) made them already: relight those.
        obj, camera = existing.photo_scene(context, photo)
        reused = obj is not None
        if reused:
            context.scene.render.resolution_x, context.scene.render.resolution_y = \
                scene25d_sequence.image_size(photo)
        else:
            obj, camera = scene25d.build_photo_scene(
                context, photo, depth, normal, mode="GEONODES", near=near, depth_range=depth_range,
                focal_35mm=focal_35mm, focal_source=focal_source, refine=refine,
                max_vertices=max_vertices, tear_threshold=tear_threshold, material="SHADED")
    else:
        obj, camera = build_image_plane(context, photo, focal_35mm=focal_35mm, focal_source=focal_source)

    timing = scene25d_sequence.timing_of(obj) if geometry_mode == "MESH" else \
        scene25d_sequence.timing_for((photo,), context.scene)
    if albedo == "DELIGHT":
        if normal is None:
            raise ValueError("Removing the shading needs the Lotus normals")
        albedo_rgb, removed = shading.estimate_albedo(photo_linear_rgb(photo),
                                                      common.camera_normals(normal))
        albedo_image = common.write_float_image(f"{name}_albedo", albedo_rgb, non_color=False)
        albedo_image["lotus_kind"] = "albedo"
        # False: the normals explain too little of the photo's shading, its colours were kept.
        albedo_image["lotus_shading_removed"] = bool(np.ptp(removed) > 1e-3)
        albedo_image["lotus_source"] = photo.name
        outputs.keep_in_blend(albedo_image)
    else:
        albedo_image = photo
    normal_object = object_normal_image(f"{name}_normal_object", normal, camera, obj) if normal else None
    old_material = obj.data.materials[0] if obj.data.materials else None
    material = build_relight_material(f"{name}_relight", albedo_image, normal_object, roughness=roughness,
                                      timing=timing)
    replace_material(obj, material)
    if geometry_mode == "MESH":
        scene25d.shade_fill(obj)   # the filled background behind the tears is lit as well
        compat.set_shadow_terminator_geometry_offset(obj, SHADOW_TERMINATOR_GEOMETRY_OFFSET)
    if old_material is not None and old_material.users == 0:
        bpy.data.materials.remove(old_material)

    if geometry_mode == "MESH" and gap_fill:
        gap_fill = (reused and existing.gap_fill(obj)) or build_gap_fill(context, obj)
    else:
        gap_fill = None
    context.view_layer.update()
    distance = subject_distance(context, obj, camera) if geometry_mode == "MESH" else PLANE_DISTANCE
    rig, lights = existing.light_rig(context.scene, photo) if light_rig else (None, {})
    if light_rig and rig is None:
        rig, lights = build_light_rig(context, photo, camera, distance)
    elif rig is not None:
        rig["lotus_source"] = photo.name  # a rig of an earlier version recorded the stem
    ground = build_shadow_catcher(context, name, obj, camera, distance) if shadow_catcher else None
    configure_cycles(context.scene, ambient=ambient, film_transparent=shadow_catcher)
    context.scene.camera = camera
    context.scene["lotus_relight_source"] = photo.name
    obj["lotus_relight"] = True
    return {"object": obj, "camera": camera, "material": material, "albedo": albedo_image,
            "rig": rig, "lights": lights, "ground": ground, "gap_fill": gap_fill,
            "reused": reused}
