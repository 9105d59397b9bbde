"""Benchmark: Auto focal and the automatic depth range on model-like maps (issue 14, section 2).

Usage:  .venv-blender/5.3.0/bin/python benchmarks/bench_focal.py [--cache DIR] [--seeds 4]
        [--lenses 18 24 35 50 85 135] [--resolution 1024 768] [--map-resolution 256 192]
        [--scenes ...] [--out FILE.json]

Cycles renders of the ground-truth SCENES (tests/ground_truth.py: objects, room, table, outdoor,
closeup, interior) through each lens (Blender mm on a 36 mm sensor) are cached in --cache (a
temporary folder by default; benchmarks/focal_renders.py renders them with PyPI bpy, about a
minute each on 2 cores). The photo is rendered the size of a photo (1024 x 768: the builder hands
the estimate the photo at its own size) and the maps at the size the estimate works at (256 x 192).
Each render's Depth and Normal passes are degraded by the error model of real Lotus output
(tests/lotus_errors.py) at severities 0, 0.5 and 1 with several seeds, then turned into what a
Lotus disparity model outputs (normalised inverse depth with a random scale and shift,
tests/synthetic_scenes.lotus_disparity). The photo (the Combined pass) is not degraded: it is the
input the artist has (but it has no lens distortion, which real photos have).

Prints one JSON object; per severity:
- "focal": over all cases, the fraction marked confident, "confident_within_15" (of the confident
  ones, the fraction within 15 % of the true focal: the calibration goal is >= 0.95), the median and
  90th-percentile relative error of the chosen focal (the estimate where confident, else the 50 mm
  default the builder falls back to) and of the 50 mm default alone, and per source ("lines": the
  photo's vanishing points, "maps": depth + normals) how often each was chosen;
- "man_made": the same over the scenes with straight edges (room, table, outdoor, closeup, interior),
  with "within_10" (the goal at severity 1: >= 0.70), the worst confident error (goal <= 0.25) and
  "per_lens" (within_10 and the fraction confident for each lens: where the photo has the information);
- "depth_range": the near/far ratio the builder uses (from the estimated shift where the focal and
  the shift are confident, else its default Near 2 and Depth Range 8): the fraction confident,
  "confident_within_15", median / p90 error, and the same for the default alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import focal_renders  # noqa: E402

SCENES = ("objects", "room", "table", "outdoor", "closeup", "interior")
MAN_MADE = ("room", "table", "outdoor", "closeup", "interior")   # every scene with straight edges
DEFAULT_RATIO = 2.0 / (2.0 + 8.0)      # the builder's default Near 2 and Depth Range 8


def true_shift(values, depth):
    """The shift s of the map against the true depth: 1/z = a (v + s) fitted by least squares on
    the unclipped pixels, each weighted by z (relative errors)."""
    keep = (values > 1e-3) & (values < 1 - 1e-3) & np.isfinite(depth) & (depth > 0)
    v, inverse, weight = values[keep], 1.0 / depth[keep], depth[keep]
    design = np.stack([v, np.ones_like(v)], axis=1) * weight[:, None]
    (a, b), *_ = np.linalg.lstsq(design, inverse * weight, rcond=None)
    return b / a


def ratio_of_shift(shift):
    """near/far of the builder's mapping (near at v = 1, far at v = 0)."""
    return shift / (1.0 + shift)


def evaluate_case(render, severity, seed):
    from lotus_blender.core import camera_estimate
    from tests import lotus_errors, synthetic_scenes
    depth = render["depth"].astype(np.float64)
    degraded = lotus_errors.degrade(depth, render["normals"].astype(np.float64), severity, seed)
    values = synthetic_scenes.lotus_disparity(degraded.depth, np.random.default_rng(seed))
    height, width = values.shape
    truth = float(render["focal_px"]) * width / render["photo"].shape[1]     # photo -> map pixels
    start = time.perf_counter()
    estimate = camera_estimate.estimate_camera(values, degraded.normals, "disparity", photo=render["photo"])
    elapsed = time.perf_counter() - start
    default = 50.0 / 36.0 * max(width, height)        # the 50 mm default on its 36 mm sensor
    chosen = estimate.focal_px if estimate.focal_is_confident else default
    # The depth range the builder uses: from the shift at a confident focal when that is confident,
    # else its default (a shift fitted at a guessed focal is not trusted).
    shift_truth = true_shift(values, depth)
    default_ratio_error = abs(DEFAULT_RATIO / ratio_of_shift(shift_truth) - 1.0)
    ratio_confident = bool(estimate.focal_is_confident and estimate.shift_is_confident)
    ratio_error = abs(ratio_of_shift(estimate.shift) / ratio_of_shift(shift_truth) - 1.0) \
        if ratio_confident else default_ratio_error
    return {
        "focal_error": abs(estimate.focal_px / truth - 1.0), "confident": bool(estimate.focal_is_confident),
        "source": estimate.focal_source, "chosen_error": abs(chosen / truth - 1.0),
        "default_error": abs(default / truth - 1.0),
        "ratio_error": ratio_error, "ratio_confident": ratio_confident,
        "default_ratio_error": default_ratio_error,
        "seconds": elapsed, "note": estimate.note,
    }


def _figures(rows):
    def pct(values, q):
        return round(float(np.percentile(values, q)), 3) if len(values) else None
    confident = [r for r in rows if r["confident"]]
    chosen = [r["chosen_error"] for r in rows]
    default = [r["default_error"] for r in rows]
    ratio_confident = [r for r in rows if r["ratio_confident"]]
    return {
        "cases": len(rows),
        "focal": {
            "confident": round(len(confident) / len(rows), 3),
            "confident_within_15": round(np.mean([r["focal_error"] <= 0.15 for r in confident]), 3) if confident else None,
            "confident_worst": round(max(r["focal_error"] for r in confident), 3) if confident else None,
            "within_10": round(float(np.mean([e <= 0.10 for e in chosen])), 3),
            "chosen_median": pct(chosen, 50), "chosen_p90": pct(chosen, 90),
            "default_median": pct(default, 50), "default_p90": pct(default, 90),
            "sources": {source: sum(1 for r in confident if r["source"] == source) for source in ("lines", "maps")},
        },
        "depth_range": {
            "confident": round(len(ratio_confident) / len(rows), 3),
            "confident_within_15": round(float(np.mean([r["ratio_error"] <= 0.15 for r in ratio_confident])), 3)
            if ratio_confident else None,
            "median": pct([r["ratio_error"] for r in rows], 50), "p90": pct([r["ratio_error"] for r in rows], 90),
            "default_median": pct([r["default_ratio_error"] for r in rows], 50),
            "default_p90": pct([r["default_ratio_error"] for r in rows], 90),
        },
    }


def run(cache, lenses, seeds, resolution, map_resolution, severities=(0.0, 0.5, 1.0), scenes=SCENES):
    paths = {}
    for scene in scenes:
        for lens in lenses:
            paths[scene, lens] = focal_renders.cache_path(cache, scene, lens, resolution, map_resolution)
    if not all(path.exists() for path in paths.values()):
        # Rendering needs PyPI bpy: a child process, so this one never imports it.
        subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "focal_renders.py"), str(cache),
                        "--scenes", *scenes, "--lenses", *map(str, lenses),
                        "--resolution", *map(str, resolution), "--map-resolution", *map(str, map_resolution)],
                       check=True, stdout=subprocess.DEVNULL)
    rows = []
    for (scene, lens), path in paths.items():
        render = focal_renders.load(path)
        for severity in severities:
            for seed in range(seeds):
                rows.append(dict(evaluate_case(render, severity, seed), scene=scene, lens=lens,
                                 severity=severity, seed=seed))
    settings = {"photo_resolution": list(resolution), "map_resolution": list(map_resolution),
                "lenses_mm": list(lenses), "seeds": seeds, "severities": list(severities)}
    return summarise(settings, rows)


def summarise(settings, rows):
    """The benchmark's JSON: the settings, the figures per severity and every case."""
    lenses, severities = settings["lenses_mm"], settings["severities"]
    scenes = [scene for scene in SCENES if any(r["scene"] == scene for r in rows)]
    result = dict(settings, scenes=scenes, man_made=[scene for scene in MAN_MADE if scene in scenes], per_severity={})
    for severity in severities:
        subset = [r for r in rows if r["severity"] == severity]
        entry = _figures(subset)
        man_made = [r for r in subset if r["scene"] in MAN_MADE]
        if not man_made:
            result["per_severity"][f"{severity:g}"] = entry
            continue
        entry["man_made"] = _figures(man_made)
        # Where the photo holds the information and where it does not: per lens, man-made scenes.
        entry["man_made"]["per_lens"] = {
            f"{lens:g}": {"within_10": round(float(np.mean([r["chosen_error"] <= 0.10 for r in group])), 3),
                          "confident": round(float(np.mean([r["confident"] for r in group])), 3)}
            for lens in lenses for group in [[r for r in man_made if r["lens"] == lens]] if group}
        entry["man_made"]["per_scene_within_10"] = {
            scene: round(float(np.mean([r["chosen_error"] <= 0.10 for r in group])), 3)
            for scene in MAN_MADE for group in [[r for r in man_made if r["scene"] == scene]] if group}
        result["per_severity"][f"{severity:g}"] = entry
    result["estimate_seconds_median"] = round(float(np.median([r["seconds"] for r in rows])), 3)
    result["cases"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="folder for the renders (default: a temporary one)")
    parser.add_argument("--lenses", nargs="+", type=float, default=[18, 24, 35, 50, 85, 135])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--resolution", nargs=2, type=int, default=[1024, 768], help="the photo's size")
    parser.add_argument("--map-resolution", nargs=2, type=int, default=[256, 192], help="the maps' size")
    parser.add_argument("--scenes", nargs="+", default=list(SCENES))
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="instead of running: one JSON from the cases of earlier runs with the same "
                             "settings over different scenes (runs split to fit a busy machine)")
    args = parser.parse_args(argv)
    if args.combine:
        parts = [json.loads(Path(path).read_text()) for path in args.combine]
        keys = ("photo_resolution", "map_resolution", "lenses_mm", "seeds", "severities")
        if any({k: part[k] for k in keys} != {k: parts[0][k] for k in keys} for part in parts):
            raise SystemExit("the runs to combine differ in their settings")
        text = json.dumps(summarise({k: parts[0][k] for k in keys}, [r for part in parts for r in part["cases"]]),
                          indent=1)
        if args.out:
            Path(args.out).write_text(text)
        print(text)
        return
    with tempfile.TemporaryDirectory(prefix="lotus-bench-focal-") as temporary:
        cache = Path(args.cache or temporary)
        cache.mkdir(parents=True, exist_ok=True)
        result = run(cache, args.lenses, args.seeds, tuple(args.resolution), tuple(args.map_resolution),
                     scenes=tuple(args.scenes))
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
