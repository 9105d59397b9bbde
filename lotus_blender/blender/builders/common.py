"""What every builder shares: pixels in and out of Blender images, finding a photo's Lotus results,
the photo picker's rule, the matching camera and the UV map the photo is mapped through.

Blender images are bottom-row-first RGBA; the core works top-row-first, so every read and write of
pixels goes through read_pixels / write_float_image.
"""

import math

import bpy
import numpy as np
from mathutils import Matrix

from ...core import geometry, maps
from .. import naming
from ..inputs import frames as input_frames

UV_MAP_NAME = "UVMap"  # the photo's UVs on every mesh a builder makes (and in geonodes' group)
# Camera looking along +Y from the origin: used when the scene has no camera to copy.
DEFAULT_CAMERA_MATRIX = Matrix.Rotation(math.radians(90.0), 4, 'X')
CAMERA_CLIP_START = 0.01  # metres: 2.5D meshes may come close to the camera
# The name a result of each kind gets after the photo's stem ("<stem>_depth"), for finding maps
# whose tags were lost or that were made outside Lotus.
RESULT_SUFFIXES = {"disparity": "depth", "depth": "depth", "normal": "normal"}
DEPTH_KINDS = ("disparity", "depth")


# ---------------------------------------------------------------------------------------------
# Pixels.

def read_pixels(image) -> np.ndarray:
    """RGBA float32 (H, W, 4), top row first."""
    width, height = image.size
    buffer = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(buffer)
    return buffer.reshape(height, width, 4)[::-1]


def camera_normals(normal_image, shape=None) -> np.ndarray:
    """Unit Blender camera-space normals (H, W, 3), top row first, of a Lotus normal image (rgb =
    0.5 n + 0.5), resampled (nearest pixel centre) to shape (H, W) when given and different."""
    normals = maps.normal_map_to_normals(read_pixels(normal_image)[..., :3], "OPENGL")
    height, width = normals.shape[:2]
    if shape is not None and (height, width) != tuple(shape):
        rows = geometry.grid_pixel_indices(shape[0], height)
        cols = geometry.grid_pixel_indices(shape[1], width)
        normals = normals[rows][:, cols]
    return normals


def made_by_lotus(image) -> bool:
    """An image the add-on made (any kind) in this file, which it may reuse or overwrite."""
    return "lotus_kind" in image and image.library is None


def write_float_image(name, values, *, non_color=True):
    """Store (H, W) grey or (H, W, 3|4) values in a float image called name: our earlier image of
    that name is reused; a name the artist's own image holds gets one suffix (naming)."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=2)
    height, width = values.shape[:2]
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :values.shape[2]] = values[..., :4]
    name, image = naming.claim_image(name, made_by_lotus)
    if image is not None and not image.is_float:
        bpy.data.images.remove(image)
        image = None
    if image is not None and tuple(image.size) != (width, height):
        image.scale(width, height)
    if image is None:
        image = bpy.data.images.new(name, width, height, alpha=False, float_buffer=True)
    image.colorspace_settings.name = 'Non-Color' if non_color else 'Linear Rec.709'
    image.pixels.foreach_set(rgba[::-1].ravel())
    image.update()
    return image


# ---------------------------------------------------------------------------------------------
# A photo's results (blender.outputs tags them with "lotus_kind" and "lotus_source").

def is_photo(_owner, image) -> bool:
    """The photo pickers' poll: images that are not Lotus results (or other maps it made)."""
    return image.get("lotus_kind") is None and image.type == 'IMAGE'


def photo_stem(photo) -> str:
    """What the builders name a photo's objects and images after: its stem ("photo.jpg" ->
    "photo"), for an image sequence or movie the name its results carry ("clip_0001.png" ->
    "clip", as inputs.frames names them)."""
    if photo.source in ('SEQUENCE', 'MOVIE') and photo.filepath:
        return input_frames.results_name(photo)
    return naming.stem(photo.name)


def find_result(photo, kinds):
    """The photo's result of one of kinds ("disparity", "depth", "normal"), first kind first: the
    newest image tagged as made from it, else an image named after its stem ("<stem>_depth",
    "<stem>_normal") that no tag says is something else; None when there is none."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    images = bpy.data.images
    for kind in kinds:
        for image in reversed(images):
            if image.get("lotus_source") == photo.name and image.get("lotus_kind") == kind:
                return image
    stem = naming.short_stem(photo_stem(photo))  # as blender.outputs names results
    for suffix in dict.fromkeys(RESULT_SUFFIXES[kind] for kind in kinds):
        image = images.get(f"{stem}_{suffix}")
        if image is not None and image != photo and image.get("lotus_kind", kinds[0]) in kinds:
            return image
    return None


# ---------------------------------------------------------------------------------------------
# Objects.

def new_camera(context, name, width, height, lens, sensor):
    """A camera ('AUTO' sensor fit) where the scene camera is (else DEFAULT_CAMERA_MATRIX), made
    the scene camera, the render set to the photo's size with square pixels."""
    data = bpy.data.cameras.new(name)
    data.lens, data.sensor_width, data.sensor_fit = lens, sensor, 'AUTO'
    data.clip_start = CAMERA_CLIP_START
    camera = bpy.data.objects.new(name, data)
    scene = context.scene
    camera.matrix_world = scene.camera.matrix_world.copy() if scene.camera is not None else DEFAULT_CAMERA_MATRIX
    context.collection.objects.link(camera)
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    return camera


def image_quad(name, corners):
    """A one-face mesh through four corners (bottom-left, bottom-right, top-right, top-left) with
    the UV map UV_MAP_NAME covering the whole image."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([tuple(corner) for corner in corners], [], [(0, 1, 2, 3)])
    uv_layer = mesh.uv_layers.new(name=UV_MAP_NAME)
    uv_layer.data.foreach_set("uv", np.array([0, 0, 1, 0, 1, 1, 0, 1], dtype=np.float32))
    return mesh


def assign_material(obj, material):
    """Make material the object's first material slot (replacing what was there)."""
    if obj.data.materials:
        obj.data.materials[0] = material
    else:
        obj.data.materials.append(material)
