"""Helpers for the Blender-side tests (tests/test_blender_*.py): live modules, preferences set to
the tiny local checkpoints, small images, a report collector."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np

from tests.blender_env import worker_python_preference

# Small and quick: the tiny checkpoints at a 64 px processing resolution.
PROCESSING_RESOLUTION = 64


def live(module_name: str) -> SimpleNamespace:
    """The enabled extension's Blender-side modules (fresh after a disable/enable cycle)."""
    import importlib
    base = f"{module_name}.blender"
    names = ("job_queue", "job_runner", "job_folders", "models", "worker_session", "operators", "inputs", "outputs",
             "worker_client", "preferences", "panels")
    return SimpleNamespace(**{n: importlib.import_module(f"{base}.{n}") for n in names},
                           package=sys.modules[module_name])


def configure(module_name: str, checkpoints: dict, output_dir: str | None, **overrides):
    """The add-on's preferences for tests: the tiny checkpoints, 64 px, CPU, the tests' worker
    Python; output_dir None keeps the output folder preference as it is."""
    import bpy
    prefs = bpy.context.preferences.addons[module_name].preferences
    prefs.depth_model = 'LOCAL'
    prefs.depth_model_path = str(checkpoints[("G", "disparity")])
    prefs.depth_model_kind = 'DISPARITY'
    prefs.normal_model = 'LOCAL'
    prefs.normal_model_path = str(checkpoints[("G", "normal")])
    prefs.processing_resolution = PROCESSING_RESOLUTION
    prefs.device = 'CPU'
    prefs.precision = 'FP32'
    prefs.python_path = worker_python_preference()
    prefs.idle_release_minutes = 10.0
    if output_dir is not None:
        prefs.output_dir = str(output_dir)
    prefs.normal_convention = 'OPENGL'
    for key, value in overrides.items():
        setattr(prefs, key, value)
    return prefs


class Reports(list):
    """Collects operator-style reports: report({'ERROR'}, "text")."""

    def __call__(self, level, text):
        self.append((next(iter(level)), text))

    def texts(self, level=None):
        return [text for lvl, text in self if level is None or lvl == level]


def new_image(name: str, pixels_top_first: np.ndarray, float_buffer=False, is_data=False):
    """A generated Blender image with the given RGBA pixels (top row first)."""
    import bpy
    height, width = pixels_top_first.shape[:2]
    old = bpy.data.images.get(name)
    if old is not None:
        bpy.data.images.remove(old)
    image = bpy.data.images.new(name, width, height, alpha=True, float_buffer=float_buffer,
                                is_data=is_data)
    image.pixels.foreach_set(np.ascontiguousarray(pixels_top_first[::-1], np.float32).ravel())
    return image


def image_pixels(image) -> np.ndarray:
    """RGBA pixels of a Blender image, top row first."""
    width, height = image.size[0], image.size[1]
    buffer = np.empty(width * height * image.channels, np.float32)
    image.pixels.foreach_get(buffer)
    return buffer.reshape(height, width, image.channels)[::-1]


def gradient(width=32, height=24) -> np.ndarray:
    """An RGBA test picture with structure in every channel."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., 0] = x / max(1, width - 1)
    rgba[..., 1] = y / max(1, height - 1)
    rgba[..., 2] = 0.5 + 0.5 * np.sin(x / 3.0) * np.cos(y / 4.0)
    return rgba


def drive(runner, on_step=None, limit_s=120.0) -> set:
    """Feed TIMER events to a JobRunner the way the modal operator does, until it ends."""
    started = time.monotonic()
    while True:
        result = runner.handle('TIMER')
        if on_step is not None:
            on_step(runner)
        if 'RUNNING_MODAL' not in result:
            return result
        if time.monotonic() - started > limit_s:
            raise RuntimeError("job did not end")
        time.sleep(0.02)


def remove_images(prefix: str) -> None:
    import bpy
    for image in [i for i in bpy.data.images if i.name.startswith(prefix)]:
        bpy.data.images.remove(image)


def moving_frames(count: int, width=48, height=32) -> list:
    """``count`` RGB pictures (top row first, values in [0, 1]) that really differ: a white bar
    moving 6 px a frame over a dark gradient, a frame's grey level rising with its number."""
    frames = []
    for frame in range(count):
        picture = np.repeat(gradient(width, height)[..., :1] * 0.3, 3, axis=2)
        picture += 0.4 * frame / max(1, count - 1)
        left = (frame * 6) % (width - 8)
        picture[:, left:left + 8] = 1.0
        frames.append(np.clip(picture, 0.0, 1.0))
    return frames


def write_movie(path_prefix: str, frames: list, container='MPEG4', codec='H264') -> str:
    """Encode the pictures into a movie with Blender's own FFmpeg writer (the sequencer plays
    them as an image strip) and return its path; frame 1 is the first picture."""
    import os
    import bpy
    from tests import blender_env
    compat = blender_env.compat()
    folder = os.path.dirname(path_prefix)
    height, width = frames[0].shape[:2]
    names = []
    for number, picture in enumerate(frames, 1):
        rgba = np.ones((height, width, 4), np.float32)
        rgba[..., :3] = picture
        image = new_image("lotus_movie_source", rgba)
        image.filepath_raw = os.path.join(folder, f".movie_source_{number:04d}.png")
        image.file_format = 'PNG'
        image.save()
        bpy.data.images.remove(image)
        names.append(f".movie_source_{number:04d}.png")
    scene = bpy.data.scenes.new("lotus_movie_writer")
    try:
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = 100
        scene.frame_start, scene.frame_end = 1, len(frames)
        scene.view_settings.view_transform = 'Standard'
        strips = compat.sequencer_strips(scene.sequence_editor_create())
        strip = strips.new_image("frames", os.path.join(folder, names[0]), 1, 1)
        for name in names[1:]:
            strip.elements.append(name)
        compat.set_file_format(scene.render.image_settings, 'FFMPEG')
        scene.render.ffmpeg.format = container
        scene.render.ffmpeg.codec = codec
        scene.render.ffmpeg.constant_rate_factor = 'PERC_LOSSLESS'
        scene.render.filepath = path_prefix
        # The animation path renders frame_start..frame_end of this scene (never the window's).
        bpy.ops.render.render(scene=scene.name, animation=True)
    finally:
        bpy.data.scenes.remove(scene)
        for name in names:
            os.remove(os.path.join(folder, name))
    base = os.path.basename(path_prefix)
    return next(os.path.join(folder, entry) for entry in sorted(os.listdir(folder))
                if entry.startswith(base) and not entry.endswith(".png"))
