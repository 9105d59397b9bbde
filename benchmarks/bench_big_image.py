"""Benchmark: Blender's peak memory predicting Depth & Normals (BOTH) on one huge PNG.

Issue 15: a 16000x16000 PNG peaked at 13.0 GB in Blender's process. The plan: read the pixels
once into one float buffer (the PNG's own 8-bit buffer is freed afterwards), give the worker a
reduced copy, fill each full-size result image from one full-size buffer, free each result's
pixels once its file holds them (Blender reads them back when they are shown), and write the
16-bit normal PNG strip by strip. "One copy" below is one full-size float RGBA buffer
(width x height x 16 bytes), the form Blender holds a float result in; the target is a peak of
about two copies above Blender's own memory.

A child Blender process (the PyPI bpy module) installs the extension, predicts with a tiny
random-weight checkpoint (the model's own memory lives in the worker, another process), and
reads its own peak resident memory (VmHWM, exact) and samples it step by step.
Prints JSON.

    .venv/bin/python benchmarks/bench_big_image.py --size 16000
    .venv/bin/python benchmarks/bench_big_image.py --size 4000 --size 8000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _status(key: str) -> int:
    """A /proc/self/status figure in bytes (Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident size


def child(work: Path, photo: Path, depth_model: str, normal_model: str) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    import bpy
    from tests import blender_env
    name = blender_env.install_extension(work / "repo")
    prefs = bpy.context.preferences.addons[name].preferences
    prefs.depth_model, prefs.depth_model_path = 'LOCAL', depth_model
    prefs.depth_model_kind = 'DISPARITY'
    prefs.normal_model, prefs.normal_model_path = 'LOCAL', normal_model
    prefs.processing_resolution, prefs.device, prefs.precision = 64, 'CPU', 'FP32'
    prefs.python_path = blender_env.worker_python_preference()
    prefs.output_dir = str(work / "maps")
    inputs = sys.modules[f"{name}.blender.inputs"]
    outputs = sys.modules[f"{name}.blender.outputs"]
    files = sys.modules[f"{name}.blender.files"]
    # Where the memory goes: a thread samples the resident size every few milliseconds under the
    # label of the step running (the overall peak is the kernel's exact VmHWM).
    label = ["other"]
    phases = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = _status("VmRSS")
            phases[label[-1]] = max(phases.get(label[-1], 0), rss)
            time.sleep(0.003)

    def labelled(name, function):
        def wrapper(*args, **kwargs):
            label.append(name)
            try:
                return function(*args, **kwargs)
            finally:
                label.pop()
        return wrapper
    # Wrapped where they are called from: the modules inside the inputs/ and outputs/ packages
    # (issue 17); before, inputs.py and outputs.py themselves (for comparisons).
    reading = getattr(inputs, "images", inputs)
    writing = getattr(outputs, "results", outputs)
    reading.image_display_array = labelled("read pixels and reduce", reading.image_display_array)
    writing._fill_image = labelled("fill a full-size result image", writing._fill_image)
    files.WriterScene.write = labelled("write an EXR or PNG (Blender)", files.WriterScene.write)
    if hasattr(writing, "write_normal_png"):  # absent before issue 15 (for comparisons)
        writing.write_normal_png = labelled("write the 16-bit normal PNG (strips)",
                                            writing.write_normal_png)
    if not os.environ.get("LOTUS_BENCH_NO_SAMPLING"):
        threading.Thread(target=sample, daemon=True).start()
    baseline = _status("VmRSS")
    _reset_peak()
    result = bpy.ops.lotus.predict_files(task='BOTH', directory=str(photo.parent),
                                         files=[{"name": photo.name}])
    peak = _status("VmHWM")
    done.set()
    stem = photo.stem
    sizes = {suffix: list(bpy.data.images[f"{stem}_{suffix}"].size)
             for suffix in ("depth", "normal")}
    return {"result": sorted(result)[0], "baseline": baseline, "peak": peak, "phases": phases,
            "result_sizes": sizes, "files": sorted(os.listdir(work / "maps"))}


def _make_photo(path: Path, size: int) -> None:
    """A size x size RGB PNG with structure (Pillow, outside Blender)."""
    import numpy as np
    from PIL import Image
    y = np.linspace(0, 255, size, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, size, dtype=np.float32)[None, :]
    rgb = np.empty((size, size, 3), np.uint8)
    rgb[..., 0] = x.astype(np.uint8)
    rgb[..., 1] = y.astype(np.uint8)
    rgb[..., 2] = ((x // 32 + y // 32) % 2 * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, compress_level=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append",
                        help="edge of the square PNG (repeatable; default 16000)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        work, photo, depth_model, normal_model = args.child
        report = child(Path(work), Path(photo), depth_model, normal_model)
        sys.stdout.write("RESULT " + json.dumps(report) + "\n")
        sys.stdout.flush()
        os._exit(0)
    sys.path.insert(0, str(REPO_ROOT))
    from tests.tiny_lotus import make_tiny_checkpoint
    root = Path(tempfile.mkdtemp(prefix="lotus-bench-big-"))
    models = {kind: str(make_tiny_checkpoint(root / "models" / kind, variant="G", kind=kind))
              for kind in ("disparity", "normal")}
    report = {"copy": "one full-size float RGBA buffer, width x height x 16 bytes",
              "sizes": {}}
    for size in args.size or [16000]:
        work = root / f"run{size}"
        work.mkdir()
        photo = work / f"big{size}.png"
        _make_photo(photo, size)
        env = dict(os.environ, BLENDER_USER_RESOURCES=str(work / "user"))
        run = subprocess.run([sys.executable, __file__, "--child", str(work), str(photo),
                              models["disparity"], models["normal"]],
                             capture_output=True, text=True, env=env)
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            report["sizes"][size] = {"error": (run.stdout + run.stderr)[-2000:],
                                     "returncode": run.returncode}
            continue
        measured = json.loads(lines[-1][len("RESULT "):])
        copy = size * size * 16
        gib = lambda value: round(value / 2**30, 2)  # noqa: E731
        entry = {"result": measured["result"], "one_copy_gib": gib(copy),
                 "blender_baseline_gib": gib(measured["baseline"]),
                 "blender_peak_gib": gib(measured["peak"]),
                 "peak_above_baseline_in_copies": round(
                     (measured["peak"] - measured["baseline"]) / copy, 2),
                 "sampled_peak_by_step_in_copies_above_baseline": {
                     label: round((rss - measured["baseline"]) / copy, 2)
                     for label, rss in measured["phases"].items()},
                 "result_sizes": measured["result_sizes"], "files": measured["files"]}
        report["sizes"][size] = entry
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
