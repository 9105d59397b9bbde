"""Every Blender API difference the add-on meets between 4.2 LTS and 5.3, in one place.

Each difference is detected by feature (an attribute, a node type, a socket type) rather than by
comparing version numbers, so distro builds and point releases take the right path; the comment
names the version that changed it. Builders, inputs and panels call these helpers instead of
checking versions themselves.
"""

from __future__ import annotations

import bpy

# -- geometry nodes ---------------------------------------------------------------------------

# Set Mesh Normal (custom normals from a field) exists from Blender 4.5; before, the 2.5D mesh
# keeps smooth geometric normals.
HAS_SET_MESH_NORMAL = hasattr(bpy.types, "GeometryNodeSetMeshNormal")


def geometry_input(node) -> bpy.types.NodeSocket:
    """A node's geometry input, whatever it is called: Set Shade Smooth's is "Geometry" up to 4.5
    and "Mesh" from 5.0."""
    return next(socket for socket in node.inputs if socket.type == 'GEOMETRY')


def _interface_inputs(modifier):
    """Blender 5.2+: a geometry-nodes modifier's inputs are RNA structs under
    ``modifier.properties.inputs.<identifier>.value``; before, they are ID properties
    ``modifier[identifier]``. None when the modifier has the older layout."""
    properties = getattr(modifier, "properties", None)
    return getattr(properties, "inputs", None)


def _input_struct(modifier, identifier):
    inputs = _interface_inputs(modifier)
    if inputs is not None and hasattr(inputs, identifier):
        return getattr(inputs, identifier)
    return None


def get_modifier_input(modifier, identifier: str):
    struct = _input_struct(modifier, identifier)
    return struct.value if struct is not None else modifier[identifier]


def set_modifier_input(modifier, identifier: str, value) -> None:
    struct = _input_struct(modifier, identifier)
    if struct is not None:
        struct.value = value
    else:
        modifier[identifier] = value
    # Neither way re-evaluates the modifier by itself when set from Python.
    modifier.id_data.update_tag()


def modifier_input_data_path(modifier, identifier: str) -> str:
    """The input's data path from the object that owns the modifier (for drivers)."""
    base = f'modifiers["{modifier.name}"]'
    if _input_struct(modifier, identifier) is not None:
        return f"{base}.properties.inputs.{identifier}.value"
    return f'{base}["{identifier}"]'


def draw_modifier_input(layout, modifier, identifier: str, text: str) -> None:
    struct = _input_struct(modifier, identifier)
    if struct is not None:
        layout.prop(struct, "value", text=text)
    else:
        layout.prop(modifier, f'["{identifier}"]', text=text)


# -- nodes in materials -----------------------------------------------------------------------

def set_node_location(node, x: float, y: float) -> None:
    """Place a node at absolute (x, y), also inside a frame: ``location_absolute`` exists from
    Blender 4.4; before, a framed node's location is relative to its frame, which the builders
    only parent to frames at the origin, so plain ``location`` lands at the same place."""
    if hasattr(node, "location_absolute"):
        node.location_absolute = (x, y)
    else:
        node.location = (x, y)


def enable_adaptive_subdivision(obj, modifier) -> None:
    """Adaptive subdivision for Cycles renders: a Subdivision modifier option from Blender 5.0;
    before, an object setting of the Cycles add-on that needs the Experimental feature set."""
    if hasattr(modifier, "use_adaptive_subdivision"):
        modifier.use_adaptive_subdivision = True
        return
    cycles = getattr(obj, "cycles", None)
    if cycles is not None and hasattr(cycles, "use_adaptive_subdivision"):
        cycles.use_adaptive_subdivision = True


def node_tree(block):
    """The node tree of a material or world: Blender 5.0 makes new ones with nodes; before,
    ``use_nodes`` has to be switched on first."""
    if block.node_tree is None:
        block.use_nodes = True
    return block.node_tree


def set_shadow_terminator_geometry_offset(obj, value: float) -> None:
    """Cycles' shadow terminator Geometry Offset of an object: a property of the Object from
    Blender 5.0, of its Cycles settings (``obj.cycles``) up to 4.5."""
    owner = obj if hasattr(obj, "shadow_terminator_geometry_offset") else obj.cycles
    owner.shadow_terminator_geometry_offset = value


def cycles_can_denoise(scene) -> bool:
    """False where the build lacks Cycles' chosen denoiser: distro builds may come without
    OpenImageDenoise (Debian's 4.3 does), and there every denoised render fails. A build
    feature rather than a version, detected the same way on 4.2 to 5.2."""
    try:
        import _cycles
    except ImportError:
        return True
    if getattr(_cycles, "with_openimagedenoise", True):
        return True
    # Without OpenImageDenoise its enum item is gone, and reading the denoiser then prints a
    # warning each time (panels ask on every redraw): read it only where OptiX can be chosen.
    items = scene.cycles.bl_rna.properties["denoiser"].enum_items.keys()
    return 'OPTIX' in items and scene.cycles.denoiser == 'OPTIX'


# -- compositor and sequencer -----------------------------------------------------------------

def new_compositor(scene, name: str):
    """A compositor tree for scene and the socket whose image becomes the render.

    Blender 5.0+: a compositor node group (returned as the group to remove afterwards), run by a
    compositor effect of the scene from 5.3 (which deprecates ``scene.compositing_node_group``,
    "Use compositor_effects instead"), assigned to ``compositing_node_group`` in 5.0 to 5.2;
    before, the scene's own ``node_tree`` with ``use_nodes`` (returned group None: it belongs to
    the scene)."""
    if hasattr(scene, "compositor_effects") or hasattr(scene, "compositing_node_group"):
        group = bpy.data.node_groups.new(name, "CompositorNodeTree")
        if hasattr(scene, "compositor_effects"):
            scene.compositor_effects.new(name=name).node_group = group
        else:
            scene.compositing_node_group = group
        group.interface.new_socket("Image", in_out='OUTPUT', socket_type='NodeSocketColor')
        output = group.nodes.new("NodeGroupOutput")
        return group, group, output.inputs[0]
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    output = tree.nodes.new("CompositorNodeComposite")
    return tree, None, output.inputs[0]


def compositor_trees(scene) -> list:
    """The node trees that composite scene's renders: its compositor effects' groups from 5.3
    (where ``compositing_node_group`` is deprecated), that group in 5.0 to 5.2, the scene's own
    ``node_tree`` before."""
    if hasattr(scene, "compositor_effects"):
        return [effect.node_group for effect in scene.compositor_effects
                if effect.node_group is not None]
    if hasattr(scene, "compositing_node_group"):
        return [scene.compositing_node_group] if scene.compositing_node_group else []
    return [scene.node_tree] if scene.use_nodes and scene.node_tree else []


def sequencer_strips(editor):
    """The sequencer's top-level strips: ``strips`` from Blender 5.0, ``sequences`` before."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


# -- image file settings ----------------------------------------------------------------------

_FORMAT_KEYS = ("media_type", "file_format", "color_mode", "color_depth")


def image_format_state(settings) -> dict:
    """What set_image_format changes, to put back afterwards (media_type exists from 5.0)."""
    return {key: getattr(settings, key) for key in _FORMAT_KEYS if hasattr(settings, key)}


def restore_image_format(settings, state: dict) -> None:
    for key in _FORMAT_KEYS:  # media_type first: it decides which file formats are valid
        if key in state:
            setattr(settings, key, state[key])


# Blender 5.0 split file formats by media type, which must be set first (absent before 5.0).
_MEDIA_TYPES = {'OPEN_EXR_MULTILAYER': 'MULTI_LAYER_IMAGE', 'FFMPEG': 'VIDEO'}


def set_file_format(settings, file_format: str) -> None:
    if hasattr(settings, "media_type"):
        settings.media_type = _MEDIA_TYPES.get(file_format, 'IMAGE')
    if settings.file_format != file_format:
        settings.file_format = file_format


def set_image_format(settings, file_format: str, color_mode: str, color_depth: str) -> None:
    set_file_format(settings, file_format)
    settings.color_mode = color_mode
    settings.color_depth = color_depth


# -- properties -------------------------------------------------------------------------------

# Datablock names hold 63 bytes up to Blender 4.5 and 255 from 5.0 (a longer one is cut, and a
# second cut to the same text becomes "X.001").
MAX_ID_NAME_BYTES = bpy.types.ID.bl_rna.properties["name"].length_max - 1

# The 'PATH_SUPPORTS_BLEND_RELATIVE' option (a file path field with the // toggle) exists from 4.5,
# where properties gained ``is_path_supports_blend_relative``.
BLEND_RELATIVE_PATH_OPTIONS = (
    {'PATH_SUPPORTS_BLEND_RELATIVE'}
    if "is_path_supports_blend_relative" in bpy.types.Property.bl_rna.properties else set())
