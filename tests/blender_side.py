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
    names = ("jobs", "job_folders", "models", "worker_session", "operators", "inputs", "outputs",
             "worker_client", "preferences", "panels")
    return SimpleNamespace(**{n: importlib.import_module(f"{base}.{n}") for n in names},
                           package=sys.modules[module_name])


def configure(module_name: str, checkpoints: dict, output_dir: str, **overrides):
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
