"""Cycles renders of the ground-truth SCENES (tests/ground_truth.py) for the focal benchmark, cached.

Run with a Python that has PyPI `bpy` (the tests' .venv-blender/<version>/bin/python). Each render is
saved as one .npz (photo, planar depth, camera-space normals, true focal in pixels of the photo) in a
cache folder, so the benchmark and its reruns render each (scene, lens, resolution) once.

The photo is rendered the size a photo is (1024 px on its long side by default) and the maps are
stored at the size the estimate works at (256 px: core.camera_estimate averages larger maps down to
that anyway, and Lotus's maps carry no finer detail than its processing resolution). The passes
are rendered at `supersample` times the photo's size with the tests' tiny pixel filter (each
pixel's depth and normal at its centre ray) and box-averaged down: the photo's edges are
antialiased as a camera's are, the maps' pixels are the means of their footprints.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_path(cache, scene, lens, resolution, map_resolution):
    return Path(cache) / (f"{scene}_{lens:g}mm_{resolution[0]}x{resolution[1]}"
                          f"_maps{map_resolution[0]}x{map_resolution[1]}.npz")


def _box_mean(array, factor):
    rows, cols = array.shape[0] // factor, array.shape[1] // factor
    return array[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor, *array.shape[2:]).mean(axis=(1, 3))


def _install_addon():
    """The add-on installed as the tests do (ground_truth uses its compatibility module)."""
    sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="lotus-bench-user-"))
    from tests import blender_env
    blender_env.install_extension(Path(tempfile.mkdtemp(prefix="lotus-bench-repo-")))


def render_all(cache, scenes, lenses, resolution, map_resolution=(256, 192), samples=4, supersample=2):
    """Render what the cache lacks; returns the paths in (scene, lens) order."""
    paths, missing = [], []
    photo_factor = supersample
    map_factor = supersample * resolution[0] // map_resolution[0]
    if map_factor * map_resolution[0] != supersample * resolution[0] or \
            map_factor * map_resolution[1] != supersample * resolution[1]:
        raise ValueError("the map resolution must divide the photo's")
    for scene in scenes:
        for lens in lenses:
            path = cache_path(cache, scene, lens, resolution, map_resolution)
            paths.append(path)
            if not path.exists():
                missing.append((scene, lens, path))
    if missing:
        _install_addon()
        from tests import ground_truth
        for scene, lens, path in missing:
            size = (resolution[0] * supersample, resolution[1] * supersample)
            truth = ground_truth.render_scene(scene, lens=lens, resolution=size, samples=samples)
            focal_px = truth.lens / truth.sensor_width * max(resolution)    # sensor fit AUTO, photo pixels
            normals = _box_mean(truth.camera_normals, map_factor)
            normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-9)
            partial = path.with_suffix(".part.npz")
            np.savez_compressed(partial, photo=_box_mean(truth.combined[..., :3], photo_factor).astype(np.float32),
                                depth=_box_mean(truth.depth, map_factor).astype(np.float32),
                                normals=normals.astype(np.float32),
                                subjects=_box_mean(truth.subject_mask.astype(np.float32), map_factor) > 0.5,
                                focal_px=focal_px, lens=truth.lens, matrix_world=truth.matrix_world)
            os.replace(partial, path)
    return paths


def load(path):
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("cache")
    parser.add_argument("--scenes", nargs="+", default=["objects", "room", "table", "outdoor", "closeup"])
    parser.add_argument("--lenses", nargs="+", type=float, default=[18, 24, 35, 50, 85, 135])
    parser.add_argument("--resolution", nargs=2, type=int, default=[1024, 768])
    parser.add_argument("--map-resolution", nargs=2, type=int, default=[256, 192])
    args = parser.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    render_all(args.cache, args.scenes, args.lenses, tuple(args.resolution), tuple(args.map_resolution))
    from tests import blender_env
    blender_env.exit_child(0)
