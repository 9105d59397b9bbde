"""Benchmark: Build 2.5D Scene on an image sequence, Fill Behind per frame (issue 18, sequences).

Usage:  .venv/bin/python benchmarks/bench_scene25d_sequence.py [--size 1024 768] [--frames 4]
            [--repeat 2] [--out benchmarks/results/bench_scene25d_sequence.json]

A synthetic shot (--frames frames of --size; a wall with two boxes that move and near frame by
frame: steps to tear and fill behind; photo frames as 8-bit PNG, depth as Predict writes it, 32-bit
EXR) is built as a 2.5D scene with Fill Behind, the way the panel builds it. Seconds, best of
--repeat, on this machine (Blender's image I/O and numpy both limited to 2 threads):
- "build_still": the same build on one frame given as a still image (packed behind/fill images);
- "build_sequence": the whole sequence: per frame, read the depth and photo frame, core.fill,
  write "<name>_behind_FFFF.exr" and "<name>_fill_FFFF.png" atomically; then the scene;
- "per_frame": (build_sequence - build_still) / (frames - 1), what each more frame adds;
- "fill_core_per_frame": the numpy part of that alone (core.fill via scene25d_behind.behind_arrays);
- "frame_change": scene.frame_set to a new frame and the evaluated mesh (the geometry nodes read
  that frame's depth and behind images from disk), mean over the frames;
- "live_edit": the same evaluation after a Live Mesh edit (Near) on the same frame, for comparison;
- "modal": the same build the way the panel's button runs it (scene25d_sequence.BehindSequenceFill
  stepped from a 0.1 s timer, core.fill in a background thread, then the build in one step):
  "longest_tick" and "mean_tick", Blender's main thread busy in one tick (what the artist can
  feel); "fill_wall", the frames' fill from the first tick to the last; "final_build", the
  build once every frame is filled (and the mesh evaluated); "total" (with the deferred first call).
Prints one JSON object and writes it to --out.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shot(width, height, index):
    """(disparity, RGB) of frame index."""
    import numpy as np
    rows, cols = np.mgrid[0:height, 0:width]
    disparity = np.full((height, width), 0.2, np.float32) + 0.1 * rows / height
    rgb = np.stack([(cols // 16 + rows // 16) % 2 * 0.6 + 0.2, 0.3 + 0.4 * cols / width,
                    np.full_like(cols, 0.5, dtype=np.float64)], axis=-1).astype(np.float32)
    for box, (left, top, size, value) in enumerate(((0.15, 0.3, 0.3, 0.6), (0.6, 0.5, 0.2, 0.8))):
        x = int((left + 0.03 * index * (1 - 2 * box)) * width)
        y, side = int(top * height), int(size * height)
        disparity[y:y + side, x:x + side] = value + 0.02 * index
        rgb[y:y + side, x:x + side] = (0.9 - 0.3 * box, 0.2, 0.1 + 0.05 * index)
    return disparity, rgb


def run(width, height, frames, repeat):
    import bpy
    import numpy as np
    sys.path.insert(0, str(REPO_ROOT))
    from lotus_blender.blender import outputs
    from lotus_blender.blender.builders import scene25d, scene25d_behind

    bpy.context.scene.render.threads_mode = 'FIXED'
    bpy.context.scene.render.threads = 2
    folder = tempfile.mkdtemp(prefix="lotus-bench-seq25d-")
    try:
        for index in range(frames):
            disparity, rgb = shot(width, height, index)
            outputs.write_map_files(disparity, "disparity", width, height,
                                    {"exr": os.path.join(folder, f"shot_depth_{index + 1:04d}.exr")})
            image = bpy.data.images.new("frame", width, height)
            rgba = np.ones((height, width, 4), np.float32)
            rgba[..., :3] = rgb
            image.pixels.foreach_set(rgba[::-1].ravel())
            image.filepath_raw = os.path.join(folder, f"shot_{index + 1:04d}.png")
            image.file_format = 'PNG'
            image.save()
            bpy.data.images.remove(image)

        def load(path, sequence):
            image = bpy.data.images.load(path, check_existing=False)
            if sequence:
                image.source = 'SEQUENCE'
            return image

        def depth_image(sequence):
            image = load(os.path.join(folder, "shot_depth_0001.exr"), sequence)
            image.colorspace_settings.is_data = True
            image["lotus_kind"] = "disparity"
            if sequence:
                image["lotus_frames"] = [1, frames]
            return image

        def build(sequence):
            # One 2.5D scene at a time: a frame change evaluates every sequence mesh in the scene.
            bpy.data.batch_remove(list(bpy.data.objects))
            photo = load(os.path.join(folder, "shot_0001.png"), sequence)
            depth = depth_image(sequence)
            depth["lotus_source"] = photo.name
            start = time.perf_counter()
            obj, _camera = scene25d.build_photo_scene(bpy.context, photo, depth, near=2.0, depth_range=6.0,
                                                      focal_35mm=35.0, fill_behind=True)
            obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
            seconds = time.perf_counter() - start
            return seconds, obj

        bpy.context.scene.frame_start = 1
        bpy.context.scene.frame_set(1)
        build(False)        # once untimed: the node group is made on the first build of a file
        still = min(build(False)[0] for _ in range(repeat))
        sequence_times, changes, edits = [], [], []
        for _ in range(repeat):
            seconds, obj = build(True)
            sequence_times.append(seconds)
            for frame in range(2, frames + 1):
                start = time.perf_counter()
                bpy.context.scene.frame_set(frame)
                evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
                mesh = evaluated.to_mesh()
                vertices = len(mesh.vertices)
                evaluated.to_mesh_clear()
                changes.append(time.perf_counter() - start)
            bpy.context.scene.frame_set(1)
            for near in (2.5, 2.0):     # the same evaluation for a Live Mesh edit, for comparison
                start = time.perf_counter()
                scene25d.geonodes.set_inputs(obj.modifiers[scene25d.MODIFIER_NAME], Near=near)
                evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
                evaluated.to_mesh()
                evaluated.to_mesh_clear()
                edits.append(time.perf_counter() - start)
        sequence = min(sequence_times)
        # The numpy part alone (core.fill through scene25d_behind.behind_arrays) on one frame, with colour.
        disparity, rgb = shot(width, height, 1)
        rgba = np.ones((height, width, 4), np.float32)
        rgba[..., :3] = rgb
        camera = bpy.context.scene.camera.data
        core_times = []
        for _ in range(repeat):
            start = time.perf_counter()
            scene25d_behind.behind_arrays(disparity, rgba, "disparity", 2.0, 6.0, camera.lens, camera.sensor_width,
                                   scene25d.DEFAULT_TEAR_THRESHOLD, scene25d.DEFAULT_MOVE_RANGE)
            core_times.append(time.perf_counter() - start)
        written = sorted(name for name in os.listdir(folder) if "_behind_" in name or "_fill_" in name)
        modal = modal_build(bpy, scene25d, load, depth_image, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "size": [width, height], "frames": frames, "repeat": repeat,
        "build_still": round(still, 3), "build_sequence": round(sequence, 3),
        "per_frame": round((sequence - still) / max(frames - 1, 1), 3),
        "fill_core_per_frame": round(min(core_times), 3),
        "frame_change": round(float(np.mean(changes)), 3), "live_edit": round(float(np.mean(edits)), 3),
        "evaluated_vertices": vertices, "modal": modal,
        "files_written": len(written),
    }


def modal_build(bpy, scene25d, load, depth_image, folder, tick_s=0.1):
    """Build 2.5D Scene's modal run, its timer emulated by sleeping tick_s between steps."""
    scene25d_behind = sys.modules[scene25d.__package__ + ".scene25d_behind"]
    bpy.data.batch_remove(list(bpy.data.objects))
    photo = load(os.path.join(folder, "shot_0001.png"), True)
    depth = depth_image(True)
    depth["lotus_source"] = photo.name
    options = dict(near=2.0, depth_range=6.0, focal_35mm=35.0, fill_behind=True)
    start = time.perf_counter()
    try:
        scene25d.build_photo_scene(bpy.context, photo, depth, behind_fill=scene25d_behind.DEFER_FILL, **options)
        raise RuntimeError("the build did not defer its fill")
    except scene25d_behind.FillFramesFirst as pending:
        fill = pending.fill
    deferred = time.perf_counter() - start
    ticks = []
    fill_start = time.perf_counter()
    while not fill.finished:
        time.sleep(tick_s)
        tick = time.perf_counter()
        fill.step(wait=False)
        ticks.append(time.perf_counter() - tick)
    fill_wall = time.perf_counter() - fill_start
    tick = time.perf_counter()
    obj, _camera = scene25d.build_photo_scene(bpy.context, photo, depth, behind_fill=fill, **options)
    obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    final = time.perf_counter() - tick
    return {"tick_s": tick_s, "ticks": len(ticks), "longest_tick": round(max(ticks), 3),
            "mean_tick": round(sum(ticks) / len(ticks), 3), "deferred_call": round(deferred, 3),
            "fill_wall": round(fill_wall, 3), "final_build": round(final, 3),
            "total": round(time.perf_counter() - start, 3), "used_its_fill": fill.used}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 768))
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "bench_scene25d_sequence.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import bpy
    result = {"benchmark": "bench_scene25d_sequence", "blender": bpy.app.version_string,
              "machine": platform.machine(), "cpus": os.cpu_count(),
              **run(args.size[0], args.size[1], args.frames, args.repeat),
              "load_average": [round(value, 1) for value in os.getloadavg()]}   # the machine is shared
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    sys.stdout.flush()
    os._exit(0)     # skip bpy's slow shutdown


if __name__ == "__main__":
    main()
