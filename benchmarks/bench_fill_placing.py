"""Benchmark: how many pixels Fill Behind's placing moves (core.fill.snap_soft_steps) at several photo sizes.

Usage:  .venv/bin/python benchmarks/bench_fill_placing.py [--scenes room table shaded]
            [--resolutions 192x144 512x384 1024x768] [--severities 0 1] [--seed 0]
            [--noise 0 0.02] [--out benchmarks/bench_fill_placing.json] [--cache DIR]

bench_fill.py measures the placing's effect on the moved views at 192x144, where the model-like
maps' soft steps (tests/lotus_errors.py: the log-depth blurred over about 1 % of the frame) are a
few pixels wide. A real photo is larger: this script renders the photo view of each scene
(tests/fill_scenes.py: emission-only room and table, the shaded Lambert scene) at each size, builds
the maps bench_fill.py builds (fill_scenes.lotus_maps, the same severities and seed) and counts the
pixels the placing moves ("placed_pixels": on exact maps it must be 0 at every size), the share of
them whose placed depth lies nearer the true depth than the model's did ("placed_closer_share")
and the soft step pixels it starts from ("soft_pixels"), with the placing's time (best of 2, this machine, its
load average alongside). A scene "lit_NAME@SAMPLES" is tests/ground_truth.py's scene NAME
as lit (Principled surfaces, shadows, bounces), rendered at SAMPLES samples per pixel. --noise adds Gaussian noise of that standard deviation (linear RGB,
seeded) to the photo: a camera's sensor noise, against which the placing's colour guards must hold
(a lit render at one sample per pixel, as bench_fill.py's timing photo, is noise of about 0.2
between neighbours: nothing placed at any size). --cache keeps the renders (npz) to rerun without Blender's render.
Prints one JSON object and writes it to --out.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


LIT = "lit_"   # scene "lit_room@32": tests/ground_truth.py's room as lit, rendered at 32 samples


def _photo(fill_scenes, name, resolution, cache):
    """(combined RGB, GroundTruth-like) of the scene's photo view, from the cache when there."""
    path = Path(cache) / f"{name.replace('@', '_')}_{resolution[0]}x{resolution[1]}.npz" if cache else None
    if path is not None and path.exists():
        data = np.load(path)
        return _Photo(data["combined"], data["depth"], data["camera_normals"])
    if name.startswith(LIT):
        # The ground-truth scene as lit (Principled surfaces, world light, shadows and bounces):
        # Cycles' noise falls with the samples (one sample: noise as strong as the edges).
        from tests import ground_truth
        scene, samples = name[len(LIT):].split("@")
        photo = ground_truth.render_scene(scene, resolution=resolution, samples=int(samples))
    else:
        photo = fill_scenes.render_truth(name, {}, resolution=resolution)["photo"]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, combined=photo.combined[..., :3], depth=photo.depth,
                            camera_normals=photo.camera_normals)
    return photo


class _Photo:
    """What lotus_maps and placed_maps read of a GroundTruth."""

    def __init__(self, combined, depth, camera_normals):
        self.combined, self.depth, self.camera_normals = combined, depth, camera_normals


def measure(fill_scenes, core_fill, photo, severity, seed, noise=0.0, threshold=0.05):
    from lotus_blender.core import depth_edges, maps
    lotus = fill_scenes.lotus_maps(photo, severity, seed)
    disparity, near, far, _ = lotus
    depth = maps.disparity_to_depth(np.asarray(disparity, np.float32), near, far).astype(np.float64)
    inverse = 1.0 / depth
    colours = np.asarray(photo.combined[..., :3], np.float64)
    if noise > 0:
        colours = colours + np.random.default_rng(seed).normal(0.0, noise, colours.shape)
    soft = depth_edges.soft_steps(inverse, threshold, depth_edges.ramp_radius(depth.shape))
    times = []
    for _ in range(2):
        start = time.perf_counter()
        placed, moved = core_fill.snap_soft_steps(depth, colours, threshold)
        times.append(time.perf_counter() - start)
    # Whether the moved pixels went the right way: their placed depth nearer the truth's than the
    # model's was (a pixel of the ramp given the wrong side lies further from it).
    truth = np.asarray(photo.depth, np.float64)
    closer = np.abs(placed - truth) < np.abs(depth - truth)
    return {"soft_pixels": int(soft.sum()), "placed_pixels": int(moved.sum()),
            "placed_closer_share": round(float(closer[moved].mean()), 4) if moved.any() else None,
            "placing_seconds": round(min(times), 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=["room", "table", "shaded"])
    parser.add_argument("--resolutions", nargs="+", default=["192x144", "512x384", "1024x768"])
    parser.add_argument("--severities", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0])
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "bench_fill_placing.json"))
    parser.add_argument("--cache", help="folder for the rendered photos (npz), reused when there")
    args = parser.parse_args()
    import tempfile

    from tests import blender_env, fill_scenes
    # The renders go through the installed add-on (its compat module), as in bench_fill.py.
    blender_env.install_extension(Path(tempfile.mkdtemp(prefix="lotus-bench-")))
    from lotus_blender.core import fill as core_fill   # the placing measured: this checkout's (numpy only)
    rows = []
    for text in args.resolutions:
        resolution = tuple(int(v) for v in text.lower().split("x"))
        for name in args.scenes:
            photo = _photo(fill_scenes, name, resolution, args.cache)
            for severity in args.severities:
                for noise in args.noise:
                    row = {"scene": name, "resolution": list(resolution), "severity": severity, "noise": noise}
                    row.update(measure(fill_scenes, core_fill, photo, severity, args.seed, noise))
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average": round(os.getloadavg()[0], 2)},
              "settings": {"seed": args.seed, "tear_threshold": 0.05}, "results": rows}
    text = json.dumps(result, indent=1)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
