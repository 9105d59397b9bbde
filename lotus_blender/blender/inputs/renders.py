"""Inputs without pixel access: Blender renders or saves them first, then they are read as files.

The Render Result and the compositor's Viewer node are saved with the scene's view transform (what
the artist sees); a pass of a multilayer EXR is extracted by Blender's own compositor. Movie frames
(frames.py) go through the same throwaway scene.
"""

from __future__ import annotations

import math
import os
import struct

import bpy

from ...core import geometry, image_files
from .. import compat, naming
from .images import InputError, PreparedInput, image_file_path, prepare_image

RENDER_LIKE_TYPES = ('RENDER_RESULT', 'COMPOSITING')


def camera_focal_35mm(scene: bpy.types.Scene) -> float:
    """35 mm-equivalent focal length (diagonal, as EXIF's FocalLengthIn35mmFilm, the convention of
    core.geometry.lens_from_35mm) of the scene camera; 0 when it is not a perspective camera."""
    camera = scene.camera
    if camera is None or camera.type != 'CAMERA' or camera.data.type != 'PERSP':
        return 0.0
    data = camera.data
    scale = scene.render.resolution_percentage / 100.0
    width = max(1, int(scene.render.resolution_x * scale))
    height = max(1, int(scene.render.resolution_y * scale))
    sensor = data.sensor_height if data.sensor_fit == 'VERTICAL' else data.sensor_width
    intrinsics = geometry.intrinsics_from_lens(data.lens, sensor, width, height, data.sensor_fit)
    return float(geometry.FULL_FRAME_DIAGONAL_MM * intrinsics.focal_px / math.hypot(width, height))


class TemporaryScene:
    """A throwaway scene for Blender's own image writing / compositing / sequencer rendering."""

    def __init__(self, name: str):
        self.name = name
        self.scene = None
        self.node_group = None

    def __enter__(self):
        self.scene = bpy.data.scenes.new(self.name)
        self.scene.render.resolution_percentage = 100
        return self.scene

    def __exit__(self, *exc):
        if self.scene is not None:
            bpy.data.scenes.remove(self.scene)
        if self.node_group is not None:
            bpy.data.node_groups.remove(self.node_group)
        return False


def render_scene(scene: bpy.types.Scene) -> None:
    """Render ``scene`` at its own current frame into the Render Result.

    ``bpy.ops.render.render(scene=NAME)`` first copies the context scene's current frame into the
    scene it is given (render_internal.cc, screen_render_single_layer_set; 4.2 to 5.3), so a
    throwaway scene rendered that way always shows the artist's frame, not its own: a movie gave
    its first frame for every frame. Made the context's scene, it keeps its own frame."""
    with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
        bpy.ops.render.render()


def prepare_temporary_copy(path: str, job_dir: str, processing_resolution: int, index: int,
                    name: str, source_image: str, focal_35mm: float = 0.0,
                    frame: int | None = None, source_path: str = "") -> PreparedInput:
    """Prepare a file Blender has just written into job_dir for source_image, then delete it."""
    if not os.path.isfile(path) or (path.endswith(".exr") and
                                    image_files.exr_complete(path) is False):
        # Blender could not write it whole (a full disk): never let it read a cut EXR.
        raise InputError(f"Cannot write a temporary copy of '{source_image}' into {job_dir}")
    temporary = bpy.data.images.load(path, check_existing=False)
    try:
        prepared = prepare_image(temporary, job_dir, processing_resolution, index, name=name,
                                 source_path=source_path)
    finally:
        bpy.data.images.remove(temporary)
    os.remove(path)
    prepared.source_image = source_image
    prepared.focal_35mm = focal_35mm
    prepared.frame = frame
    return prepared


def prepare_render_like(image: bpy.types.Image, scene: bpy.types.Scene, job_dir: str,
                        processing_resolution: int, index: int) -> PreparedInput:
    """Render Result or Viewer Node: saved with the scene's view transform (what the artist
    sees). Blender reads the render from the scene given to save_render, so the scene's own
    image settings are borrowed for the moment and restored."""
    path = os.path.join(job_dir, f"{index:04d}_render.png")
    settings = scene.render.image_settings
    saved = compat.image_format_state(settings)
    try:
        compat.set_image_format(settings, 'PNG', 'RGB', '16')
        image.save_render(path, scene=scene)
    except RuntimeError:
        raise InputError(f"'{image.name}' is empty: render (or run the compositor) "
                         f"first") from None
    finally:
        compat.restore_image_format(settings, saved)
    name = f"{scene.name}_render" if image.type == 'RENDER_RESULT' else "viewer"
    return prepare_temporary_copy(path, job_dir, processing_resolution, index, name,
                           image.name, focal_35mm=camera_focal_35mm(scene))


def exr_header(path: str) -> tuple[tuple[int, int], list[str]]:
    """(width, height) and channel names from an OpenEXR header (core.image_files; Blender
    reports a multilayer file as 0x0 and has no Python access to its layers)."""
    name = os.path.basename(path)
    try:
        size, channels = image_files.exr_header(path)
    except ValueError:
        raise InputError(f"{name} is not an OpenEXR file") from None
    except (EOFError, struct.error):
        size, channels = None, []
    if size is None:
        raise InputError(f"{name} has no data window")
    return size, channels


def multilayer_passes(image: bpy.types.Image) -> list[tuple[str, str]]:
    """(layer, pass) pairs of a multilayer EXR from its channel names (Layer.Pass.Channel)."""
    _, channels = exr_header(image_file_path(image))
    pairs = []
    for channel in channels:
        parts = channel.split(".")
        if len(parts) >= 3 and (parts[0], parts[-2]) not in pairs:
            pairs.append((parts[0], parts[-2]))
    return pairs


def _compositor_for(guard: TemporaryScene, scene: bpy.types.Scene):
    """An Image node and the socket that becomes the render (compat.new_compositor)."""
    group, owned, output_socket = compat.new_compositor(scene, "lotus_extract_pass")
    guard.node_group = owned
    return group.nodes.new("CompositorNodeImage"), output_socket


def prepare_multilayer_pass(image: bpy.types.Image, layer: str, pass_name: str, job_dir: str,
                            processing_resolution: int, index: int) -> PreparedInput:
    """One pass of a multilayer EXR, extracted by Blender's compositor into a plain EXR."""
    source_path = image_file_path(image)
    if not source_path or not os.path.isfile(source_path):
        raise InputError(f"'{image.name}': the multilayer EXR file is not on disk")
    (width, height), _ = exr_header(source_path)
    available = multilayer_passes(image)
    if (layer, pass_name) not in available:
        choices = ", ".join(f"{l}/{p}" if l else p for l, p in available)
        raise InputError(f"'{image.name}' has no pass {layer}/{pass_name} (it has: {choices})")
    path = os.path.join(job_dir, f"{index:04d}_pass.exr")
    guard = TemporaryScene("lotus_extract_pass")
    with guard as temporary:
        temporary.render.resolution_x, temporary.render.resolution_y = width, height
        node, output_socket = _compositor_for(guard, temporary)
        node.image = image
        if layer:
            node.layer = layer
        if pass_name not in node.outputs:
            raise InputError(f"'{image.name}': Blender cannot read the pass {pass_name}")
        node.id_data.links.new(node.outputs[pass_name], output_socket)
        # No Render Layers node: Blender runs only the compositor, nothing is rendered.
        render_scene(temporary)
        settings = temporary.render.image_settings
        settings.file_format = 'OPEN_EXR'
        settings.color_depth = '32'
        settings.color_mode = 'RGB'
        bpy.data.images["Render Result"].save_render(path, scene=temporary)
    name = f"{naming.stem(image.name)}_{pass_name}"
    return prepare_temporary_copy(path, job_dir, processing_resolution, index, name, image.name,
                           source_path=source_path)


