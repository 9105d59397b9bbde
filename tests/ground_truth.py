"""A known scene rendered with Cycles (CPU): the ground truth the scene builders are checked against.

A sphere and a box on a ground plane, a back wall so that every pixel hits a surface, a sun and a
known camera. `render_ground_truth()` builds it in a fresh scene, renders a tiny image with the
Combined, Depth, Normal and Diffuse Color passes, reads them back as float32 numpy arrays
(top row first, like the core) and removes everything it created.

For renders of the same scene under other lights (relighting tests), use `GroundTruthScene`
directly: build it, change what you need, call `render()`, then `remove()` (or use `with`).

Pass facts (checked by tests/test_scene25d_ground_truth.py):
- Depth (Z) is the PLANAR camera depth (distance along the camera's -Z axis), not the length of the
  view ray; the pixel filter is made tiny so each pixel's value is the one at its centre ray.
- Normal is the world-space shading normal (unit length, smooth where the mesh is smooth).

`SCENES` holds scenes of different content for the tests on model-like maps (tests/lotus_errors.py):
"objects" (the default above), "room" (furniture in a room with tiled floor and walls), "table"
(objects on a table in front of a wall), "outdoor" (buildings on open ground before a far
background), "closeup" (one wall filling most of the frame, a small object in front) and "interior"
(plain walls, a faint parquet, furniture, a door and a picture: the few straight edges of a real room).
`render_scene(name)` renders one of them; `GroundTruth.subject_mask` marks its foreground objects.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from tests import compositor_passes

RESOLUTION = (160, 120)
SAMPLES = 8
CAMERA_LOCATION = (0.0, -6.0, 2.2)
CAMERA_TARGET = (0.0, 0.4, 0.7)
CAMERA_LENS_MM = 35.0
CAMERA_SENSOR_MM = 36.0

# Object name -> (kind, location, size, base colour). Sizes: sphere radius, box edge, plane/wall size.
OBJECTS = {
    "gt_sphere": ("SPHERE", (-0.9, 0.3, 0.8), 0.8, (0.8, 0.2, 0.15)),
    "gt_box": ("BOX", (1.0, 0.9, 0.6), 1.2, (0.15, 0.4, 0.8)),  # turned 30 degrees about Z
    "gt_ground": ("PLANE", (0.0, 3.0, 0.0), 24.0, (0.6, 0.6, 0.55)),
    "gt_wall": ("WALL", (0.0, 6.0, 0.0), 24.0, (0.5, 0.55, 0.6)),
}
SUBJECT_NAMES = ("gt_sphere", "gt_box")

# Colours of the tiled (checker) surfaces: straight edges across the frame, as man-made scenes have.
_TILE_LIGHT, _TILE_DARK = (0.7, 0.68, 0.62), (0.35, 0.33, 0.3)


@dataclass(frozen=True)
class SceneSpec:
    """One ground-truth scene: objects as in OBJECTS (a colour may be a pair of colours: a checker
    of `tile` metres), the camera, and which objects are the foreground subjects."""
    objects: dict
    camera_location: tuple
    camera_target: tuple
    lens: float
    subjects: tuple


SCENES = {
    "objects": SceneSpec(OBJECTS, CAMERA_LOCATION, CAMERA_TARGET, CAMERA_LENS_MM, SUBJECT_NAMES),
    "room": SceneSpec({
        "room_cabinet": ("BOX", (-1.9, 2.2, 0.6), 1.2, (0.45, 0.3, 0.2), (0, 0, 0), (0.8, 0.6, 1.0)),
        "room_table": ("BOX", (0.8, 0.8, 0.4), 1.0, (0.55, 0.45, 0.35), (0, 0, 0), (1.2, 0.8, 0.8)),
        "room_ball": ("SPHERE", (0.6, 0.7, 1.15), 0.35, (0.8, 0.2, 0.15)),
        "room_floor": ("PLANE", (0.0, 0.0, 0.0), 12.0, (_TILE_LIGHT, _TILE_DARK)),
        "room_back": ("WALL", (0.0, 3.0, 0.0), 12.0, ((0.75, 0.75, 0.72), (0.55, 0.56, 0.6))),
        "room_left": ("WALL", (-2.8, 0.0, 0.0), 12.0, ((0.7, 0.72, 0.75), (0.5, 0.52, 0.58)), (0, 0, 90)),
        "room_right": ("WALL", (3.2, 0.0, 0.0), 12.0, ((0.7, 0.72, 0.75), (0.5, 0.52, 0.58)), (0, 0, 90)),
    }, (1.2, -3.6, 1.6), (-0.4, 1.8, 0.8), 24.0, ("room_cabinet", "room_table", "room_ball")),
    "table": SceneSpec({
        "table_top": ("BOX", (0.0, 0.4, 0.7), 1.0, (0.5, 0.35, 0.22), (0, 0, 0), (1.8, 1.0, 0.08)),
        "table_cup": ("BOX", (-0.35, 0.3, 0.86), 0.24, (0.2, 0.4, 0.75), (0, 0, 25), None),
        "table_ball": ("SPHERE", (0.35, 0.45, 0.94), 0.2, (0.85, 0.6, 0.1)),
        "table_wall": ("WALL", (0.0, 1.3, 0.0), 10.0, ((0.72, 0.7, 0.66), (0.5, 0.48, 0.45))),
        "table_floor": ("PLANE", (0.0, 0.0, 0.0), 10.0, (_TILE_LIGHT, _TILE_DARK)),
    }, (0.5, -1.7, 1.45), (0.0, 0.5, 0.8), 35.0, ("table_top", "table_cup", "table_ball")),
    "outdoor": SceneSpec({
        "outdoor_house": ("BOX", (-3.0, 10.0, 2.0), 1.0, (0.7, 0.55, 0.45), (0, 0, 15), (3.0, 3.0, 4.0)),
        "outdoor_tower": ("BOX", (4.0, 18.0, 4.0), 1.0, (0.55, 0.58, 0.65), (0, 0, -10), (2.5, 2.5, 8.0)),
        "outdoor_tree": ("SPHERE", (1.0, 6.0, 1.2), 1.2, (0.2, 0.45, 0.15)),
        "outdoor_ground": ("PLANE", (0.0, 30.0, 0.0), 120.0, ((0.35, 0.42, 0.25), (0.3, 0.36, 0.22))),
        "outdoor_far": ("WALL", (0.0, 70.0, 0.0), 200.0, (0.55, 0.62, 0.75)),
    }, (0.0, -4.0, 1.7), (0.3, 12.0, 2.2), 35.0, ("outdoor_house", "outdoor_tower", "outdoor_tree")),
    "closeup": SceneSpec({
        "closeup_wall": ("WALL", (0.0, 1.0, 0.0), 6.0, ((0.7, 0.66, 0.6), (0.55, 0.5, 0.45)), (0, 0, 12)),
        "closeup_ball": ("SPHERE", (0.25, 0.35, 0.95), 0.12, (0.8, 0.2, 0.15)),
    }, (0.0, -0.9, 1.15), (0.15, 1.0, 1.0), 50.0, ("closeup_ball",)),
    # A lived-in room: plain walls, a low-contrast parquet, furniture (a coffee table turned 20
    # degrees), a door and a picture: few straight edges, not all of them square to each other.
    "interior": SceneSpec({
        "interior_sofa": ("BOX", (-1.2, 3.45, 0.4), 1.0, (0.3, 0.35, 0.5), (0, 0, 0), (2.0, 0.9, 0.8)),
        "interior_shelf": ("BOX", (3.2, 2.0, 1.0), 1.0, (0.45, 0.3, 0.2), (0, 0, 0), (0.5, 1.2, 2.0)),
        "interior_table": ("BOX", (0.3, 1.4, 0.25), 1.0, (0.3, 0.2, 0.14), (0, 0, 20), (1.0, 0.6, 0.5)),
        "interior_door": ("BOX", (-2.97, 1.2, 1.0), 1.0, (0.25, 0.2, 0.18), (0, 0, 0), (0.06, 0.9, 2.0)),
        "interior_picture": ("BOX", (0.8, 3.97, 1.6), 1.0, (0.15, 0.2, 0.3), (0, 0, 0), (0.9, 0.04, 0.6)),
        "interior_floor": ("PLANE", (0.0, 0.0, 0.0), 12.0, ((0.55, 0.42, 0.3), (0.5, 0.38, 0.27))),
        "interior_back": ("WALL", (0.0, 4.0, 0.0), 12.0, (0.82, 0.8, 0.75)),
        "interior_left": ("WALL", (-3.0, 0.0, 0.0), 12.0, (0.78, 0.8, 0.8), (0, 0, 90)),
        "interior_right": ("WALL", (3.5, 0.0, 0.0), 12.0, (0.8, 0.78, 0.74), (0, 0, 90)),
    }, (0.8, -3.5, 1.5), (-0.3, 2.5, 0.9), 28.0, ("interior_sofa", "interior_shelf", "interior_table")),
}

PASS_SOCKETS = {"combined": "Image", "depth": "Depth", "normal": "Normal", "diffuse_color": "Diffuse Color"}


@dataclass
class GroundTruth:
    """What one render produced. Arrays are float32, top row first, shape (H, W[, C])."""
    combined: np.ndarray          # (H, W, 4) linear scene-referred RGBA
    depth: np.ndarray             # (H, W) Cycles Depth pass: planar camera Z distance
    normal: np.ndarray            # (H, W, 3) world-space normals
    diffuse_color: np.ndarray     # (H, W, 3)
    matrix_world: np.ndarray      # (4, 4) camera to world
    lens: float                   # mm
    sensor_width: float           # mm
    sensor_fit: str
    resolution: tuple             # (width, height) in pixels
    object_names: dict = field(default_factory=dict)   # role -> object name
    object_index: np.ndarray | None = None              # (H, W) int: 0 background, i+1 = objects order
    subject_indices: tuple = ()                          # object_index values of the subjects

    @property
    def subject_mask(self) -> np.ndarray:
        """Pixels showing the scene's foreground subjects (the sphere or the box by default)."""
        return np.isin(self.object_index, self.subject_indices)

    @property
    def camera_normals(self) -> np.ndarray:
        """The Normal pass in camera space (Blender convention: +X right, +Y up, +Z toward the
        camera), turned to face the camera as Lotus predicts them (a plane's pass normal may face
        away: Cycles does not flip it)."""
        normals = self.normal @ self.matrix_world[:3, :3]
        width, height = self.resolution
        focal = self.lens / self.sensor_width * max(width, height)  # sensor fit AUTO
        x = (np.arange(width) + 0.5 - width / 2) / focal
        y = (height / 2 - np.arange(height) - 0.5) / focal
        rays = np.stack(np.broadcast_arrays(x[None, :], y[:, None], -np.ones((height, width))), axis=-1)
        away = np.sum(normals * rays, axis=-1) > 0
        normals[away] *= -1
        return normals


def _look_at_matrix(location, target):
    """Camera-to-world rotation so the camera (looking down its -Z, +Y up) looks at target."""
    from mathutils import Vector
    direction = Vector(target) - Vector(location)
    return direction.to_track_quat('-Z', 'Y').to_matrix()


def read_image(path) -> np.ndarray:
    """An image file's RGBA pixels through Blender (float32, top row first)."""
    import bpy
    image = bpy.data.images.load(path, check_existing=False)
    try:
        width, height = image.size
        buffer = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(buffer)
    finally:
        bpy.data.images.remove(image)
    return buffer.reshape(height, width, 4)[::-1].copy()


class GroundTruthScene:
    """Builds the known scene in a new bpy scene and removes every datablock it made."""

    def __init__(self, name: str = "lotus_ground_truth", *, objects=None, camera_location=CAMERA_LOCATION,
                 camera_target=CAMERA_TARGET, lens=CAMERA_LENS_MM, resolution=RESOLUTION, samples=SAMPLES,
                 subjects=SUBJECT_NAMES):
        """objects: name -> (kind, location, size, colour[, rotation in degrees XYZ[, scale XYZ]])
        like OBJECTS (the default); the object index pass numbers them from 1 in this order. A
        colour may be a pair of colours: a checker of 0.5 m tiles."""
        import bpy
        self._made = []  # (collection name in bpy.data, datablock)
        self.scene = bpy.data.scenes.new(name)
        self._made.append(("scenes", self.scene))
        self._setup_render()
        self.scene.render.resolution_x, self.scene.render.resolution_y = resolution
        self.scene.cycles.samples = samples
        self._setup_world()
        self.camera = self._add_camera(camera_location, camera_target, lens)
        self.objects = {}
        self.subjects = tuple(subjects)
        for index, (obj_name, spec) in enumerate((OBJECTS if objects is None else objects).items()):
            self.objects[obj_name] = self._add_object(obj_name, index + 1, *spec)
        self.sun = self._add_sun()
        self._directory = tempfile.mkdtemp(prefix="lotus-gt-")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def _keep(self, collection, datablock):
        self._made.append((collection, datablock))
        return datablock

    def _setup_render(self):
        scene = self.scene
        scene.render.engine = 'CYCLES'
        scene.cycles.device = 'CPU'
        scene.cycles.samples = SAMPLES
        scene.cycles.use_denoising = False
        scene.cycles.use_adaptive_sampling = False
        scene.cycles.max_bounces = 4
        # A tiny filter: each pixel's depth/normal is the surface at its centre ray, which is what
        # an unprojection at pixel centres must reproduce.
        scene.cycles.filter_width = 0.01
        scene.cycles.seed = 1
        scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
        scene.render.resolution_percentage = 100
        scene.render.threads_mode = 'FIXED'
        scene.render.threads = 2
        scene.view_settings.view_transform = 'Standard'
        layer = scene.view_layers[0]
        layer.use_pass_z = True
        layer.use_pass_normal = True
        layer.use_pass_diffuse_color = True
        layer.use_pass_object_index = True

    def _setup_world(self):
        import bpy
        world = self._keep("worlds", bpy.data.worlds.new(self.scene.name + "_world"))
        if world.node_tree is None:  # Blender 5.0 gives new worlds nodes already
            world.use_nodes = True
        background = world.node_tree.nodes.get("Background")
        if background is not None:
            background.inputs["Color"].default_value = (0.05, 0.05, 0.06, 1.0)
            background.inputs["Strength"].default_value = 1.0
        else:
            world.color = (0.05, 0.05, 0.06)
        self.scene.world = world

    def _add_camera(self, location, target, lens):
        import bpy
        data = self._keep("cameras", bpy.data.cameras.new("gt_camera"))
        data.lens = lens
        data.sensor_width = CAMERA_SENSOR_MM
        data.sensor_fit = 'AUTO'
        data.clip_start = 0.1
        data.clip_end = 100.0
        obj = self._keep("objects", bpy.data.objects.new("gt_camera", data))
        obj.location = location
        obj.rotation_euler = _look_at_matrix(location, target).to_euler()
        self.scene.collection.objects.link(obj)
        self.scene.camera = obj
        return obj

    def _add_sun(self):
        import bpy
        data = self._keep("lights", bpy.data.lights.new("gt_sun", 'SUN'))
        data.energy = 3.0
        data.angle = math.radians(2.0)
        obj = self._keep("objects", bpy.data.objects.new("gt_sun", data))
        obj.rotation_euler = (math.radians(40), math.radians(-25), math.radians(30))
        self.scene.collection.objects.link(obj)
        return obj

    def _add_object(self, name, pass_index, kind, location, size, colour, rotation=None, scale=None):
        import bmesh
        import bpy
        from mathutils import Matrix
        mesh = self._keep("meshes", bpy.data.meshes.new(name))
        bm = bmesh.new()
        if kind == "SPHERE":
            bmesh.ops.create_uvsphere(bm, u_segments=64, v_segments=32, radius=size)
        elif kind == "BOX":
            bmesh.ops.create_cube(bm, size=size)
        elif kind == "PLANE":
            bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=size / 2)
        elif kind == "WALL":
            bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=size / 2,
                                  matrix=Matrix.Rotation(math.radians(90), 4, 'X'))
        bm.to_mesh(mesh)
        bm.free()
        mesh.shade_smooth() if kind == "SPHERE" else mesh.shade_flat()
        material = self._keep("materials", bpy.data.materials.new(name + "_material"))
        if material.node_tree is None:
            material.use_nodes = True
        bsdf = material.node_tree.nodes.get("Principled BSDF")
        bsdf.inputs["Roughness"].default_value = 0.8
        if isinstance(colour[0], (tuple, list)):  # a checker of 0.5 m tiles in object space
            nodes, links = material.node_tree.nodes, material.node_tree.links
            coordinates = nodes.new("ShaderNodeTexCoord")
            checker = nodes.new("ShaderNodeTexChecker")
            checker.inputs["Color1"].default_value = (*colour[0], 1.0)
            checker.inputs["Color2"].default_value = (*colour[1], 1.0)
            checker.inputs["Scale"].default_value = 2.0  # cells of 1 / Scale object units
            links.new(coordinates.outputs["Object"], checker.inputs["Vector"])
            links.new(checker.outputs["Color"], bsdf.inputs["Base Color"])
            colour = colour[0]
        else:
            bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
        material.diffuse_color = (*colour, 1.0)
        mesh.materials.append(material)
        obj = self._keep("objects", bpy.data.objects.new(name, mesh))
        obj.location = location
        if rotation is not None:
            obj.rotation_euler = tuple(math.radians(angle) for angle in rotation)
        elif kind == "BOX":
            obj.rotation_euler = (0.0, 0.0, math.radians(30.0))
        if scale is not None:
            obj.scale = scale
        obj.pass_index = pass_index
        self.scene.collection.objects.link(obj)
        return obj

    def render(self) -> GroundTruth:
        """Render the passes with Cycles and read them back as numpy arrays, top row first."""
        scene = self.scene
        sockets = dict(PASS_SOCKETS, object_index="Object Index")
        scene.render.filepath = os.path.join(self._directory, "combined_unused")
        paths, owned = compositor_passes.render_passes(
            scene, self._directory,
            {socket: 'FLOAT' if socket in ("Depth", "Object Index") else 'RGBA'
             for socket in sockets.values()}, exr_codec='ZIP')
        if owned is not None:
            self._keep("node_groups", owned)
        scene.view_layers[0].update()  # matrix_world of objects in a scene no window shows
        planes = {key: read_image(paths[socket]) for key, socket in sockets.items()}
        cam = self.camera
        return GroundTruth(
            combined=planes["combined"],
            depth=planes["depth"][..., 0].copy(),
            normal=planes["normal"][..., :3].copy(),
            diffuse_color=planes["diffuse_color"][..., :3].copy(),
            matrix_world=np.array(cam.matrix_world, dtype=np.float64),
            lens=float(cam.data.lens),
            sensor_width=float(cam.data.sensor_width),
            sensor_fit=cam.data.sensor_fit,
            resolution=(scene.render.resolution_x, scene.render.resolution_y),
            object_names={"sphere": "gt_sphere", "box": "gt_box", "ground": "gt_ground",
                          "wall": "gt_wall", "camera": cam.name, "sun": self.sun.name},
            object_index=np.rint(planes["object_index"][..., 0]).astype(np.int32),
            subject_indices=tuple(self.objects[name].pass_index for name in self.subjects
                                  if name in self.objects),
        )

    def remove(self):
        """Delete every datablock this scene created and its temporary render folder."""
        import bpy
        for collection, datablock in reversed(self._made):
            try:
                getattr(bpy.data, collection).remove(datablock)
            except ReferenceError:
                pass  # already removed together with its owner
        self._made.clear()
        shutil.rmtree(self._directory, ignore_errors=True)


def render_ground_truth() -> GroundTruth:
    """Build, render and remove the known scene; returns the passes and the camera."""
    with GroundTruthScene() as scene:
        return scene.render()


def render_scene(name: str, *, lens: float | None = None, resolution=RESOLUTION,
                 samples: int = SAMPLES) -> GroundTruth:
    """Build, render and remove one of SCENES (optionally through another lens); returns the
    passes and the camera."""
    spec = SCENES[name]
    with GroundTruthScene(f"lotus_gt_{name}", objects=spec.objects, camera_location=spec.camera_location,
                          camera_target=spec.camera_target, lens=spec.lens if lens is None else lens,
                          resolution=resolution, samples=samples, subjects=spec.subjects) as scene:
        return scene.render()
