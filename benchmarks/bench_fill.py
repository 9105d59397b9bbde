"""Benchmark: camera moves on a photo's 2.5D scene, Fill Behind against the baselines (issue 18).

Usage:  .venv/bin/python benchmarks/bench_fill.py [--scenes room table outdoor] [--resolution 192 144]
            [--severities 0 1] [--out benchmarks/bench_fill.json] [--frames docs/screenshots]

For each Cycles scene of tests/ground_truth.py (emission-only surfaces, tests/fill_scenes.py), the
truth is rendered from the photo's camera and from moved cameras (dolly 5% and 10% of the subject
distance, orbits of 3 and 6 degrees about the subject). Build 2.5D Scene runs on the photo with the
exact maps (severity 0) or the model-like maps of tests/lotus_errors.py (severity 1), as Fill
Behind ("fill") and as the baselines: "holes" (Tear on, no fill), "rubber" (Tear off) and
"gap_fill" (Tear on plus relight's untorn copy 1% behind). Each is rendered from the same cameras.

Measured: PSNR (dB) and SSIM over the whole frame, over the frame the photo covers ("in_frame":
without the pixels a move brings in from outside the photo, which nothing fills), over the pixels
the move disoccludes ("revealed": surfaces inside the photo's frame hidden behind a nearer one)
and over the pixels the photo shows ("visible"); own-camera PSNR (the photo reproduced, whole
frame). "goal" compares fill with the best baseline per move: revealed >= +3 dB, whole frame and
in-frame >= +1 dB, visible not worse (within 0.1 dB). "fill_seconds": core.fill.fill_behind on a
1024x768 render (best of 3, this machine).
Prints one JSON object and writes it to --out; --frames writes small PNGs of one move (truth,
holes, rubber sheet, fill).
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


def _metrics(fill_scenes, render, truth, revealed, outside):
    visible = ~revealed & ~outside
    out = {}
    for key, mask in (("frame", None), ("in_frame", ~outside), ("revealed", revealed), ("visible", visible)):
        out[key] = {"psnr": round(fill_scenes.psnr(render, truth, mask), 2),
                    "ssim": round(fill_scenes.ssim(render, truth, mask), 4)}
    return out


def run_scene(addon, fill_scenes, name, resolution, severities, seed, keep_frames):
    views = fill_scenes.render_truth(name, fill_scenes.MOVES, resolution=resolution)
    photo = views["photo"]
    masks = {move: fill_scenes.disoccluded(photo, views[move]) for move in fill_scenes.MOVES}
    rows, frames = [], {}
    for severity in severities:
        lotus = fill_scenes.lotus_maps(photo, severity, seed)
        for variant in fill_scenes.VARIANTS:
            built = fill_scenes.BuiltScene(addon, photo, variant, lotus, tag=f"{name}{severity}")
            try:
                start = time.perf_counter()
                own = built.render(photo.matrix_world)
                row = {"scene": name, "severity": severity, "variant": variant,
                       "own_camera_psnr": round(fill_scenes.psnr(own, photo.combined[..., :3]), 2), "moves": {}}
                for move in fill_scenes.MOVES:
                    render = built.render(views[move].matrix_world)
                    revealed, outside = masks[move]
                    row["moves"][move] = _metrics(fill_scenes, render, views[move].combined[..., :3], revealed, outside)
                    row["moves"][move]["revealed_fraction"] = round(float(revealed.mean()), 4)
                    if keep_frames and severity == severities[0]:
                        frames[(variant, move)] = render
                row["render_seconds"] = round(time.perf_counter() - start, 2)
            finally:
                built.remove()
            rows.append(row)
    if keep_frames:
        for move in fill_scenes.MOVES:
            frames[("truth", move)] = views[move].combined[..., :3]
        frames[("truth", "photo")] = photo.combined[..., :3]
    return rows, frames


def summarise(rows, fill_scenes):
    """Per scene, severity and move: fill minus the best baseline, and whether the goal holds."""
    summary = []
    by_key = {(row["scene"], row["severity"], row["variant"]): row for row in rows}
    for scene, severity in sorted({(row["scene"], row["severity"]) for row in rows}):
        fill = by_key[(scene, severity, "fill")]
        for move in fill_scenes.MOVES:
            margins = {}
            for key in ("frame", "in_frame", "revealed", "visible"):
                best = max(by_key[(scene, severity, base)]["moves"][move][key]["psnr"]
                           for base in fill_scenes.BASELINES)
                margins[key] = round(fill["moves"][move][key]["psnr"] - best, 2)
            goal = {"revealed_3db": margins["revealed"] >= 3.0, "frame_1db": margins["frame"] >= 1.0,
                    "in_frame_1db": margins["in_frame"] >= 1.0, "visible_not_worse": margins["visible"] >= -0.1}
            summary.append({"scene": scene, "severity": severity, "move": move,
                            "fill_minus_best_baseline_db": margins, "goal": goal})
    return summary


def fill_timing(fill_scenes, core_fill, repeat=3):
    """core.fill.fill_behind at 1024x768 on the room scene (exact depth), best of `repeat`."""
    from tests import ground_truth
    photo = ground_truth.render_scene("room", resolution=(1024, 768), samples=1)
    width, height = photo.resolution
    focal = photo.lens / photo.sensor_width * max(width, height)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        layer = core_fill.fill_behind(photo.depth, photo.combined[..., :3], threshold=0.05, focal_px=focal,
                                      move_range=0.1)
        times.append(time.perf_counter() - start)
    return {"size": [width, height], "seconds": round(min(times), 3), "band_pixels": int(layer.region.sum())}


def save_frames(frames, folder, scene, move):
    """Truth | holes | rubber sheet | fill of one move, 2x, as an sRGB PNG."""
    from PIL import Image

    def srgb(values):
        values = np.clip(values, 0.0, 1.0)
        return np.where(values <= 0.0031308, 12.92 * values, 1.055 * values ** (1 / 2.4) - 0.055)

    row = np.concatenate([frames[(key, move)] for key in ("truth", "holes", "rubber", "fill")], axis=1)
    image = Image.fromarray((srgb(row) * 255 + 0.5).astype(np.uint8))
    image = image.resize((image.width * 2, image.height * 2), Image.NEAREST)
    path = Path(folder) / f"fill_{scene}_{move.replace(' ', '_').replace('%', '')}.png"
    image.save(path, optimize=True)
    return str(path.relative_to(REPO_ROOT) if path.is_absolute() and REPO_ROOT in path.parents else path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=["room", "table", "outdoor"])
    parser.add_argument("--resolution", type=int, nargs=2, default=[192, 144])
    parser.add_argument("--severities", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "bench_fill.json"))
    parser.add_argument("--frames", help="folder for PNG frames of one move per scene")
    parser.add_argument("--frame-move", default="orbit 6 deg")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    import tempfile

    import bpy
    from tests import blender_env, fill_scenes
    addon = blender_env.install_extension(Path(tempfile.mkdtemp(prefix="lotus-bench-")))
    core_fill = sys.modules[addon + ".core.fill"]
    rows, written = [], []
    for name in args.scenes:
        scene_rows, frames = run_scene(addon, fill_scenes, name, tuple(args.resolution), args.severities,
                                       args.seed, bool(args.frames))
        rows.extend(scene_rows)
        if args.frames:
            written.append(save_frames(frames, args.frames, name, args.frame_move))
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "blender": bpy.app.version_string},
              "settings": {"resolution": args.resolution, "moves": fill_scenes.MOVES, "seed": args.seed,
                           "move_range": fill_scenes.MOVE_RANGE, "tear_threshold": 0.05},
              "summary": summarise(rows, fill_scenes), "results": rows, "frames": written}
    if not args.no_timing:
        result["fill_seconds"] = fill_timing(fill_scenes, core_fill)
    text = json.dumps(result, indent=1)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
