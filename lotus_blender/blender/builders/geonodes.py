"""The geometry-nodes group behind the 2.5D mesh: a grid unprojected through the camera.

Everything happens in nodes so that the artist's changes (tear threshold, near distance, depth
range, resolution, focal length) show at once, and no Python loops over vertices:

  Grid (vertices from Max Vertices and the image aspect)
  -> UVMap (corner attribute) at the centre of the pixel each vertex samples
  -> custom normals from the normal image (Blender camera space, rgb = 0.5 n + 0.5; "Set Mesh
     Normal" exists from Blender 4.5, older versions keep smooth geometric normals)
  -> positions: depth image sampled with Closest interpolation, mapped to metric depth exactly as
     core.maps.disparity_to_depth / relative_depth_to_depth do, unprojected along the pixel's ray
  -> tearing: edges whose relative depth jump |z1 - z2| / min(z1, z2) exceeds the threshold are
     deleted with their faces (core.geometry.torn_faces is the numpy twin)
  -> smooth shading, material.

The object's local space is the camera's space (the builder gives the object the camera's
transform), so the mesh looks down -Z like the camera.
"""

import bpy

from .. import compat

GROUP_NAME = "Lotus 2.5D Mesh"
GROUP_VERSION = 5
UV_MAP_NAME = "UVMap"
_POINT_UV = "lotus_uv"  # per-vertex texture coordinate, removed before the output

# Modifier inputs: name -> (socket type, default, min, max, description).
INPUTS = {
    "Depth": ('NodeSocketImage', None, None, None, "Lotus depth or disparity image"),
    "Disparity": ('NodeSocketBool', True, None, None,
                  "The depth image holds disparity (near = 1); off: relative depth (near = 0)"),
    "Near": ('NodeSocketFloat', 2.0, 0.001, 1e6, "Distance from the camera to the nearest point"),
    "Depth Range": ('NodeSocketFloat', 8.0, 0.0, 1e6, "Distance from the nearest to the farthest point"),
    "Focal Length": ('NodeSocketFloat', 50.0, 0.01, 1e5, "Camera lens (mm); driven by the camera"),
    "Sensor Width": ('NodeSocketFloat', 36.0, 0.01, 1e4,
                     "Camera sensor (mm) across the longer image edge; driven by the camera"),
    "Max Vertices": ('NodeSocketInt', 1024 * 1024, 4, 1 << 26,
                     "Grid resolution: at most this many vertices, never more than one per pixel"),
    "Tear": ('NodeSocketBool', True, None, None, "Cut the mesh where the depth jumps"),
    "Tear Threshold": ('NodeSocketFloat', 0.05, 0.0, 100.0,
                       "Cut edges whose relative depth jump |a - b| / min(a, b) is larger than this"),
    "Normal": ('NodeSocketImage', None, None, None, "Lotus normal image (Blender camera space)"),
    "Use Normals": ('NodeSocketBool', True, None, None, "Custom normals from the normal image"),
    "Material": ('NodeSocketMaterial', None, None, None, "Material showing the photo"),
}


class _Graph:
    """Small helpers to add nodes and wire math without a page of boilerplate per operation."""

    def __init__(self, tree):
        self.tree = tree
        self.x = 0

    def node(self, bl_idname, inputs=(), **props):
        node = self.tree.nodes.new(bl_idname)
        for key, value in props.items():
            setattr(node, key, value)
        for key, value in dict(inputs).items():
            socket = node.inputs[key]
            if isinstance(value, bpy.types.NodeSocket):
                self.tree.links.new(value, socket)
            else:
                socket.default_value = value
        node.location = (self.x, 0)
        self.x += 180
        return node

    def math(self, operation, a, b=None):
        inputs = {0: a} if b is None else {0: a, 1: b}
        return self.node("ShaderNodeMath", inputs, operation=operation).outputs[0]

    def add(self, a, b):
        return self.math('ADD', a, b)

    def sub(self, a, b):
        return self.math('SUBTRACT', a, b)

    def mul(self, a, b):
        return self.math('MULTIPLY', a, b)

    def div(self, a, b):
        return self.math('DIVIDE', a, b)

    def vector(self, operation, a, b=None, c=None):
        inputs = {index: value for index, value in enumerate((a, b, c)) if value is not None}
        return self.node("ShaderNodeVectorMath", inputs, operation=operation).outputs[0]

    def clamp(self, value, low, high):
        return self.node("ShaderNodeClamp", {"Value": value, "Min": low, "Max": high}).outputs[0]

    def switch(self, input_type, condition, if_false, if_true):
        node = self.node("GeometryNodeSwitch", {"Switch": condition, "False": if_false, "True": if_true},
                         input_type=input_type)
        return node.outputs[0]

    def combine(self, x, y, z):
        return self.node("ShaderNodeCombineXYZ", {"X": x, "Y": y, "Z": z}).outputs[0]

    def sample_red(self, image, vector):
        texture = self.node("GeometryNodeImageTexture", {"Image": image, "Vector": vector},
                            interpolation='Closest', extension='EXTEND')
        return self.node("FunctionNodeSeparateColor", {"Color": texture.outputs["Color"]}).outputs["Red"]


def _pixel_centre_uv(graph, across, down, width, height):
    """Texture coordinate (u, v, 0) of the centre of the pixel each grid vertex samples.

    The grid spans [-0.5, 0.5]; vertex k of n along an axis is round((c + 0.5) * (n - 1)) and
    samples pixel floor((k + 0.5) * pixels / n), rows counted from the top
    (core.geometry.grid_pixel_indices). Vector maths keeps the per-vertex work to a few nodes.
    """
    position = graph.node("GeometryNodeInputPosition").outputs[0]
    columns_rows = graph.combine(graph.sub(across, 1.0), graph.sub(down, 1.0), 0.0)
    half_plus = graph.combine(graph.add(graph.mul(graph.sub(across, 1.0), 0.5), 0.5),
                              graph.add(graph.mul(graph.sub(down, 1.0), 0.5), 0.5), 0.0)
    index = graph.vector('FLOOR', graph.vector('MULTIPLY_ADD', position, columns_rows, half_plus))
    # (column k + 0.5, row-from-top k + 0.5)
    centred = graph.vector('MULTIPLY_ADD', index, (1.0, -1.0, 0.0), graph.combine(0.5, graph.sub(down, 0.5), 0.0))
    # Multiply then divide: exact integers in float32, so floor() agrees with the numpy twin.
    pixel = graph.vector('FLOOR', graph.vector('DIVIDE', graph.vector('MULTIPLY', centred,
                                                                       graph.combine(width, height, 0.0)),
                                               graph.combine(across, down, 1.0)))
    inverse_size = graph.combine(graph.div(1.0, width), graph.div(-1.0, height), 0.0)
    offset = graph.combine(graph.div(0.5, width), graph.sub(1.0, graph.div(0.5, height)), 0.0)
    return graph.vector('MULTIPLY_ADD', pixel, inverse_size, offset)   # v = 1 - (row + 0.5) / H


def _custom_normals(graph, geometry, inp, uv):
    """Free custom normals sampled from the normal image, rgb = 0.5 n + 0.5 decoded; the image is
    already in Blender camera space, which is the object's space."""
    normal_texture = graph.node("GeometryNodeImageTexture", {"Image": inp["Normal"], "Vector": uv},
                                interpolation='Closest', extension='EXTEND')
    decoded = graph.node("ShaderNodeVectorMath", {0: normal_texture.outputs["Color"], 1: (2.0, 2.0, 2.0),
                                                  2: (-1.0, -1.0, -1.0)}, operation='MULTIPLY_ADD')
    unit = graph.node("ShaderNodeVectorMath", {0: decoded.outputs[0]}, operation='NORMALIZE')
    set_normal = graph.node("GeometryNodeSetMeshNormal", {"Custom Normal": unit.outputs[0]},
                            mode='FREE', domain='POINT')
    graph.tree.links.new(geometry, compat.geometry_input(set_normal))
    with_normals = set_normal.outputs[0]
    normal_info = graph.node("GeometryNodeImageInfo", {"Image": inp["Normal"]})
    has_normal_image = graph.math('GREATER_THAN', normal_info.outputs["Width"], 0.0)
    use_normals = graph.node("FunctionNodeBooleanMath", {0: inp["Use Normals"], 1: has_normal_image},
                             operation='AND').outputs[0]
    return graph.switch('GEOMETRY', use_normals, geometry, with_normals)


def _build(tree):
    graph = _Graph(tree)
    interface = tree.interface
    interface.new_socket("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    for name, (socket_type, default, low, high, description) in INPUTS.items():
        item = interface.new_socket(name, in_out='INPUT', socket_type=socket_type)
        item.description = description
        if default is not None:
            item.default_value = default
        if low is not None:
            item.min_value, item.max_value = low, high
    interface.new_socket("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')

    group_in = graph.node("NodeGroupInput")
    inp = group_in.outputs
    info = graph.node("GeometryNodeImageInfo", {"Image": inp["Depth"]})
    width, height = info.outputs["Width"], info.outputs["Height"]

    # Grid size: floor(sqrt(max * W / H)) across, clamped to [2, W]; rows keep the aspect.
    across = graph.math('FLOOR', graph.math('SQRT', graph.div(graph.mul(inp["Max Vertices"], width), height)))
    across = graph.clamp(across, 2.0, width)
    down = graph.math('FLOOR', graph.add(graph.div(graph.mul(across, height), width), 0.5))
    down = graph.clamp(down, 2.0, height)
    grid = graph.node("GeometryNodeMeshGrid", {"Size X": 1.0, "Size Y": 1.0,
                                               "Vertices X": across, "Vertices Y": down})

    # Computed once per vertex and stored: evaluating this chain per corner (4x as many) or
    # again for each texture lookup costs more than the rest of the tree.
    geometry = graph.node("GeometryNodeStoreNamedAttribute",
                          {"Geometry": grid.outputs["Mesh"], "Name": _POINT_UV, "Value": _pixel_centre_uv(graph, across, down, width, height)},
                          data_type='FLOAT_VECTOR', domain='POINT').outputs[0]
    uv = graph.node("GeometryNodeInputNamedAttribute", {"Name": _POINT_UV}, data_type='FLOAT_VECTOR').outputs[0]
    geometry = graph.node("GeometryNodeStoreNamedAttribute",
                          {"Geometry": geometry, "Name": UV_MAP_NAME, "Value": uv},
                          data_type='FLOAT2', domain='CORNER').outputs[0]

    if compat.HAS_SET_MESH_NORMAL:  # before, smooth geometric normals
        geometry = _custom_normals(graph, geometry, inp, uv)

    # Metric planar depth, the same mapping as core.maps (values clamped to [0, 1]).
    value = graph.clamp(graph.sample_red(inp["Depth"], uv), 0.0, 1.0)
    near, depth_range = inp["Near"], inp["Depth Range"]
    far = graph.add(near, depth_range)
    inverse_far = graph.div(1.0, far)
    # disparity_to_depth: 1 / (d * (1/near - 1/far) + 1/far)
    from_disparity = graph.div(1.0, graph.add(graph.mul(value, graph.sub(graph.div(1.0, near), inverse_far)),
                                              inverse_far))
    # relative_depth_to_depth: near + r * (far - near)
    from_relative = graph.add(near, graph.mul(value, depth_range))
    depth = graph.switch('FLOAT', inp["Disparity"], from_relative, from_disparity)

    # Unproject along the pixel's ray: P = depth * ((u W - W/2) / f_px, (v H - H/2) / f_px, -1)
    # with f_px = lens / sensor * max(W, H).
    metres_per_pixel = graph.div(inp["Sensor Width"],
                                 graph.mul(inp["Focal Length"], graph.math('MAXIMUM', width, height)))
    ray_scale = graph.combine(graph.mul(width, metres_per_pixel), graph.mul(height, metres_per_pixel), 0.0)
    ray_offset = graph.combine(graph.mul(graph.mul(width, metres_per_pixel), -0.5),
                               graph.mul(graph.mul(height, metres_per_pixel), -0.5), -1.0)
    ray = graph.vector('MULTIPLY_ADD', uv, ray_scale, ray_offset)
    scaled = graph.node("ShaderNodeVectorMath", {0: ray, "Scale": depth}, operation='SCALE').outputs[0]
    geometry = graph.node("GeometryNodeSetPosition", {"Geometry": geometry, "Position": scaled}).outputs[0]

    # Tearing on edges: relative jump of the planar depth (-Z) of the two vertices.
    ends = graph.node("GeometryNodeInputMeshEdgeVertices")
    z1 = graph.node("ShaderNodeSeparateXYZ", {0: ends.outputs["Position 1"]}).outputs["Z"]
    z2 = graph.node("ShaderNodeSeparateXYZ", {0: ends.outputs["Position 2"]}).outputs["Z"]
    # |a - b| / min(a, b) > t  <=>  max(a, b) > (1 + t) min(a, b); with z = -depth:
    # min(z1, z2) < (1 + t) max(z1, z2).
    farther, nearer = graph.math('MINIMUM', z1, z2), graph.math('MAXIMUM', z1, z2)
    too_far = graph.math('LESS_THAN', farther, graph.mul(nearer, graph.add(inp["Tear Threshold"], 1.0)))
    cut = graph.node("FunctionNodeBooleanMath", {0: inp["Tear"], 1: too_far}, operation='AND').outputs[0]
    geometry = graph.node("GeometryNodeDeleteGeometry", {"Geometry": geometry, "Selection": cut},
                          domain='EDGE', mode='EDGE_FACE').outputs[0]  # vertices stay

    geometry = graph.node("GeometryNodeRemoveAttribute", {"Geometry": geometry, "Name": _POINT_UV}).outputs[0]
    smooth = graph.node("GeometryNodeSetShadeSmooth", {"Shade Smooth": True}, domain='FACE')
    tree.links.new(geometry, compat.geometry_input(smooth))
    geometry = smooth.outputs[0]
    geometry = graph.node("GeometryNodeSetMaterial", {"Geometry": geometry, "Material": inp["Material"]}).outputs[0]
    group_out = graph.node("NodeGroupOutput")
    tree.links.new(geometry, group_out.inputs[0])


def get_node_group():
    """The shared node group, built once per file (rebuilt when this code's version is newer).

    The version stamp is written only once the group is complete, and a build that fails removes
    its half-built group, so a failure never leaves a group that later builds take as current."""
    tree = bpy.data.node_groups.get(GROUP_NAME)
    if tree is not None and tree.bl_idname == "GeometryNodeTree" and tree.get("lotus_version") == GROUP_VERSION:
        return tree
    if tree is not None:
        tree.name = GROUP_NAME + " (old)"
    tree = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    try:
        _build(tree)
    except BaseException:
        bpy.data.node_groups.remove(tree)
        raise
    tree["lotus_version"] = GROUP_VERSION
    return tree


def input_identifier(tree, name):
    """The modifier key (e.g. "Socket_3") of a group input."""
    for item in tree.interface.items_tree:
        if item.item_type == 'SOCKET' and item.in_out == 'INPUT' and item.name == name:
            return item.identifier
    raise KeyError(name)


def set_inputs(modifier, **values):
    """Set modifier inputs by their names as in INPUTS, with spaces as underscores."""
    tree = modifier.node_group
    for key, value in values.items():
        compat.set_modifier_input(modifier, input_identifier(tree, key.replace("_", " ")), value)
