"""Benchmark: depth map -> 2.5D mesh, geometry nodes vs numpy + foreach_set vs Mesh.from_pydata.

Usage:  .venv/bin/python benchmarks/bench_mesh.py [--sizes 512 1024 2048] [--repeat 3]

Prints one JSON object. Each case runs in a fresh Python process so its peak memory is its own:
- "geonodes": build_photo_scene (UVs, tearing on, custom normals off) until the evaluated mesh
  exists, then a live change of the tear threshold until the mesh is re-evaluated;
- "foreach_set": the same mesh (unprojected, torn, UVs) computed with numpy and written with
  foreach_set into generic attributes (scene25d.mesh_from_arrays, as the Displace mode does);
- "from_pydata": the baseline, the same vertices and untorn faces as Python lists through
  Mesh.from_pydata, then the UVs.
Times are the best of --repeat runs (seconds); peak_rss_mb is the process's peak resident memory,
extra_rss_mb its growth over the state before the first build.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CASES = ("geonodes", "foreach_set", "from_pydata")


def _rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_disparity(size):
    """A ground slope, a disc and a box in front: smooth areas plus sharp depth jumps."""
    import numpy as np
    rows, cols = np.mgrid[0:size, 0:size] / size
    disparity = 0.2 + 0.5 * rows
    disc = (rows - 0.45) ** 2 + (cols - 0.35) ** 2 < 0.15 ** 2
    disparity[disc] = 0.95 - 0.3 * np.hypot(rows[disc] - 0.45, cols[disc] - 0.35)
    disparity[(rows > 0.3) & (rows < 0.7) & (cols > 0.6) & (cols < 0.85)] = 0.8
    return disparity.astype(np.float32)


def _depth_image(name, disparity):
    import bpy
    import numpy as np
    size = disparity.shape[0]
    image = bpy.data.images.new(name, size, size, float_buffer=True, alpha=True)
    image.colorspace_settings.name = 'Non-Color'
    rgba = np.ones((size, size, 4), dtype=np.float32)
    rgba[..., :3] = disparity[::-1, :, None]
    image.pixels.foreach_set(rgba.ravel())
    image["lotus_kind"] = "disparity"
    return image


def _evaluated_vertex_count(obj):
    import bpy
    depsgraph = bpy.context.evaluated_depsgraph_get()
    return len(obj.evaluated_get(depsgraph).data.vertices)


def _remove(obj):
    import bpy
    data = obj.data
    bpy.data.objects.remove(obj)
    if data is not None and data.users == 0:
        bpy.data.meshes.remove(data)


def run_case(case, size, repeat):
    sys.path.insert(0, str(REPO_ROOT))
    import bpy
    import numpy as np
    from tests import blender_env
    module = blender_env.install_extension(Path(tempfile.mkdtemp(prefix="lotus-bench-")))
    scene25d = sys.modules[module + ".blender.builders.scene25d"]
    geonodes = sys.modules[module + ".blender.builders.geonodes"]
    geometry = sys.modules[module + ".core.geometry"]
    maps = sys.modules[module + ".core.maps"]
    context = bpy.context
    disparity = synthetic_disparity(size)
    depth_image = _depth_image("bench_depth", disparity)
    photo = bpy.data.images.new("bench_photo", size, size)
    near, far, threshold = 2.0, 10.0, scene25d.DEFAULT_TEAR_THRESHOLD
    rss_before = _rss_mb()
    times, live_times, vertices = [], [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        if case == "geonodes":
            obj, camera = scene25d.build_photo_scene(context, photo, depth_image, near=near,
                                                     depth_range=far - near, tear_threshold=threshold,
                                                     max_vertices=size * size)
            vertices = _evaluated_vertex_count(obj)
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            geonodes.set_inputs(obj.modifiers[scene25d.MODIFIER_NAME], Tear_Threshold=threshold * 2)
            _evaluated_vertex_count(obj)
            live_times.append(time.perf_counter() - start)
            bpy.data.objects.remove(camera)
        else:
            # The same torn, UV-mapped mesh, from numpy arrays: through foreach_set or from_pydata.
            intr = geometry.intrinsics_from_lens(50.0, 36.0, size, size)
            depth = maps.disparity_to_depth(disparity, near, far)
            points = geometry.unproject(depth, intr).reshape(-1, 3)
            index = np.arange(size * size).reshape(size, size)
            quads = np.stack([index[1:, :-1], index[1:, 1:], index[:-1, 1:], index[:-1, :-1]], axis=-1)
            quads = quads[~geometry.torn_faces(depth, threshold)].reshape(-1, 4)
            centres = (np.arange(size) + 0.5) / size
            uv = np.stack(np.broadcast_arrays(centres[None, :], 1.0 - centres[:, None]), axis=-1).reshape(-1, 2)
            if case == "foreach_set":
                mesh = scene25d.mesh_from_arrays("bench_mesh", points, quads, uv[quads.reshape(-1)])
            else:
                mesh = bpy.data.meshes.new("bench_mesh")
                mesh.from_pydata(points.tolist(), [], quads.tolist())
                layer = mesh.uv_layers.new(name="UVMap")
                corner_verts = np.empty(len(mesh.loops), dtype=np.int32)
                mesh.loops.foreach_get("vertex_index", corner_verts)
                layer.data.foreach_set("uv", uv[corner_verts].ravel().astype(np.float32))
            obj = bpy.data.objects.new("bench_mesh", mesh)
            context.collection.objects.link(obj)
            vertices = _evaluated_vertex_count(obj)
            times.append(time.perf_counter() - start)
        _remove(obj)
    result = {"case": case, "size": size, "vertices": vertices, "seconds": round(min(times), 4),
              "peak_rss_mb": round(_peak_rss_mb(), 1), "extra_rss_mb": round(_peak_rss_mb() - rss_before, 1)}
    if live_times:
        result["live_tear_change_seconds"] = round(min(live_times), 4)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)   # child process mode
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.sizes[0], args.repeat)))
        return
    results = []
    for size in args.sizes:
        for case in CASES:
            repeat = 1 if case == "from_pydata" and size >= 2048 else args.repeat
            child = subprocess.run([sys.executable, __file__, "--case", case, "--sizes", str(size),
                                    "--repeat", str(repeat)], capture_output=True, text=True, check=True)
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    by_size = {}
    for row in results:
        by_size.setdefault(row["size"], {})[row["case"]] = row
    speedups = {str(size): round(rows["from_pydata"]["seconds"] / rows["geonodes"]["seconds"], 1)
                for size, rows in by_size.items()}
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                  "blender": __import__("bpy").app.version_string},
                      "results": results, "speedup_geonodes_vs_from_pydata": speedups}, indent=1))


if __name__ == "__main__":
    main()
