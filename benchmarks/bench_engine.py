"""Benchmark of the Lotus engine on a full-size random-weight SD2-architecture checkpoint.

Builds (once, cached under --cache) a Lotus-G checkpoint with the real sizes: SD2-base UNet
(320/640/1280/1280, head dims 5/10/20/20, cross-attention 1024, linear projection) plus the Lotus
task embedding, the SD VAE (128/256/512/512) and an OpenCLIP ViT-H-sized text tower (1024 wide,
23 layers). Random weights run exactly as fast as trained ones. Then, per precision, a real worker
process serves: a cold request at 512 px (model load), a warm one at 512 px and a warm one at
768 px. Finally the same 768 px image goes through a plain baseline (diffusers/transformers
calls in fp32, text encoder run every call, as a straightforward script would). Prints JSON.

    nice python benchmarks/bench_engine.py --cache ~/.cache/lotus-bench [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lotus_blender import protocol  # noqa: E402

TARGETS = {"speedup_vs_baseline_768": 2.0, "warm_overhead_fraction": 0.10,
           "peak_memory_mb": {"fp32": 5.5 * 1024, "bf16": 3.2 * 1024}}


def build_checkpoint(folder: Path, text_encoder: bool = True) -> Path:
    """Full-size random-weight Lotus-G checkpoint in the diffusers layout (skipped when cached).

    Without ``text_encoder`` the checkpoint ships a random empty-prompt embedding instead (as a
    bundled model does), so neither transformers nor the 1.4 GB text tower is needed.
    """
    if (folder / "model_index.json").is_file():
        return folder
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    partial = folder.with_name(folder.name + ".partial")
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
        norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0, upcast_attention=False,
        class_embed_type="projection", projection_class_embeddings_input_dim=4)
    unet.save_pretrained(str(partial / "unet"), safe_serialization=True)
    del unet
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=768,
        scaling_factor=0.18215)
    vae.save_pretrained(str(partial / "vae"), safe_serialization=True)
    del vae
    DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                  steps_offset=1, prediction_type="sample",
                  timestep_spacing="trailing").save_pretrained(str(partial / "scheduler"))
    if not text_encoder:
        from safetensors.torch import save_file

        save_file({"prompt_embeds": torch.randn(1, 2, 1024)}, str(partial / "lotus_empty_prompt.safetensors"))
        (partial / "model_index.json").write_text(json.dumps({
            "_class_name": "LotusGPipeline", "_diffusers_version": "0.30.0",
            "scheduler": ["diffusers", "DDIMScheduler"],
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}))
        (partial / "lotus.json").write_text(json.dumps({"kind": protocol.KIND_DISPARITY}))
        partial.rename(folder)
        return folder
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny_lotus import BOS_TOKEN_ID, EOS_TOKEN_ID, write_tokenizer

    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
        num_hidden_layers=23, max_position_embeddings=77, projection_dim=512, hidden_act="gelu",
        bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID))
    text.save_pretrained(str(partial / "text_encoder"), safe_serialization=True)
    del text
    write_tokenizer(partial / "tokenizer")
    (partial / "model_index.json").write_text(json.dumps({
        "_class_name": "LotusGPipeline", "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    (partial / "lotus.json").write_text(json.dumps({"kind": protocol.KIND_DISPARITY}))
    partial.rename(folder)
    return folder


def test_image(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return np.stack([0.5 + 0.4 * np.sin(7 * x + 3 * y), 0.5 + 0.4 * np.cos(5 * y),
                     0.5 + 0.4 * np.sin(11 * x * y)], axis=-1).astype(np.float32)


class Worker:
    def __init__(self, log_path: Path):
        # The caller's PYTHONPATH stays (packages beside the interpreter's own, e.g. on a GPU box).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lotus_blender.worker", "--log", str(log_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        ready = self.event()
        assert ready["event"] == protocol.EV_READY, ready

    def event(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the worker exited")
        return protocol.decode(line)

    def request(self, message: dict) -> tuple[dict, float]:
        start = time.perf_counter()
        self.process.stdin.write(protocol.encode(message))
        self.process.stdin.flush()
        while True:
            event = self.event()
            if event["event"] in protocol.JOB_END_EVENTS:
                elapsed = time.perf_counter() - start
                if event["event"] != protocol.EV_RESULT:
                    raise RuntimeError(f"job failed: {event}")
                return event, elapsed

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def close(self):
        self.process.stdin.write(protocol.encode(protocol.shutdown_request()))
        self.process.stdin.flush()
        self.process.wait()


def bench_engine(checkpoint: Path, work: Path, precision: str, image_path: Path, device: str) -> dict:
    worker = Worker(work / f"worker-{precision}.log")
    try:
        def run(job, resolution):
            message = protocol.predict_request(
                job, protocol.TASK_DEPTH, {"source": str(checkpoint)}, [str(image_path)],
                str(work / f"out-{precision}-{job}"),
                {"processing_resolution": resolution, "precision": precision, "device": device})
            result, elapsed = worker.request(message)
            info = result["info"]
            compute = sum(info["stage_seconds"].values())
            return {"request_seconds": round(elapsed, 2), "load_seconds": info["load_seconds"],
                    "stage_seconds": info["stage_seconds"], "compute_seconds": round(compute, 2),
                    "overhead_fraction": round((elapsed - info["load_seconds"] - compute) / compute, 4),
                    "notes": info["notes"], "output": result["outputs"][0]["path"],
                    **({"peak_vram_mb": info["peak_vram_mb"]} if "peak_vram_mb" in info else {})}

        cold = run("cold-512", 512)
        warm512 = run("warm-512", 512)
        warm768 = run("warm-768", 768)
        # A GPU picks its kernels on the first call at a new size (cuDNN autotuning): the second
        # request at the same size is the steady state an artist sees from then on.
        steady768 = run("steady-768", 768)
        steady768.pop("output")
        return {"cold_load_seconds": cold["load_seconds"], "cold_request_seconds": cold["request_seconds"],
                "warm_512": warm512, "warm_768": warm768, "steady_768": steady768,
                "peak_worker_rss_mb": worker.peak_rss_mb()}
    finally:
        worker.close()


def bench_baseline(checkpoint: Path, image: np.ndarray, resolution: int) -> dict:
    """A straightforward diffusers implementation: fp32, contiguous layout, text encoder every call."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    start = time.perf_counter()
    tokenizer = CLIPTokenizer.from_pretrained(str(checkpoint / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(checkpoint / "text_encoder")).eval()
    unet = UNet2DConditionModel.from_pretrained(str(checkpoint), subfolder="unet").eval()
    vae = AutoencoderKL.from_pretrained(str(checkpoint), subfolder="vae").eval()
    load = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        ids = tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids
        prompt = text_encoder(ids)[0]
        rgb = torch.from_numpy(image).permute(2, 0, 1)[None] * 2 - 1
        scale = resolution / max(image.shape[:2])
        size = tuple(int(round(s * scale / 8)) * 8 for s in image.shape[:2])
        rgb = F.interpolate(rgb, size=size, mode="bilinear", antialias=True)
        latent = vae.encode(rgb).latent_dist.mode() * vae.config.scaling_factor
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        task = torch.tensor([[np.sin(1.0), 0.0, np.cos(1.0), 1.0]], dtype=torch.float32)
        pred = unet(torch.cat([latent, noise], 1), torch.tensor([999]), encoder_hidden_states=prompt,
                    class_labels=task).sample
        decoded = ((vae.decode(pred / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
        depth = F.interpolate(decoded, size=image.shape[:2], mode="bilinear").mean(1)[0].numpy()
    return {"load_seconds": round(load, 2), "per_image_seconds": round(time.perf_counter() - start, 2),
            "depth": depth}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="folder for the generated checkpoint and outputs")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()

    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    checkpoint = build_checkpoint(cache / "lotus-g-sd2-random")
    build_seconds = time.perf_counter() - start
    # The empty-prompt embedding is computed once per checkpoint (text encoder), then cached:
    # time that first-use step on its own so the workers' cold loads are the everyday ones.
    from lotus_blender.worker import checkpoint as checkpoint_module
    from lotus_blender.worker.model import load_prompt_embeds

    start = time.perf_counter()
    load_prompt_embeds(checkpoint_module.inspect_checkpoint(checkpoint, protocol.TASK_DEPTH), None)
    embedding_seconds = time.perf_counter() - start
    image = test_image(1024)
    image_path = cache / "bench-input.npy"
    np.save(image_path, image)
    import torch

    report = {"machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "torch_threads": torch.get_num_threads(), "device": args.device},
              "checkpoint_build_seconds": round(build_seconds, 1),
              "prompt_embedding_seconds_first_use": round(embedding_seconds, 2),
              "input": "1024x1024 -> 768 / 512 px",
              "engine": {}}
    outputs = {}
    for precision in [p for p in args.precisions.split(",") if p]:
        result = bench_engine(checkpoint, cache, precision, image_path, args.device)
        outputs[precision] = np.load(result["warm_768"].pop("output"))
        result["warm_512"].pop("output")
        report["engine"][precision] = result
    if "fp32" in outputs and "bf16" in outputs:
        difference = np.abs(outputs["fp32"] - outputs["bf16"])
        report["bf16_vs_fp32_768"] = {"mean_abs_diff": float(difference.mean()),
                                      "max_abs_diff": float(difference.max())}
    if not args.no_baseline:
        baseline = bench_baseline(checkpoint, image, 768)
        depth = baseline.pop("depth")
        if "fp32" in outputs:
            baseline["max_abs_diff_vs_engine_fp32"] = float(np.abs(depth - outputs["fp32"]).max())
        report["baseline_fp32_768"] = baseline
        engine = report["engine"]
        fastest = min(engine, key=lambda p: engine[p]["warm_768"]["request_seconds"])
        speedup = baseline["per_image_seconds"] / engine[fastest]["warm_768"]["request_seconds"]
        report["speedup_vs_baseline_768"] = {"precision": fastest, "speedup": round(speedup, 2),
                                             "target": TARGETS["speedup_vs_baseline_768"]}
    report["targets"] = {
        precision: {"peak_rss_mb": result["peak_worker_rss_mb"],
                    "peak_target_mb": TARGETS["peak_memory_mb"].get(precision),
                    "warm_768_overhead_fraction": result["warm_768"]["overhead_fraction"],
                    "overhead_target": TARGETS["warm_overhead_fraction"]}
        for precision, result in report["engine"].items()}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
