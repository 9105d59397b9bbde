"""Cycles renders of the ground-truth SCENES (tests/ground_truth.py) for the focal benchmark, cached.

Run with a Python that has PyPI `bpy` (the tests' .venv-blender/<version>/bin/python). Each render is
saved as one .npz (photo, planar depth, camera-space normals, true focal in pixels) in a cache folder,
so the benchmark and its reruns render each (scene, lens, resolution) once.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_path(cache, scene, lens, resolution):
    return Path(cache) / f"{scene}_{lens:g}mm_{resolution[0]}x{resolution[1]}.npz"


def _install_addon():
    """The add-on installed as the tests do (ground_truth uses its compatibility module)."""
    sys.path.insert(0, str(REPO_ROOT))
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="lotus-bench-user-"))
    from tests import blender_env
    blender_env.install_extension(Path(tempfile.mkdtemp(prefix="lotus-bench-repo-")))


def render_all(cache, scenes, lenses, resolution, samples=8):
    """Render what the cache lacks; returns the paths in (scene, lens) order."""
    paths, missing = [], []
    for scene in scenes:
        for lens in lenses:
            path = cache_path(cache, scene, lens, resolution)
            paths.append(path)
            if not path.exists():
                missing.append((scene, lens, path))
    if missing:
        _install_addon()
        from tests import ground_truth
        for scene, lens, path in missing:
            truth = ground_truth.render_scene(scene, lens=lens, resolution=resolution, samples=samples)
            focal_px = truth.lens / truth.sensor_width * max(truth.resolution)    # sensor fit AUTO
            partial = path.with_suffix(".part.npz")
            np.savez_compressed(partial, photo=truth.combined[..., :3].astype(np.float32),
                                depth=truth.depth.astype(np.float32),
                                normals=truth.camera_normals.astype(np.float32),
                                subjects=truth.subject_mask, focal_px=focal_px, lens=truth.lens,
                                matrix_world=truth.matrix_world)
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
    parser.add_argument("--resolution", nargs=2, type=int, default=[256, 192])
    args = parser.parse_args()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    render_all(args.cache, args.scenes, args.lenses, tuple(args.resolution))
    from tests import blender_env
    blender_env.exit_child(0)
