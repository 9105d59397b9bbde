"""Tiny random-weight Lotus checkpoints in the exact diffusers layout of the real repos.

The real checkpoints are Stable Diffusion 2 fine-tunes: ``model_index.json``, ``unet/``
(UNet2DConditionModel with the Lotus task "projection" class embedding, 8 input channels for
G models, 4 for D), ``vae/`` (AutoencoderKL, 8x downsampling), ``text_encoder/`` (CLIPTextModel),
``tokenizer/`` (CLIPTokenizer) and ``scheduler/`` (DDIMScheduler), all safetensors. These are the
same classes and files, only with a few thousand parameters, so tests run the real loading and
inference code in well under a second per image.

Real repos are recognised by their repo id; a local folder has no id, so by default the intended
kind is recorded in ``lotus.json`` (the file the engine reads for local folders and bundles).
``record_kind=False`` leaves it out, to test recognition without it.
"""

from __future__ import annotations

import json
from pathlib import Path

VARIANTS = ("G", "D")

KINDS = ("disparity", "depth", "normal")

# Byte-level BPE needs only the two special tokens for the empty prompt; a few letters and one
# merge make the tokenizer a real, working one for any short prompt too.
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_MERGES = [("t", "h"), ("th", "e</w>")]
# Token ids of the two specials, last in the vocabulary (text encoder configs must agree).
BOS_TOKEN_ID = len(_LETTERS) * 2 + len(_MERGES)
EOS_TOKEN_ID = BOS_TOKEN_ID + 1


def write_tokenizer(folder: Path) -> None:
    """The SD2 tokenizer folder's files (vocab.json, merges.txt, configs), with a tiny vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {}
    for letter in _LETTERS:
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    for left, right in _MERGES:
        vocab[left + right] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES), encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "!" if "!" in vocab else "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    config = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77,
                  do_lower_case=True, errors="replace", add_prefix_space=False)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def make_tiny_checkpoint(root: Path, variant: str = "G", kind: str = "disparity", seed: int = 0,
                         record_kind: bool = True) -> Path:
    """Write a tiny random-weight Lotus checkpoint under ``root`` and return its folder."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    folder = Path(root) / f"tiny-lotus-{variant.lower()}-{kind}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    text_width = 32

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=8 if variant == "G" else 4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=(2, 4),
        cross_attention_dim=text_width,
        use_linear_projection=True,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=4,
    )
    unet.save_pretrained(str(folder / "unet"), safe_serialization=True)

    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    vae.save_pretrained(str(folder / "vae"), safe_serialization=True)

    text_config = CLIPTextConfig(vocab_size=EOS_TOKEN_ID + 1,
                                 hidden_size=text_width, intermediate_size=37,
                                 num_attention_heads=4, num_hidden_layers=2,
                                 max_position_embeddings=77, projection_dim=text_width,
                                 hidden_act="gelu", bos_token_id=BOS_TOKEN_ID,
                                 eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID)
    CLIPTextModel(text_config).save_pretrained(str(folder / "text_encoder"),
                                               safe_serialization=True)
    write_tokenizer(folder / "tokenizer")

    DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                  steps_offset=1, prediction_type="sample",
                  timestep_spacing="trailing").save_pretrained(str(folder / "scheduler"))

    model_index = {
        "_class_name": "LotusGPipeline" if variant == "G" else "LotusDPipeline",
        "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2), encoding="utf-8")
    if record_kind:
        (folder / "lotus.json").write_text(json.dumps({"kind": kind}), encoding="utf-8")
    return folder


def make_tiny_checkpoints(root: Path, wanted: list[tuple[str, str]]) -> dict:
    """{(variant, kind): folder} for each wanted checkpoint. Built in this interpreter when it
    has torch, else by the worker Python (tests/run.py: LOTUS_TEST_WORKER_PYTHON)."""
    import importlib.util
    import os
    import subprocess
    import sys
    if importlib.util.find_spec("torch") is not None:
        return {key: make_tiny_checkpoint(root, variant=key[0], kind=key[1]) for key in wanted}
    worker_python = os.environ.get("LOTUS_TEST_WORKER_PYTHON")
    if not worker_python:
        raise RuntimeError("no torch here: set LOTUS_TEST_WORKER_PYTHON to a Python with torch")
    repo = str(Path(__file__).resolve().parent.parent)
    spec = ",".join(f"{variant}:{kind}" for variant, kind in wanted)
    subprocess.run([worker_python, "-m", "tests.tiny_lotus", str(root), spec], cwd=repo,
                   check=True, env=dict(os.environ, PYTHONPATH=repo))
    return {key: Path(root) / f"tiny-lotus-{key[0].lower()}-{key[1]}-seed0" for key in wanted}


if __name__ == "__main__":
    import sys
    for item in sys.argv[2].split(","):
        variant, kind = item.split(":")
        make_tiny_checkpoint(Path(sys.argv[1]), variant=variant, kind=kind)
