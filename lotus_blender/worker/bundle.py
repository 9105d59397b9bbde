"""A compact, offline model bundle: fp16 UNet + VAE and the cached empty-prompt embedding.

No text encoder (the embedding is all Lotus ever needs from it) and no tokenizer, so a depth model
is about half the size of its repo in fp16. The bundle is a normal diffusers-layout folder with a
``lotus.json`` recording what it predicts, so the engine loads it like any local checkpoint.

    python -m lotus_blender.worker.bundle SOURCE OUTPUT_DIR [--cache-dir DIR] [--allow-network]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .. import protocol
from . import checkpoint

COMPONENTS = ("unet", "vae")


def _convert_component(source: Path, target: Path, weights_name: str) -> int:
    """Copy one component's config and write its weights as fp16 safetensors; returns bytes."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "config.json", target / "config.json")
    weights = checkpoint._weights_file(source, weights_name)
    shards = [weights] if weights.name == weights_name else sorted(source.glob("*.safetensors"))
    tensors = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if tensor.is_floating_point():
                    half = tensor.to(torch.float16)
                    # A weight beyond fp16's range stays fp32 rather than becoming inf.
                    tensor = half if torch.isfinite(half).all() or not torch.isfinite(tensor).all() \
                        else tensor.to(torch.float32)
                tensors[key] = tensor.contiguous()
    save_file(tensors, str(target / weights_name), metadata={"format": "pt"})
    return (target / weights_name).stat().st_size


def bundle_model(source: str, output_dir: str | Path, cache_dir: str | None = None,
                 allow_network: bool = False, kind: str | None = None, progress=print) -> Path:
    """Convert ``source`` (repo id or folder) into a compact bundle folder under ``output_dir``."""
    from safetensors.torch import save_file

    from .model import load_prompt_embeds

    folder, repo_id = checkpoint.resolve_source(
        protocol.ModelSpec(source, cache_dir or "", allow_network),
        lambda stage, fraction, message="": progress(f"{stage} {fraction:.0%} {message}"))
    repo_id = repo_id or checkpoint.repo_id_from_path(Path(folder))
    kind = checkpoint.known_kind(Path(folder), repo_id, kind)
    if kind is None:
        raise checkpoint.CheckpointError(
            f"cannot tell what {source} predicts: it is not a known Lotus repo; pass --kind")
    task = protocol.TASK_NORMAL if kind == protocol.KIND_NORMAL else protocol.TASK_DEPTH
    info = checkpoint.inspect_checkpoint(Path(folder), task, repo_id=repo_id, kind_override=kind)
    name = (repo_id.split("/", 1)[1] if repo_id else Path(folder).name) + "-fp16-bundle"
    target = Path(output_dir) / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    progress(f"bundling {repo_id or folder} ({info.variant}, {info.kind}) into {target}")
    total = 0
    for component in COMPONENTS:
        total += _convert_component(Path(folder) / component, target / component,
                                    "diffusion_pytorch_model.safetensors")
    embeds = load_prompt_embeds(info, Path(cache_dir) if cache_dir else None)
    save_file({"prompt_embeds": embeds.contiguous()}, str(target / checkpoint.EMPTY_PROMPT_FILE))
    for extra in ("model_index.json", "scheduler/scheduler_config.json"):
        if (Path(folder) / extra).is_file():
            (target / extra).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(folder) / extra, target / extra)
    metadata = {"kind": info.kind, "variant": info.variant, "source": repo_id or str(folder),
                "weights": "fp16", "text_encoder": "removed: the empty-prompt embedding is cached"}
    (target / checkpoint.METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    progress(f"bundle written: {total / 1e6:.0f} MB of weights")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lotus_blender.worker.bundle",
                                     description="Make a compact fp16 Lotus bundle (no text encoder).")
    parser.add_argument("source", help="Hugging Face repo id or local diffusers folder")
    parser.add_argument("output_dir")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face download cache")
    parser.add_argument("--allow-network", action="store_true", help="download the repo if needed")
    parser.add_argument("--kind", choices=protocol.KINDS, default=None,
                        help="what the model predicts, for folders that are not known repos")
    args = parser.parse_args(argv)
    try:
        bundle_model(args.source, args.output_dir, args.cache_dir, args.allow_network, args.kind)
    except checkpoint.CheckpointError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
