"""Benchmark: the camera estimate and the depth refinement (numpy core) on square maps.

Usage:  .venv/bin/python benchmarks/bench_depth_refine.py [--sizes 512 1024] [--repeat 3]

Prints one JSON object (with the machine's load average: the wall times grow on a busy machine,
the CPU times much less). Per size (an analytic room with balls, 35 mm, the depth blurred with a
Gaussian of sigma 3 px like a model's smooth depth), best of --repeat runs, seconds:
- "estimate_s": core.camera_estimate.estimate_camera (focal length and shift, maps averaged down
  to 256 px);
- "refine_s": core.depth_refine.refine_depth (weighted solve on at most 256 px, then one cosine
  transform solve at full size), the target being under 1 s at 1024 px on a 2-core CPU;
- "refine_map_s": core.camera_estimate.refine_map (the builder's call: depth from the map,
  refinement, re-encoding).
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def best_of(repeat, action):
    """(best wall time, best CPU time of this process, result). The CPU time is what a quiet machine
    would show as wall time (numpy runs these on one thread); on a busy one the wall time grows."""
    times, cpu_times, result = [], [], None
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = action()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return min(times), min(cpu_times), result


def run(sizes, repeat):
    import numpy as np
    sys.path.insert(0, str(REPO_ROOT))
    from lotus_blender.core import camera_estimate, depth_refine
    from tests import synthetic_scenes as scenes

    results = []
    for size in sizes:
        depth, normals, _labels, focal = scenes.room(size, size, 35.0)
        disparity = scenes.gaussian_blur(scenes.lotus_disparity(depth, np.random.default_rng(1)), 3.0)
        normals = normals.astype(np.float32)
        estimate_time, estimate_cpu, estimate = best_of(
            repeat, lambda: camera_estimate.estimate_camera(disparity, normals))
        smooth = estimate.depth(disparity)
        refine_time, refine_cpu, _ = best_of(repeat, lambda: depth_refine.refine_depth(smooth, normals, focal))
        map_time, map_cpu, _ = best_of(repeat, lambda: camera_estimate.refine_map(
            disparity, normals, "disparity", estimate.focal_px, estimate.shift))
        results.append({"size": size, "estimate_s": round(estimate_time, 3), "estimate_cpu_s": round(estimate_cpu, 3),
                        "refine_s": round(refine_time, 3), "refine_cpu_s": round(refine_cpu, 3),
                        "refine_map_s": round(map_time, 3), "refine_map_cpu_s": round(map_cpu, 3),
                        "focal_35mm": round(estimate.focal_35mm, 2), "true_focal_35mm": 35.0,
                        "focal_confidence": round(estimate.focal_confidence, 3)})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = run(args.sizes, args.repeat)
    print(json.dumps({"benchmark": "camera_estimate_depth_refine", "machine": platform.machine(),
                      "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0], "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
