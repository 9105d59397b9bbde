"""Benchmark of the Blender side around the worker: what an artist waits for besides the model.

Runs in the real Blender (the PyPI bpy module) with the extension installed as an extension and
a tiny random-weight checkpoint (so the model's own time is negligible and what is measured is
the Blender side: worker start, protocol round trip, reading pixels, writing images and files):
  - cold job: the first job, including the worker start (Python + torch + diffusers import);
  - warm job: a 32x24 image through the warm worker (Blender-side overhead per job);
  - 8000x6000: reading and reducing the pixels, the whole job, writing the full-size result
    (Blender image + 32-bit EXR + preview), and the peak of numpy memory (tracemalloc) compared
    with one full-size float RGBA buffer.
Prints JSON.

    .venv/bin/python benchmarks/bench_blender_io.py
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
work = Path(tempfile.mkdtemp(prefix="lotus-bench-io-"))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(work / "user"))

import bpy  # noqa: E402,F401  (first: puts Blender's modules on sys.path)

from tests import blender_env  # noqa: E402
from tests.tiny_lotus import make_tiny_checkpoint  # noqa: E402


def _run_job(job_queue, job_runner, operators, context, gather, task='DEPTH'):
    reports = []
    built = operators.build_jobs(context, task, gather, lambda level, text: reports.append(text))
    for job in built:
        job_queue.manager.submit(job)
    runner = job_runner.JobRunner(built, lambda level, text: reports.append(text))
    started = time.perf_counter()
    result = runner.run_blocking(poll_interval=0.005)
    return time.perf_counter() - started, result, built, reports


def main() -> int:
    name = blender_env.install_extension(work / "repo")
    base = f"{name}.blender"
    job_queue = importlib.import_module(f"{base}.job_queue")
    job_runner = importlib.import_module(f"{base}.job_runner")
    operators = importlib.import_module(f"{base}.operators")
    inputs = importlib.import_module(f"{base}.inputs")
    outputs = importlib.import_module(f"{base}.outputs")
    checkpoint = make_tiny_checkpoint(work / "models", variant="G", kind="disparity")
    prefs = bpy.context.preferences.addons[name].preferences
    prefs.depth_model, prefs.depth_model_path = 'LOCAL', str(checkpoint)
    prefs.processing_resolution, prefs.device, prefs.precision = 64, 'CPU', 'FP32'
    prefs.output_dir = str(work / "maps")
    context = bpy.context
    report = {"blender": bpy.app.version_string}

    small = bpy.data.images.new("bench_small", 32, 24)
    small.generated_type = 'COLOR_GRID'

    def gather_small(ctx, job_dir, resolution):
        return [inputs.prepare_image(small, job_dir, resolution, 0)], []
    seconds, result, _, _ = _run_job(job_queue, job_runner, operators, context, gather_small)
    report["cold_job_s"] = round(seconds, 3)
    warm, blender_side = [], []
    original_finish = job_runner.finish_job

    def timed_finish(*args, **kwargs):
        started = time.perf_counter()
        made = original_finish(*args, **kwargs)
        blender_side.append(time.perf_counter() - started)
        return made
    job_runner.finish_job = timed_finish
    for _ in range(7):
        started = time.perf_counter()
        seconds, result, _, _ = _run_job(job_queue, job_runner, operators, context, gather_small)
        warm.append(time.perf_counter() - started)
    job_runner.finish_job = original_finish
    report["warm_job_32x24_s"] = {"median": round(sorted(warm)[len(warm) // 2], 3),
                                  "min": round(min(warm), 3)}
    report["results_to_images_and_files_32x24_s"] = round(sorted(blender_side)[3], 4)

    huge = bpy.data.images.new("bench_huge", 8000, 6000)
    huge.generated_type = 'COLOR_GRID'
    full_rgba = 8000 * 6000 * 4 * 4
    timings = {}

    def gather_huge(ctx, job_dir, resolution):
        started = time.perf_counter()
        item = inputs.prepare_image(huge, job_dir, resolution, 0)
        timings["read_and_reduce_s"] = round(time.perf_counter() - started, 3)
        return [item], []
    original_create = outputs.create_results

    def timed_create(*args, **kwargs):
        started = time.perf_counter()
        made = original_create(*args, **kwargs)
        timings["write_results_s"] = round(time.perf_counter() - started, 3)
        return made
    outputs.create_results = timed_create
    tracemalloc.start()
    started = time.perf_counter()
    _, result, _, reports = _run_job(job_queue, job_runner, operators, context, gather_huge)
    timings["whole_job_s"] = round(time.perf_counter() - started, 3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    outputs.create_results = original_create
    timings["result"] = sorted(result)[0]
    timings["numpy_peak_mib"] = round(peak / 2**20, 1)
    timings["numpy_peak_in_full_rgba_buffers"] = round(peak / full_rgba, 2)
    report["image_8000x6000_at_64px"] = timings
    job_queue.manager.shutdown()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
