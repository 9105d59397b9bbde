"""Benchmark: Preview Relight before and after, and what each fast setting buys.

Usage:  .venv/bin/python benchmarks/bench_preview.py [--photo 4032x3024] [--size 320] [--repeat 3]

A relight setup (2.5D mesh, gap fill, key/fill/rim rig, Cycles CPU, 2 threads) of a synthetic
photo at a camera's size; then, best of --repeat, seconds per preview:
- "before": the old preview (the scene's own light paths and denoising, 16 samples, one render);
- "fast": the new default (Fast quality, in bands);
- "fast_without_bands": Fast quality in one render (what the bands cost);
- "only_<knob>": the old preview with one fast setting alone (fewer samples, adaptive sampling,
  no denoising);
- "full" / "full_without_bands": Full quality (the scene's 128 samples, denoising), run once.
The very first render of the process (Cycles kernels, denoiser loading) is reported apart.
Prints one JSON object.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def build_scene(width, height):
    import bpy
    import numpy as np
    sys.path.insert(0, str(REPO_ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_materials import dome_normals
    from lotus_blender.blender.builders import common, relight
    from lotus_blender.core import maps

    normals = dome_normals(max(width, height))[:height, :width]
    photo = bpy.data.images.new("bench_photo", width, height)
    rng = np.random.default_rng(0)
    photo.pixels.foreach_set(rng.random(width * height * 4, dtype=np.float32))
    normal = common.write_float_image("bench_photo_normal", maps.normals_to_normal_map(normals))
    normal["lotus_kind"], normal["lotus_source"] = "normal", photo.name
    depth = common.write_float_image("bench_photo_depth", np.clip(0.5 + 0.2 * normals[..., 0], 0, 1))
    depth["lotus_kind"], depth["lotus_source"] = "disparity", photo.name
    relight.build_relight_scene(bpy.context, photo, depth, normal)
    scene = bpy.context.scene
    scene.render.threads_mode, scene.render.threads = 'FIXED', 2
    return scene


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="4032x3024", help="photo size WxH")
    parser.add_argument("--size", type=int, default=320, help="preview size (longest edge)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.photo.lower().split("x"))

    # Blender prints render progress on stdout: keep it for the JSON alone.
    sys.stdout.flush()
    json_stdout = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    import bpy
    scene = build_scene(width, height)
    from lotus_blender.blender.builders import relight_preview as preview

    def render(quality='FAST', samples=0, knobs=None, bands=True, size=args.size):
        band_rows = dict(preview.BAND_ROWS)
        if not bands:
            preview.BAND_ROWS.update({key: 10**6 for key in band_rows})
        try:
            job = preview.PreviewRender(bpy.context, "bench_preview", max_size=size, quality=quality,
                                        samples=samples, knobs=knobs)
            start = time.perf_counter()
            job.start()
            while not job.step():
                pass
            image = job.finish()
            return time.perf_counter() - start, tuple(image.size), len(job.bands)
        finally:
            preview.BAND_ROWS.update(band_rows)

    # The old preview rendered the scene's own settings at 16 samples; each "only_*" case is that
    # with one fast setting alone.
    cases = {
        "before": dict(quality='FULL', samples=16, bands=False),
        "fast": dict(),
        "fast_without_bands": dict(bands=False),
        "only_fewer_samples": dict(samples=preview.FAST_SAMPLES, knobs=set(), bands=False),
        "only_adaptive": dict(samples=16, knobs={"adaptive"}, bands=False),
        "only_no_denoising": dict(samples=16, knobs={"no_denoising"}, bands=False),
        "full": dict(quality='FULL'),
        "full_without_bands": dict(quality='FULL', bands=False),
        "fast_160": dict(size=160),
    }
    first, _size, _bands = render(**cases["before"])
    # Round robin (every case once per round), so that a busy machine slows all cases alike.
    times = {name: [] for name in cases}
    shapes = {}
    for round_index in range(args.repeat):
        for name, case in cases.items():
            if name.startswith("full") and round_index:  # about a minute each: once is enough
                continue
            seconds, size, bands = render(**case)
            times[name].append(seconds)
            shapes[name] = (size, bands)
    results = {name: {"seconds": round(min(values), 3), "all_seconds": [round(t, 3) for t in values],
                      "size": list(shapes[name][0]), "bands": shapes[name][1]}
               for name, values in times.items()}
    before, fast = results["before"]["seconds"], results["fast"]["seconds"]
    sys.stdout.flush()
    os.dup2(json_stdout, 1)
    print(json.dumps({
        "benchmark": "relight_preview", "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "blender": bpy.app.version_string, "photo": [width, height], "preview_size": args.size,
        "scene_samples": scene.cycles.samples, "fast_samples": preview.FAST_SAMPLES,
        "first_render_of_process_seconds": round(first, 3),
        "results": results, "speedup_fast_vs_before": round(before / fast, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
