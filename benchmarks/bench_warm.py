"""Benchmark: Depth & Normals twice in one worker, first (cold) run against the warm second run.

Two full-size random-weight Lotus-G checkpoints (SD2 UNet + SD VAE, built by bench_engine's
builder without the text tower; the normal one shares the depth one's weight files through hard
links but is a separate model to the worker) serve a Depth & Normals run as the Blender side
sends it: a depth request, then a normal request. The same runs are then repeated in a worker
whose memory budget (LOTUS_MEMORY_BUDGET_MB=1) forces the old behaviour, swapping the two
models on every request. Prints JSON.

    nice python benchmarks/bench_warm.py --cache ~/.cache/lotus-bench [--resolution 384] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import Worker, build_checkpoint, test_image  # noqa: E402

from lotus_blender import protocol  # noqa: E402
from lotus_blender.worker import memory  # noqa: E402


def normal_twin(depth_folder: Path, folder: Path) -> Path:
    """A 'normal' model with the depth model's weights (hard links, or copies across devices)."""
    if (folder / "lotus.json").is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for source in depth_folder.rglob("*"):
        target = partial / source.relative_to(depth_folder)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    (partial / "lotus.json").unlink()
    (partial / "lotus.json").write_text(json.dumps({"kind": protocol.KIND_NORMAL}))
    partial.rename(folder)
    return folder


def depth_and_normals_runs(models: dict, image_path: Path, work: Path, options: dict, runs: int,
                           budget_mb: str | None) -> dict:
    environment = dict(os.environ)
    if budget_mb:
        os.environ[memory.BUDGET_ENV] = budget_mb
    else:
        os.environ.pop(memory.BUDGET_ENV, None)
    try:
        worker = Worker(work / f"worker-warm-{budget_mb or 'auto'}.log")
    finally:
        os.environ.clear()
        os.environ.update(environment)
    results = []
    try:
        for index in range(runs):
            jobs, total = {}, 0.0
            for task in (protocol.TASK_DEPTH, protocol.TASK_NORMAL):
                job = f"{task}-{index + 1}"
                message = protocol.predict_request(job, task, {"source": str(models[task])},
                                                   [str(image_path)], str(work / "out" / job), options)
                result, elapsed = worker.request(message)
                info = result["info"]
                total += elapsed
                jobs[task] = {"request_seconds": round(elapsed, 2),
                              "load_seconds": info["load_seconds"],
                              "compute_seconds": round(sum(info["stage_seconds"].values()), 2),
                              "models_loaded": info["models_loaded"],
                              "models_in_memory": info["models_in_memory"],
                              "precision": info["precision"], "device": info["device"]}
            results.append({"run": index + 1, "seconds": round(total, 2), "jobs": jobs})
        peak = worker.peak_rss_mb()
    finally:
        worker.close()
    return {"runs": results, "peak_worker_rss_mb": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="folder for the generated checkpoints and outputs")
    parser.add_argument("--resolution", type=int, default=384)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--no-swap-baseline", action="store_true",
                        help="skip the worker forced to swap models (the behaviour before)")
    args = parser.parse_args()

    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    depth = build_checkpoint(cache / "lotus-g-sd2-random-no-text", text_encoder=False)
    models = {protocol.TASK_DEPTH: depth,
              protocol.TASK_NORMAL: normal_twin(depth, cache / "lotus-g-sd2-random-no-text-normal")}
    build_seconds = time.perf_counter() - start
    image = test_image(args.resolution)
    image = np.ascontiguousarray(image[: args.resolution * 3 // 4])  # 4:3, longest edge = resolution
    image_path = cache / f"bench-warm-input-{args.resolution}.npy"
    np.save(image_path, image)
    options = {"processing_resolution": args.resolution, "device": args.device,
               "precision": args.precision}
    import torch

    report = {"benchmark": "depth_and_normals_warm",
              "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "torch_threads": torch.get_num_threads(), "device": args.device,
                          "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
              "checkpoint_build_seconds": round(build_seconds, 1),
              "input": f"{image.shape[1]}x{image.shape[0]} at {args.resolution} px",
              "free_memory_mb_before": round((memory.free_bytes(torch.device(args.device)) or 0) / 2**20)}
    report["keep_both"] = depth_and_normals_runs(models, image_path, cache, options, args.runs, None)
    if not args.no_swap_baseline:
        report["swapping"] = depth_and_normals_runs(models, image_path, cache, options, args.runs, "1")
    def split(run):
        """Seconds of a Depth & Normals run spent loading models, and computing."""
        jobs = run["jobs"].values()
        return (round(sum(j["load_seconds"] for j in jobs), 2),
                round(sum(j["compute_seconds"] for j in jobs), 2))

    warm = report["keep_both"]["runs"]
    summary = {"first_run_seconds": warm[0]["seconds"], "first_run_load_seconds": split(warm[0])[0],
               "warm_later_run_seconds": [run["seconds"] for run in warm[1:]],
               "warm_later_run_load_seconds": [split(run)[0] for run in warm[1:]],
               "models_loaded_in_later_runs": sum(j["models_loaded"] for run in warm[1:]
                                                  for j in run["jobs"].values())}
    if "swapping" in report:
        swap = report["swapping"]["runs"]
        summary["swapping_later_run_seconds"] = [run["seconds"] for run in swap[1:]]
        summary["swapping_later_run_load_seconds"] = [split(run)[0] for run in swap[1:]]
        # Compute time is the same work in both workers; on a shared machine it is also the noise.
        summary["compute_seconds_min"] = {"keep_both": min(split(r)[1] for r in warm),
                                          "swapping": min(split(r)[1] for r in swap)}
    report["summary"] = summary
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
