"""Camera moves on ground truth: the 2.5D scene of a Cycles render seen from moved cameras (issue 18).

Shared by tests/test_fill_ground_truth.py (a small subset) and benchmarks/bench_fill.py (the table).

- `render_truth(name, moves, ...)`: one of tests/ground_truth.py's SCENES with emission-only
  surfaces (each surface shows its base colour or checker as is, so only geometry decides what a
  camera sees and renders are noise-free), or SHADED_SCENES' "shaded" (Lambert surfaces lit by a
  sun: curved objects whose shading ramps toward their silhouettes), rendered from the photo's
  camera and from each move.
- `build_variant(gt, variant, maps)`: Build 2.5D Scene in a scene of its own from the photo and
  exact or model-like maps (tests/lotus_errors.py), as "fill" (Fill Behind), "holes" (Tear on, no
  fill), "rubber" (Tear off) or "gap_fill" (Tear on plus relight's untorn copy 1% behind);
  `placed_maps`: the pixels Fill Behind's placement of soft steps moves (core.fill.snap_soft_steps).
- `render_built(...)`: the built scene through a camera at a given matrix (Cycles, the same pixel
  filter as the truth, emission: the photo's own pixels).
- `disoccluded(...)`: pixels of a moved view whose surface the photo's camera does not see
  because a nearer surface hides it (and, apart, those outside the photo's frame), from the true
  depth of both views.
- `psnr`, `ssim`: over a mask (SSIM: 7x7 Gaussian-weighted windows, constants of Wang et al. 2004
  for a data range of 1).
"""

from __future__ import annotations

import math
import os
import tempfile
from types import SimpleNamespace

import numpy as np

from lotus_blender.core import geometry, maps
from tests import ground_truth, reference_math
from tests.lotus_errors import degrade

# name -> (kind, amount): dolly forward by a fraction of the subject distance, orbit in degrees
# about the subject (around the camera's up axis).
MOVES = {
    "dolly 5%": ("DOLLY", 0.05),
    "dolly 10%": ("DOLLY", 0.10),
    "orbit 3 deg": ("ORBIT", 3.0),
    "orbit 6 deg": ("ORBIT", 6.0),
}
VARIANTS = ("fill", "holes", "rubber", "gap_fill")
BASELINES = ("holes", "rubber", "gap_fill")
WORLD = 0.05
MOVE_RANGE = 0.12   # Move Range of the builds: covers the largest move (orbit 6 deg ~ 0.105 of the distance)


def subject_distance(gt):
    return float(np.median(gt.depth[gt.subject_mask]))


def moved_matrix(matrix_world, kind, amount, distance):
    """Camera-to-world matrix after a dolly (forward along the view axis) or an orbit (about the
    point `distance` ahead, around the camera's up axis)."""
    matrix = np.array(matrix_world, dtype=np.float64)
    forward, up = -matrix[:3, 2], matrix[:3, 1]
    if kind == "DOLLY":
        matrix[:3, 3] += forward * amount * distance
        return matrix
    angle = math.radians(amount)
    k = up / np.linalg.norm(up)
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * skew + (1 - math.cos(angle)) * skew @ skew
    pivot = matrix[:3, 3] + forward * distance
    matrix[:3, :3] = rotation @ matrix[:3, :3]
    matrix[:3, 3] = pivot + rotation @ (matrix[:3, 3] - pivot)
    return matrix


def _emission_only(scene):
    """Every material shows its colour (base colour input or what is linked to it) as emission."""
    _surfaces_as(scene, "ShaderNodeEmission")


def _surfaces_as(scene, node_id):
    """Every mesh material's surface becomes a node_id shader (emission, diffuse) of the colour its
    Principled BSDF had (its base colour, or what is linked to it)."""
    for obj in scene.scene.collection.objects:
        if obj.type != 'MESH':
            continue
        for material in obj.data.materials:
            tree = material.node_tree
            bsdf = tree.nodes.get("Principled BSDF")
            output = next(node for node in tree.nodes if node.bl_idname == "ShaderNodeOutputMaterial")
            shader = tree.nodes.new(node_id)
            colour = bsdf.inputs["Base Color"]
            if colour.is_linked:
                tree.links.new(colour.links[0].from_socket, shader.inputs["Color"])
            else:
                shader.inputs["Color"].default_value = colour.default_value
            tree.links.new(shader.outputs[0], output.inputs["Surface"])


# A shaded photo (the case emission-only scenes miss): diffuse surfaces lit by one sun, a smooth
# Suzanne and a sphere before a checkered wall and floor. Their curved silhouettes meet the
# background at a grazing angle (soft by the depth's own sharpness test even on exact maps) and
# their shading turns gradually from lit to dark toward them: what must never be taken for an edge.
SHADED_SCENES = {
    "shaded": ground_truth.SceneSpec({
        "shaded_sphere": ("SPHERE", (-1.15, 0.45, 0.75), 0.55, (0.75, 0.7, 0.6)),
        "shaded_wall": ("WALL", (0.0, 1.8, 0.0), 12.0, ((0.6, 0.45, 0.3), (0.3, 0.35, 0.45))),
        "shaded_floor": ("PLANE", (0.0, 0.0, 0.0), 12.0, ((0.55, 0.55, 0.5), (0.3, 0.3, 0.28))),
    }, (0.5, -4.2, 1.7), (0.0, 0.4, 0.85), 35.0, ("shaded_sphere", "shaded_head")),
}
SHADED_HEAD = ((0.35, 0.1, 0.9), 0.6, (0.8, 0.35, 0.2), 0.5)   # location, size, colour, turn (radians)
SUN = (3.0, (50.0, 0.0, 35.0))   # strength, rotation (degrees XYZ)


def _shaded(scene):
    """Lambert surfaces (Diffuse BSDF, the base colour or checker kept) lit by one sun, direct
    light only (a hard shadow, no bounces, no light from the world: one sample per pixel is then
    exact, as the emission scenes' are; an ambient term as emission, or a second sun, would be
    sampled at random), and a smooth Suzanne (subdivided). What the sun does not reach is black."""
    import bmesh
    import bpy
    from mathutils import Matrix
    location, size, colour, turn = SHADED_HEAD
    mesh = scene._keep("meshes", bpy.data.meshes.new("shaded_head"))
    bm = bmesh.new()
    bmesh.ops.create_monkey(bm, matrix=Matrix.Diagonal((size, size, size, 1.0)))
    bmesh.ops.subdivide_edges(bm, edges=bm.edges[:], cuts=1, use_grid_fill=True, smooth=1.0)
    bm.to_mesh(mesh)
    bm.free()
    mesh.shade_smooth()
    material = scene._keep("materials", bpy.data.materials.new("shaded_head_material"))
    if material.node_tree is None:
        material.use_nodes = True
    material.node_tree.nodes.get("Principled BSDF").inputs["Base Color"].default_value = (*colour, 1.0)
    mesh.materials.append(material)
    head = scene._keep("objects", bpy.data.objects.new("shaded_head", mesh))
    head.location, head.rotation_euler = location, (0.0, 0.0, turn)
    head.pass_index = len(scene.objects) + 1
    scene.scene.collection.objects.link(head)
    scene.objects["shaded_head"] = head
    _surfaces_as(scene, "ShaderNodeBsdfDiffuse")
    scene.sun.data.energy, scene.sun.data.angle = SUN[0], 0.0
    scene.sun.rotation_euler = tuple(math.radians(a) for a in SUN[1])
    scene.scene.cycles.max_bounces = 0
    world = scene.scene.world
    if hasattr(world, "cycles_visibility"):
        world.cycles_visibility.diffuse = False


def render_truth(name, moves=MOVES, *, resolution=(192, 144)):
    """{"photo": GroundTruth, move name: GroundTruth} of SCENES[name] (emission-only) or of
    SHADED_SCENES[name] (lit, see _shaded)."""
    spec = SHADED_SCENES.get(name) or ground_truth.SCENES[name]
    views = {}
    with ground_truth.GroundTruthScene(f"lotus_fill_{name}", objects=spec.objects,
                                       camera_location=spec.camera_location, camera_target=spec.camera_target,
                                       lens=spec.lens, resolution=resolution, samples=1,
                                       subjects=spec.subjects) as scene:
        if name in SHADED_SCENES:
            _shaded(scene)
        else:
            _emission_only(scene)
        background = scene.scene.world.node_tree.nodes.get("Background") if scene.scene.world.node_tree else None
        if background is not None:
            background.inputs["Color"].default_value = (WORLD, WORLD, WORLD, 1.0)
        views["photo"] = photo = scene.render()
        distance = subject_distance(photo)
        for move, (kind, amount) in moves.items():
            scene.camera.matrix_world = moved_matrix(photo.matrix_world, kind, amount, distance).T.tolist()
            views[move] = scene.render()
    return views


def lotus_maps(gt, severity=0.0, seed=0):
    """(disparity, near, far, Blender camera-space normals) from the truth, degraded to `severity`."""
    normals = gt.camera_normals
    depth = gt.depth.astype(np.float64)
    if severity > 0:
        degraded = degrade(depth, normals, severity, seed)
        depth, normals = degraded.depth, degraded.normals
    near, far = float(depth.min()), float(depth.max())
    disparity, near, far = maps.depth_to_disparity(depth, near, far)
    return disparity, near, far, normals


def placed_maps(gt, lotus, threshold=0.05):
    """(lotus maps with the depth's soft steps placed at the photo's edges, pixels moved): the
    placement core.fill.snap_soft_steps, which Fill Behind makes before it builds its layer (the
    benchmark counts the pixels it moves; on exact maps none)."""
    from lotus_blender.core import fill
    disparity, near, far, normals = lotus
    depth = maps.disparity_to_depth(np.asarray(disparity, np.float32), near, far)
    placed, moved = fill.snap_soft_steps(depth, gt.combined[..., :3], threshold)
    return (fill.depth_to_map_values(placed, "disparity", near, far), near, far, normals), int(moved.sum())


def _float_image(name, values, kind=None):
    import bpy
    values = np.asarray(values, dtype=np.float32)
    height, width = values.shape[:2]
    image = bpy.data.images.new(name, width, height, float_buffer=True, alpha=True)
    image.colorspace_settings.name = 'Non-Color' if kind else 'Linear Rec.709'
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :3] = values[..., None] if values.ndim == 2 else values[..., :3]
    image.pixels.foreach_set(rgba[::-1].ravel())
    if kind:
        image["lotus_kind"] = kind
    return image


class BuiltScene:
    """A bpy scene holding one Build 2.5D Scene result; `remove()` deletes what it made."""

    def __init__(self, addon, gt, variant, lotus, *, move_range=None, tag="v"):
        import bpy
        import sys
        scene25d = sys.modules[f"{addon}.blender.builders.scene25d"]
        relight = sys.modules[f"{addon}.blender.builders.relight"]
        before = {kind: set(getattr(bpy.data, kind).keys()) for kind in _KINDS}
        self._before = before
        self.scene = scene = bpy.data.scenes.new(f"lotus_fill_{tag}_{variant}")
        _render_settings(scene, gt.resolution)
        disparity, near, far, normals = lotus
        photo = _float_image(f"fill_{tag}_{variant}", gt.combined[..., :3])
        depth = _float_image(f"fill_{tag}_{variant}_depth", disparity, "disparity")
        stored = maps.normals_to_normal_map(normals, "OPENGL")
        normal = _float_image(f"fill_{tag}_{variant}_normal", stored, "normal")
        camera_data = bpy.data.cameras.new(f"fill_{tag}_true_camera")
        camera_data.lens, camera_data.sensor_width, camera_data.sensor_fit = gt.lens, gt.sensor_width, gt.sensor_fit
        true_camera = bpy.data.objects.new(f"fill_{tag}_true_camera", camera_data)
        true_camera.matrix_world = gt.matrix_world.T.tolist()
        scene.collection.objects.link(true_camera)
        scene.camera = true_camera
        context = SimpleNamespace(scene=scene, collection=scene.collection, view_layer=scene.view_layers[0])
        tear = 0.0 if variant == "rubber" else scene25d.DEFAULT_TEAR_THRESHOLD
        self.object, self.camera = scene25d.build_photo_scene(
            context, photo, depth, normal, near=near, depth_range=far - near, focal_source="SCENE", refine=False,
            tear_threshold=tear, fill_behind=variant.startswith("fill"), move_range=move_range or MOVE_RANGE)
        if variant == "gap_fill":
            relight.build_gap_fill(context, self.object)
        self.camera.data.clip_start = 0.01

    def render(self, matrix_world):
        """Linear RGB (H, W, 3), top row first, through the built camera moved to matrix_world."""
        import bpy
        self.camera.matrix_world = np.asarray(matrix_world).T.tolist()
        folder = tempfile.mkdtemp(prefix="lotus-fill-")
        path = os.path.join(folder, "view.exr")
        self.scene.render.filepath = path
        bpy.ops.render.render(scene=self.scene.name, write_still=True)
        try:
            return ground_truth.read_image(path)[..., :3].copy()
        finally:
            os.remove(path)
            os.rmdir(folder)

    def remove(self):
        import bpy
        bpy.data.scenes.remove(self.scene)
        for kind in _KINDS:
            collection = getattr(bpy.data, kind)
            for name in set(collection.keys()) - self._before[kind]:
                if kind == "node_groups" and name.startswith("Lotus 2.5D Mesh"):
                    continue
                if name in collection:
                    collection.remove(collection[name])


_KINDS = ("objects", "meshes", "cameras", "materials", "images", "textures", "node_groups", "worlds")


def _render_settings(scene, resolution):
    import bpy
    scene.render.engine = 'CYCLES'
    scene.cycles.device = 'CPU'
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.filter_width = 0.01     # as the truth: each pixel is its centre ray
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.threads_mode = 'FIXED'
    scene.render.threads = 2
    scene.view_settings.view_transform = 'Standard'
    scene.render.image_settings.file_format = 'OPEN_EXR'
    scene.render.image_settings.color_depth = '32'
    world = bpy.data.worlds.new(scene.name + "_world")
    if world.node_tree is None:
        world.use_nodes = True
    background = world.node_tree.nodes.get("Background")
    if background is not None:
        background.inputs["Color"].default_value = (WORLD, WORLD, WORLD, 1.0)
    scene.world = world


def disoccluded(photo, view, tolerance=0.02):
    """(disoccluded, outside): pixels of `view` (a GroundTruth from a moved camera) whose surface
    lies inside the photo's frame but hidden behind a nearer surface (what the move reveals
    behind the near edges), and those outside the photo's frame (no fill makes them up)."""
    width, height = view.resolution
    intr = geometry.intrinsics_from_lens(view.lens, view.sensor_width, width, height, view.sensor_fit)
    world = reference_math.camera_to_world_points(geometry.unproject(view.depth, intr), view.matrix_world)
    in_photo = reference_math.world_to_camera_points(world, photo.matrix_world)
    pixel = reference_math.project(in_photo, intr)
    col, row = np.floor(pixel[..., 0]).astype(int), np.floor(pixel[..., 1]).astype(int)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height) & (-in_photo[..., 2] > 0)
    seen_depth = np.full(view.depth.shape, np.inf)
    seen_depth[inside] = photo.depth[row[inside], col[inside]]
    hidden = -in_photo[..., 2] > seen_depth * (1 + tolerance)
    return inside & hidden, ~inside


def psnr(a, b, mask=None):
    mask = np.ones(a.shape[:2], bool) if mask is None else mask
    if not mask.any():
        return float("nan")
    error = np.mean((np.clip(a, 0, 1)[mask] - np.clip(b, 0, 1)[mask]) ** 2)
    return float(10 * np.log10(1.0 / max(error, 1e-12)))


def _blur(values, sigma=1.5, radius=3):
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, ((radius, radius), (radius, radius)) + ((0, 0),) * (values.ndim - 2), mode='reflect')
    rows = sum(kernel[i] * padded[i:i + values.shape[0]] for i in range(2 * radius + 1))
    return sum(kernel[i] * rows[:, i:i + values.shape[1]] for i in range(2 * radius + 1))


def ssim(a, b, mask=None):
    """Mean SSIM (grey: mean of the channels) over the mask."""
    x, y = np.clip(a, 0, 1).mean(axis=-1), np.clip(b, 0, 1).mean(axis=-1)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = _blur(x), _blur(y)
    vx, vy, cxy = _blur(x * x) - mx * mx, _blur(y * y) - my * my, _blur(x * y) - mx * my
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    mask = np.ones(x.shape, bool) if mask is None else mask
    return float(index[mask].mean()) if mask.any() else float("nan")
