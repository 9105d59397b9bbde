"""Benchmark: normal-mapped material and relight setup from Lotus maps of several sizes.

Usage:  .venv/bin/python benchmarks/bench_materials.py [--sizes 512 1024 2048] [--repeat 2]

Prints one JSON object. Per size (square maps, a synthetic dome field), best of --repeat runs, seconds:
- "texture_maps": normal image -> tangent-space normal map image + Frankot-Chellappa height image
  (materials.make_texture_maps; the height integration is the FFT on the 2x mirrored field);
- "save_maps": both written as 16-bit PNG (Blender's own writer, temporary name, check, rename);
- "save_maps_again": the same maps once more, when the files already hold them (what a change in
  the redo panel costs: the files are read back and compared, nothing is written);
- "material": the Principled BSDF node tree on a new plane;
- "relight_setup": relight.build_relight_scene (2.5D geometry-nodes mesh, gap fill, object-space
  normals, key/fill/rim rig) until the evaluated mesh exists;
- "preview_160": relight_preview.render_preview at 160 px (Fast quality with 16 samples), Cycles CPU.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def dome_normals(size):
    """Bumps on a plane: smooth slopes everywhere, Blender camera space, top row first."""
    import numpy as np
    from lotus_blender.core import maps
    rows, cols = np.mgrid[0:size, 0:size] * (8.0 * np.pi / size)
    slope_x = 0.4 * np.cos(cols) * np.sin(rows)
    slope_row = 0.4 * np.sin(cols) * np.cos(rows)
    return maps.normalize_vectors(np.stack([-slope_x, slope_row, np.ones_like(slope_x)], axis=-1))


def best_of(repeat, action):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return min(times), result


def run(sizes, repeat):
    import bpy
    import numpy as np
    sys.path.insert(0, str(REPO_ROOT))
    from lotus_blender.blender.builders import common, materials, relight, relight_preview
    from lotus_blender.core import maps

    bpy.context.scene.render.threads_mode = 'FIXED'
    bpy.context.scene.render.threads = 2
    folder = tempfile.mkdtemp(prefix="lotus-bench-materials-")
    results = []
    for size in sizes:
        normals = dome_normals(size)
        name = f"bench{size}"
        photo = bpy.data.images.new(name, size, size)
        normal = common.write_float_image(f"{name}_normal", maps.normals_to_normal_map(normals))
        normal["lotus_kind"], normal["lotus_source"] = "normal", name
        disparity = np.clip(0.5 + 0.2 * normals[..., 0], 0.0, 1.0)
        depth = common.write_float_image(f"{name}_depth", disparity)
        depth["lotus_kind"], depth["lotus_source"] = "disparity", name

        maps_time, (normal_map, height, _relief) = best_of(
            repeat, lambda: materials.make_texture_maps(name, normal))
        def save_both(into):
            return materials.save_map(normal_map, into), materials.save_map(height, into)
        # Into an empty folder each time (a real write), then again (the redo panel: the files
        # already hold these pixels, nothing is written).
        save_time, _ = best_of(repeat, lambda: save_both(tempfile.mkdtemp(dir=folder)))
        written = tempfile.mkdtemp(dir=folder)
        save_both(written)
        save_again_time, _ = best_of(repeat, lambda: save_both(written))
        material_time, _ = best_of(repeat, lambda: materials.build_normal_material(photo, normal_map, height))

        def relight_setup():
            scene = bpy.data.scenes.new(f"{name}_relight")
            with bpy.context.temp_override(scene=scene):
                made = relight.build_relight_scene(bpy.context, photo, depth, normal)
                made["object"].evaluated_get(bpy.context.evaluated_depsgraph_get())
            return scene
        relight_time, scene = best_of(repeat, relight_setup)
        with bpy.context.temp_override(scene=scene):
            scene.render.threads_mode, scene.render.threads = 'FIXED', 2
            preview_time, _ = best_of(1, lambda: relight_preview.render_preview(
                bpy.context, f"{name}_preview", max_size=160, samples=16))
        results.append({"size": size, "texture_maps_s": round(maps_time, 3),
                        "save_maps_s": round(save_time, 3),
                        "save_maps_again_s": round(save_again_time, 3),
                        "material_s": round(material_time, 4),
                        "relight_setup_s": round(relight_time, 3), "preview_160_s": round(preview_time, 3)})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    results = run(args.sizes, args.repeat)
    print(json.dumps({"benchmark": "materials_relight", "machine": platform.machine(),
                      "cpu_count": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
