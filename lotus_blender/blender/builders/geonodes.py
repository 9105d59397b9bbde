"""The geometry-nodes group behind the 2.5D mesh: a grid unprojected through the camera.

Everything happens in nodes so that the artist's changes (tear threshold, near distance, depth
range, resolution, focal length) show at once, and no Python loops over vertices:

  Grid (vertices from Max Vertices and the image aspect)
  -> UVMap (corner attribute) at the centre of the pixel each vertex samples
  -> custom normals from the normal image (Blender camera space, rgb = 0.5 n + 0.5; "Set Mesh
     Normal" exists from Blender 4.5, older versions keep smooth geometric normals)
  -> positions: depth image sampled with Closest interpolation, mapped to metric depth exactly as
     core.maps.disparity_to_depth / relative_depth_to_depth do, unprojected along the pixel's ray
     (the outermost vertices on the frame's edges, so the mesh covers whole pixels up to the
     border: core.geometry.grid_ray_coordinates; with Fill Behind they reach past the frame by
     what a camera move can bring into view there, with the border pixels' colours)
  -> tearing: edges whose relative depth jump |z1 - z2| / min(z1, z2) exceeds the threshold are
     deleted with their faces (core.geometry.torn_faces is the numpy twin)
  -> the layer behind the tears (Fill Behind, core.fill): a copy of the grid placed at the depth
     of the "Behind" image (the far side continued under the near side), keeping the torn faces
     (pushed back to the far side: seen from the camera they close the tear's one-pixel gap with
     the photo's own colours) and, with Fill Behind, the faces of the band a camera move of Move
     Range can reveal (|near edge distance| <= core.fill.band_width), shown with Fill Material
  -> smooth shading, material.
Every image is read at the frame the "Frame" input says (driven by the scene's frame on the mesh
of an image sequence or movie) through the Frame inputs of Image Texture and Image Info, so a 2.5D
scene of a sequence follows its frames.

The object's local space is the camera's space (the builder gives the object the camera's
transform), so the mesh looks down -Z like the camera.
"""

import bpy

from ...core import fill, geometry
from .. import compat
from .common import UV_MAP_NAME
from .node_graph import NodeGraph

GROUP_NAME = "Lotus 2.5D Mesh"
GROUP_VERSION = 10
_POINT_UV = "lotus_uv"  # per-vertex texture coordinate of the sampled pixel, removed before the output
_RAY_UV = "lotus_ray_uv"  # per-vertex texture coordinate of the ray (frame edges at the border)
_FACE_FAR, _FACE_BAND = "lotus_face_far", "lotus_face_band"   # per-face, removed before the output
FILL_WEIGHT = "lotus_fill"  # 1 where the layer behind shows the filled background, 0: the photo

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
    "Behind": ('NodeSocketImage', None, None, None,
               "The background continued behind the near side of the tears (red: depth values like "
               "the Depth image; green: pixels from the tear), written by Build 2.5D Scene"),
    "Fill Behind": ('NodeSocketBool', True, None, None,
                    "Fill the background a camera move can reveal behind every tear"),
    "Move Range": ('NodeSocketFloat', fill.DEFAULT_MOVE_RANGE, 0.0, 1.0,
                   "How far the camera may move, as a fraction of the subject distance: the width "
                   "of the filled band behind each near edge follows from it"),
    "Fill Material": ('NodeSocketMaterial', None, None, None, "Material showing the filled background"),
    # Image sequences and movies (the images' frames; a still image ignores them): the scene frame
    # f shows the images' frame clamp(f - Frame Start + 1, 1, Frame Duration) + Frame Offset, the
    # rule of Blender's own image users (ImageUser frame_start / frame_offset / frame_duration).
    # "Frame" is driven by the scene's frame only on a sequence's mesh: a Scene Time node would make
    # every 2.5D mesh, stills too, evaluate again on every frame of an animation.
    "Frame": ('NodeSocketInt', 1, -1048574, 1048574,
              "The scene's frame (driven by it on a 2.5D scene of an image sequence or movie)"),
    "Frame Start": ('NodeSocketInt', 1, -1048574, 1048574, "Scene frame that shows the sequence's first frame"),
    "Frame Offset": ('NodeSocketInt', 0, -1048574, 1048574,
                     "Added to the frame number: the sequence's first file is frame Frame Offset + 1"),
    "Frame Duration": ('NodeSocketInt', 0, 0, 1048574,
                       "Frames of the sequence (0: a still image); past its end the last frame stays"),
}
# core.fill's band: f_px * move_range * (1 - z_near / z_far) * BAND_MARGIN + BAND_EXTRA_PX
BAND_MARGIN = 1.25
BAND_EXTRA_PX = 2.0
# The lip's vertex lies back along the near surface's slope: its depth goes on by LIP_SLOPE times
# the step from the pixel inside to the edge pixel (never so far that it tears from that pixel).
# A rounded object turns away at its silhouette, and a move shows a little of it past there
# (exact maps, bench_fill.py, against the edge pixel's own depth: the pixels the photo shows after
# an orbit of 3 degrees +1.2 dB outdoors, +0.1 dB at the table's orbits; 1.0: within 0.05 dB).
LIP_SLOPE = 1.5
LIP_PX = 0.7  # how far the near side of a step reaches past its edge pixels' centres, toward the far
# pixels' centres (never onto them: the own camera still sees the far side there). The edge of a
# foreground object lies anywhere between the two centres, and a move shows the near side's
# colour there more often than not (exact maps, 0.7 against 0.45: the pixels the photo shows
# 0.1-1.2 dB better on dollies, the few revealed there 0.2-3 dB worse, orbits and own camera
# within 0.3 dB; 0.9 costs the revealed pixels of orbits another 1 dB)


def _image_frame(graph, inp):
    """The images' frame at the scene's frame (INPUTS "Frame Start" says the rule)."""
    relative = graph.add(graph.sub(inp["Frame"], inp["Frame Start"]), 1.0)
    held = graph.clamp(relative, 1.0, graph.math('MAXIMUM', inp["Frame Duration"], 1.0))
    return graph.add(graph.math('FLOOR', held), inp["Frame Offset"])


def _pixel_centre_uv(graph, across, down, width, height, outside=None):
    """Texture coordinates (u, v, 0) of the centre of the pixel each grid vertex samples, and of
    the vertex's ray: the same, except on the outermost rows and columns, which lie on the frame's
    edges (u or v = 0 or 1) so that the mesh covers the whole of the border pixels.

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
    uv = graph.vector('MULTIPLY_ADD', pixel, inverse_size, offset)   # v = 1 - (row + 0.5) / H
    # Border weight per axis: 1 - min(k (n - 1 - k), 1) is 1 on the outermost vertices (k = 0 or
    # n - 1), 0 inside; there the ray's coordinate is k / (n - 1), i.e. 0 or 1.
    last = graph.combine(graph.sub(across, 1.0), graph.sub(down, 1.0), 1.0)
    inside = graph.vector('MULTIPLY', index, graph.vector('SUBTRACT', last, index))
    border = graph.vector('SUBTRACT', (1.0, 1.0, 1.0), graph.vector('MINIMUM', inside, (1.0, 1.0, 1.0)))
    edge = graph.vector('DIVIDE', index, last)
    if outside is not None:     # past the frame's edges by `outside` (texture units): 0 -> -o, 1 -> 1 + o
        edge = graph.vector('MULTIPLY_ADD', graph.vector('MULTIPLY_ADD', edge, (2.0, 2.0, 0.0), (-1.0, -1.0, 0.0)),
                            outside, edge)
    ray_uv = graph.vector('MULTIPLY_ADD', graph.vector('SUBTRACT', edge, uv), border, uv)
    # A few thousandths of a pixel off the centres (core.geometry.RAY_OFFSET_PX says why).
    right, down_shift = geometry.RAY_OFFSET_PX
    ray_uv = graph.vector('ADD', ray_uv, graph.combine(graph.div(right, width), graph.div(-down_shift, height), 0.0))
    return uv, ray_uv


def _custom_normals(graph, geometry, inp, uv):
    """Free custom normals sampled from the normal image, rgb = 0.5 n + 0.5 decoded; the image is
    already in Blender camera space, which is the object's space."""
    normal_texture = graph.texture(inp["Normal"], uv)
    decoded = graph.node("ShaderNodeVectorMath", {0: normal_texture.outputs["Color"], 1: (2.0, 2.0, 2.0),
                                                  2: (-1.0, -1.0, -1.0)}, operation='MULTIPLY_ADD')
    unit = graph.node("ShaderNodeVectorMath", {0: decoded.outputs[0]}, operation='NORMALIZE')
    set_normal = graph.node("GeometryNodeSetMeshNormal", {"Custom Normal": unit.outputs[0]},
                            mode='FREE', domain='POINT')
    graph.tree.links.new(geometry, compat.geometry_input(set_normal))
    with_normals = set_normal.outputs[0]
    normal_info = graph.image_info(inp["Normal"])
    has_normal_image = graph.math('GREATER_THAN', normal_info.outputs["Width"], 0.0)
    use_normals = graph.node("FunctionNodeBooleanMath", {0: inp["Use Normals"], 1: has_normal_image},
                             operation='AND').outputs[0]
    return graph.switch('GEOMETRY', use_normals, geometry, with_normals)


def _build(tree):
    graph = NodeGraph(tree)
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
    graph.frame = _image_frame(graph, inp)
    info = graph.image_info(inp["Depth"])
    width, height = info.outputs["Width"], info.outputs["Height"]

    # Grid size: floor(sqrt(max * W / H)) across, clamped to [2, W]; rows keep the aspect.
    across = graph.math('FLOOR', graph.math('SQRT', graph.div(graph.mul(inp["Max Vertices"], width), height)))
    across = graph.clamp(across, 2.0, width)
    down = graph.math('FLOOR', graph.add(graph.div(graph.mul(across, height), width), 0.5))
    down = graph.clamp(down, 2.0, height)
    grid = graph.node("GeometryNodeMeshGrid", {"Size X": 1.0, "Size Y": 1.0,
                                               "Vertices X": across, "Vertices Y": down})

    # With Fill Behind the frame's outermost faces reach past its edges by what a move of Move
    # Range can bring into view there (f_px * Move Range * BAND_MARGIN pixels), showing the border
    # pixels' colours (the textures extend): the photo's camera still sees only the frame.
    focal_px = graph.mul(graph.div(inp["Focal Length"], inp["Sensor Width"]), graph.math('MAXIMUM', width, height))
    has_behind = graph.math('GREATER_THAN', graph.image_info(inp["Behind"])
                            .outputs["Width"], 0.0)
    filling = graph.mul(graph.mul(inp["Fill Behind"], inp["Tear"]), has_behind)
    outside_px = graph.mul(graph.mul(focal_px, graph.mul(inp["Move Range"], BAND_MARGIN)), filling)
    outside = graph.combine(graph.div(outside_px, width), graph.div(outside_px, height), 0.0)
    # Computed once per vertex and stored: evaluating this chain per corner (4x as many) or
    # again for each texture lookup costs more than the rest of the tree.
    pixel_uv, ray_uv = _pixel_centre_uv(graph, across, down, width, height, outside)
    geometry = graph.node("GeometryNodeStoreNamedAttribute",
                          {"Geometry": grid.outputs["Mesh"], "Name": _POINT_UV, "Value": pixel_uv},
                          data_type='FLOAT_VECTOR', domain='POINT').outputs[0]
    geometry = graph.node("GeometryNodeStoreNamedAttribute",
                          {"Geometry": geometry, "Name": _RAY_UV, "Value": ray_uv},
                          data_type='FLOAT_VECTOR', domain='POINT').outputs[0]
    uv = graph.node("GeometryNodeInputNamedAttribute", {"Name": _POINT_UV}, data_type='FLOAT_VECTOR').outputs[0]
    ray_uv = graph.node("GeometryNodeInputNamedAttribute", {"Name": _RAY_UV}, data_type='FLOAT_VECTOR').outputs[0]
    grid_geometry = geometry

    if compat.HAS_SET_MESH_NORMAL:  # before, smooth geometric normals
        geometry = _custom_normals(graph, geometry, inp, uv)

    # Metric planar depth, the same mapping as core.maps (values clamped to [0, 1]).
    near, depth_range = inp["Near"], inp["Depth Range"]
    far = graph.add(near, depth_range)
    inverse_far = graph.div(1.0, far)

    def metric(value):
        value = graph.clamp(value, 0.0, 1.0)
        # disparity_to_depth: 1 / (d * (1/near - 1/far) + 1/far)
        from_disparity = graph.div(1.0, graph.add(graph.mul(value, graph.sub(graph.div(1.0, near), inverse_far)),
                                                  inverse_far))
        # relative_depth_to_depth: near + r * (far - near)
        from_relative = graph.add(near, graph.mul(value, depth_range))
        return graph.switch('FLOAT', inp["Disparity"], from_relative, from_disparity)

    depth = metric(graph.sample_red(inp["Depth"], uv))

    # Unproject along the vertex's ray: P = depth * ((u W - W/2) / f_px, (v H - H/2) / f_px, -1)
    # with f_px = lens / sensor * max(W, H).
    metres_per_pixel = graph.div(inp["Sensor Width"],
                                 graph.mul(inp["Focal Length"], graph.math('MAXIMUM', width, height)))
    ray_scale = graph.combine(graph.mul(width, metres_per_pixel), graph.mul(height, metres_per_pixel), 0.0)
    ray_offset = graph.combine(graph.mul(graph.mul(width, metres_per_pixel), -0.5),
                               graph.mul(graph.mul(height, metres_per_pixel), -0.5), -1.0)

    def placed(geometry, depth, ray_uv):
        """Vertices on the rays through ray_uv at the planar depth; the UV map follows the rays."""
        ray = graph.vector('MULTIPLY_ADD', ray_uv, ray_scale, ray_offset)
        scaled = graph.node("ShaderNodeVectorMath", {0: ray, "Scale": depth}, operation='SCALE').outputs[0]
        geometry = graph.node("GeometryNodeSetPosition", {"Geometry": geometry, "Position": scaled}).outputs[0]
        return graph.node("GeometryNodeStoreNamedAttribute", {"Geometry": geometry, "Name": UV_MAP_NAME,
                                                              "Value": ray_uv},
                          data_type='FLOAT2', domain='CORNER').outputs[0]

    grow = graph.add(inp["Tear Threshold"], 1.0)
    lip, lip_depth = _near_edge_lip(graph, inp, uv, depth, metric, grow, across, down, width, height)
    geometry = placed(geometry, lip_depth, graph.vector('ADD', ray_uv, lip))
    grid_geometry = placed(grid_geometry, depth, ray_uv)

    # Tearing on edges: relative jump of the planar depth (-Z) of the two vertices.
    ends = graph.node("GeometryNodeInputMeshEdgeVertices")
    z1 = graph.node("ShaderNodeSeparateXYZ", {0: ends.outputs["Position 1"]}).outputs["Z"]
    z2 = graph.node("ShaderNodeSeparateXYZ", {0: ends.outputs["Position 2"]}).outputs["Z"]
    # |a - b| / min(a, b) > t  <=>  max(a, b) > (1 + t) min(a, b); with z = -depth:
    # min(z1, z2) < (1 + t) max(z1, z2).
    farther, nearer = graph.math('MINIMUM', z1, z2), graph.math('MAXIMUM', z1, z2)
    too_far = graph.math('LESS_THAN', farther, graph.mul(nearer, grow))
    cut = graph.boolean('AND', inp["Tear"], too_far)
    geometry = graph.node("GeometryNodeDeleteGeometry", {"Geometry": geometry, "Selection": cut},
                          domain='EDGE', mode='EDGE_FACE').outputs[0]  # vertices stay
    geometry = graph.node("GeometryNodeSetMaterial", {"Geometry": geometry, "Material": inp["Material"]}).outputs[0]

    behind = _behind_layer(graph, grid_geometry, inp, uv, ray_uv, depth, metric, placed, cut, grow, metres_per_pixel)
    join = graph.node("GeometryNodeJoinGeometry")
    # The mesh first, so its vertices keep their indices (a multi-input lists the last link first).
    tree.links.new(behind, join.inputs[0])
    tree.links.new(geometry, join.inputs[0])
    geometry = join.outputs[0]

    for name in (_POINT_UV, _RAY_UV):
        geometry = graph.node("GeometryNodeRemoveAttribute", {"Geometry": geometry, "Name": name}).outputs[0]
    smooth = graph.node("GeometryNodeSetShadeSmooth", {"Shade Smooth": True}, domain='FACE')
    tree.links.new(geometry, compat.geometry_input(smooth))
    geometry = smooth.outputs[0]
    group_out = graph.node("NodeGroupOutput")
    tree.links.new(geometry, group_out.inputs[0])


def _near_edge_lip(graph, inp, uv, depth, metric, grow, across, down, width, height):
    """(texture-space offset, depth) of a vertex on the near side of a tear: LIP_PX along each axis
    toward its farther neighbours (of the 8 around it on the grid), at a depth that follows the
    near surface's slope (LIP_SLOPE). With it the near surface reaches a little past
    its edge pixels' centres, so the rays through them meet the near surface, never the layer
    behind (which shows the filled background right up to the tear)."""
    direction = None
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx == dy == 0:
                continue
            step = graph.combine(graph.div(float(dx), across), graph.div(float(dy), down), 0.0)
            neighbour = metric(graph.sample_red(inp["Depth"], graph.vector('ADD', uv, step)))
            farther = graph.math('GREATER_THAN', neighbour, graph.mul(depth, grow))
            term = graph.node("ShaderNodeVectorMath", {0: (float(dx), float(dy), 0.0), "Scale": farther},
                              operation='SCALE').outputs[0]
            direction = term if direction is None else graph.vector('ADD', direction, term)
    # Per axis, toward the side the farther neighbours lie on (zero where none is): a pixel is a
    # square, and on a diagonal edge its corner reaches LIP_PX along both axes (a unit direction
    # reached 0.49 pixel there, short of where the true edge often lies. Exact maps,
    # bench_fill.py: the pixels the photo shows up to 0.56 dB better (outdoor dolly 5%), the few
    # revealed pixels of the room's and table's dollies 0.1-0.5 dB worse, orbits within 0.1 dB).
    # The direction's components are whole numbers: clamped to [-1, 1] they are their signs
    # (Blender 4.2's Vector Math has no Sign).
    unit = graph.vector('MINIMUM', graph.vector('MAXIMUM', direction, (-1.0, -1.0, -1.0)), (1.0, 1.0, 1.0))
    # Only at steps (a background continued behind the vertex in the Behind image, or no Behind
    # image): the torn faces of a slope stay where the mesh is, and a lip there would open a crack
    # between them and a vertex that is both the far side of one tear and the near side of the next.
    behind_info = graph.image_info(inp["Behind"])
    no_behind = graph.math('LESS_THAN', behind_info.outputs["Width"], 1.0)
    behind_depth = metric(graph.sample_red(inp["Behind"], uv))
    at_step = graph.math('MAXIMUM', no_behind, graph.math('GREATER_THAN', behind_depth, graph.mul(depth, grow)))
    lipped = graph.mul(inp["Tear"], at_step)
    size = graph.mul(lipped, LIP_PX)
    offset = graph.vector('MULTIPLY', unit, graph.combine(graph.div(size, width), graph.div(size, height), 0.0))
    # The lip follows the near surface's slope (depth continued from the pixel inside, toward the
    # edge): a rounded object turns away at its silhouette, and a move shows it a little past
    # there. Never so far back that the lip tears from the pixel inside.
    inner_uv = graph.vector('SUBTRACT', uv, graph.vector('MULTIPLY', unit, graph.combine(
        graph.div(1.0, across), graph.div(1.0, down), 0.0)))
    inner = metric(graph.sample_red(inp["Depth"], inner_uv))
    extra = graph.math('MAXIMUM', graph.mul(graph.sub(depth, inner), LIP_SLOPE), 0.0)
    cap = graph.math('MAXIMUM', graph.sub(graph.mul(inner, graph.mul(grow, 0.98)), depth), 0.0)
    return offset, graph.add(depth, graph.mul(lipped, graph.math('MINIMUM', extra, cap)))


def _face_farthest(graph, geometry, depth):
    """Per face (a field in the face domain): the largest depth of its four corners."""
    farthest = None
    for sort_index in range(4):
        corner = graph.node("GeometryNodeCornersOfFace", {"Sort Index": sort_index}).outputs["Corner Index"]
        vertex = graph.node("GeometryNodeVertexOfCorner", {"Corner Index": corner}).outputs[0]
        sample = graph.node("GeometryNodeSampleIndex", {"Geometry": geometry, "Value": depth, "Index": vertex},
                            data_type='FLOAT', domain='POINT').outputs[0]
        farthest = sample if farthest is None else graph.math('MAXIMUM', farthest, sample)
    return farthest


def _store(graph, geometry, name, value, data_type, domain):
    return graph.node("GeometryNodeStoreNamedAttribute", {"Geometry": geometry, "Name": name, "Value": value},
                      data_type=data_type, domain=domain).outputs[0]


def _named(graph, name, data_type='FLOAT'):
    return graph.node("GeometryNodeInputNamedAttribute", {"Name": name}, data_type=data_type).outputs[0]


def _behind_layer(graph, geometry, inp, uv, ray_uv, depth, metric, placed, cut, grow, metres_per_pixel):
    """The layer behind the tears: the torn faces, each corner on the near side of its face
    pushed back to the background the Behind image continues under it (the far surface extended,
    never averaged across the tear), and with Fill Behind the faces of the band behind each near
    edge at the Behind image's depth. FILL_WEIGHT is 1 on the corners that show the filled background, 0 on those
    that keep the photo (the far side of a torn face)."""
    behind_value, distance = graph.sample(inp["Behind"], uv, ("Red", "Green"))
    has_behind = graph.math('GREATER_THAN', graph.image_info(inp["Behind"])
                            .outputs["Width"], 0.0)
    behind_depth = graph.switch('FLOAT', has_behind, depth, metric(behind_value))
    # A vertex of the band: the background lies behind it by more than the tear threshold, and it
    # is no farther from the near edge than a move of Move Range reveals (core.fill.band_width).
    in_front = graph.math('GREATER_THAN', behind_depth, graph.mul(depth, grow))
    opening = graph.clamp(graph.sub(1.0, graph.div(depth, behind_depth)), 0.0, 1.0)
    focal_px = graph.div(1.0, metres_per_pixel)
    band = graph.add(graph.mul(graph.mul(focal_px, graph.mul(inp["Move Range"], BAND_MARGIN)), opening),
                     BAND_EXTRA_PX)
    within = graph.math('LESS_THAN', distance, graph.add(band, 1e-3))
    filling = graph.boolean('AND', graph.boolean('AND', inp["Fill Behind"], inp["Tear"]), has_behind)
    in_band = graph.boolean('AND', filling, graph.boolean('AND', in_front, within))
    # Faces: torn (an edge cut) or wholly in the band; the rest of the copy is dropped.
    torn = graph.math('GREATER_THAN', graph.on_domain(cut, 'EDGE'), 0.0)     # any edge cut
    band_face = graph.math('GREATER_THAN', graph.on_domain(in_band, 'POINT'), 0.999)   # every corner
    band_only = graph.boolean('AND', band_face, graph.boolean('NOT', torn))
    material = graph.node("GeometryNodeSwitch", {"Switch": filling, "False": inp["Material"],
                                                 "True": inp["Fill Material"]}, input_type='MATERIAL').outputs[0]
    geometry = graph.node("GeometryNodeSetMaterial", {"Geometry": geometry, "Material": material}).outputs[0]
    geometry = _store(graph, geometry, _FACE_FAR, _face_farthest(graph, geometry, depth), 'FLOAT', 'FACE')
    geometry = _store(graph, geometry, _FACE_BAND, band_only, 'BOOLEAN', 'FACE')
    keep = graph.boolean('OR', torn, band_only)
    geometry = graph.node("GeometryNodeDeleteGeometry", {"Geometry": geometry,
                                                         "Selection": graph.boolean('NOT', keep)},
                          domain='FACE', mode='ALL').outputs[0]
    # Every face its own corners, so a pixel's vertex can be near in one torn face (pushed back)
    # and far in the next (kept where the photo shows it).
    split = graph.node("GeometryNodeSplitEdges")
    graph.tree.links.new(geometry, compat.geometry_input(split))
    geometry = split.outputs[0]
    far, in_band_face = _named(graph, _FACE_FAR), _named(graph, _FACE_BAND, 'BOOLEAN')
    near_corner = graph.math('LESS_THAN', graph.mul(depth, grow), far)
    # A near corner with a background behind it (the Behind image: a step, not a slanted
    # surface's tears) goes back to that background, where the band meets it without a crack;
    # elsewhere the torn face stays where the mesh is (a slope seen at a grazing angle).
    pushed = graph.boolean('AND', near_corner, in_front)
    torn_depth = graph.switch('FLOAT', pushed, depth, behind_depth)
    fill_weight = graph.boolean('AND', filling, graph.boolean('OR', in_band_face, pushed))
    geometry = _store(graph, geometry, FILL_WEIGHT, fill_weight, 'FLOAT', 'POINT')
    geometry = placed(geometry, graph.switch('FLOAT', in_band_face, torn_depth, behind_depth), ray_uv)
    for name in (_FACE_FAR, _FACE_BAND):
        geometry = graph.node("GeometryNodeRemoveAttribute", {"Geometry": geometry, "Name": name}).outputs[0]
    if compat.HAS_SET_MESH_NORMAL:  # the same kind of normals as the mesh, from its own shape
        normal = graph.node("GeometryNodeInputNormal").outputs[0]
        set_normal = graph.node("GeometryNodeSetMeshNormal", {"Custom Normal": normal}, mode='FREE',
                                domain='POINT')
        graph.tree.links.new(geometry, compat.geometry_input(set_normal))
        geometry = set_normal.outputs[0]
    return geometry


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
