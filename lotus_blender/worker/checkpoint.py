"""Where a Lotus checkpoint comes from, what it is, and whether it is usable.

Sources are a Hugging Face repo id (downloaded into the caller's cache folder, only when network
use is allowed) or a local folder in diffusers layout. Checkpoints are recognised by their files:
G vs D from ``unet/config.json`` ``in_channels``; depth vs disparity vs normal from the known repo
ids, a ``lotus.json`` next to the model (written by the bundle), or an explicit override.
Only safetensors weights are ever loaded: pickle files can run code when read.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import protocol

EMPTY_PROMPT_FILE = "lotus_empty_prompt.safetensors"
METADATA_FILE = "lotus.json"
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")

# Files a Lotus repo needs (and nothing else: no pickles, no fp16 duplicates, no EMA copies).
DOWNLOAD_PATTERNS = [
    "model_index.json",
    METADATA_FILE,
    EMPTY_PROMPT_FILE,
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/*.json",
    "tokenizer/*.txt",
    "scheduler/scheduler_config.json",
]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, unsafe or not a Lotus model (one clear message)."""


class UnknownKindError(CheckpointError):
    """Nothing tells what the checkpoint predicts: the user must say (never guessed)."""

    def __init__(self, message: str, source: str):
        super().__init__(message)
        self.source = source


@dataclass(frozen=True)
class CheckpointInfo:
    folder: Path
    variant: str          # "G" (image latent + noise, 8 UNet input channels) or "D" (4)
    kind: str             # protocol.KIND_*: what the output means
    repo_id: str | None   # the Hugging Face id when known
    has_cached_prompt: bool


def is_repo_id(source: str) -> bool:
    return bool(_REPO_ID.match(source)) and not Path(source).expanduser().exists()


def _weights_file(component: Path, safetensors_name: str) -> Path:
    """The component's safetensors weights; refuse pickles, name what is missing."""
    weights = component / safetensors_name
    if weights.is_file():
        return weights
    sharded = sorted(component.glob("*.safetensors"))
    if sharded:
        return sharded[0]
    pickles = [p.name for p in component.glob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(
            f"{component.name}/ has only pickle weights ({', '.join(sorted(pickles))}); "
            "for safety only .safetensors checkpoints are loaded. Convert it to safetensors first.")
    raise CheckpointError(f"{component.name}/{safetensors_name} is missing in {component.parent}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as ex:
        raise CheckpointError(f"cannot read {path.parent.name}/{path.name}: {ex}") from ex


def repo_id_from_path(folder: Path) -> str | None:
    """The repo id of a Hugging Face cache snapshot or a folder named after a known repo."""
    for part in folder.resolve().parts:
        if part.startswith("models--"):
            return part[len("models--"):].replace("--", "/")
    for repo_id in protocol.KNOWN_CHECKPOINTS:
        if folder.name == repo_id.split("/", 1)[1]:
            return repo_id
    return None


def inspect_checkpoint(folder: Path, task: str, repo_id: str | None = None,
                       kind_override: str | None = None,
                       prompt_cache_dir: Path | None = None) -> CheckpointInfo:
    """Validate a diffusers-layout Lotus folder and tell what it predicts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder not found: {folder}")
    unet_dir = folder / "unet"
    if not (unet_dir / "config.json").is_file():
        raise CheckpointError(f"not a Lotus checkpoint: unet/config.json is missing in {folder}")
    unet_config = _read_json(unet_dir / "config.json")
    if unet_config.get("class_embed_type") != "projection" or \
            unet_config.get("projection_class_embeddings_input_dim") != 4:
        raise CheckpointError(
            f"not a Lotus checkpoint: the UNet in {folder} has no Lotus task embedding "
            "(class_embed_type 'projection' with 4 inputs); is it a plain Stable Diffusion model?")
    in_channels = unet_config.get("in_channels")
    if in_channels not in (4, 8):
        raise CheckpointError(f"unexpected UNet in_channels {in_channels!r} in {folder} "
                              "(Lotus G models have 8, D models 4)")
    variant = "G" if in_channels == 8 else "D"
    _weights_file(unet_dir, "diffusion_pytorch_model.safetensors")
    if not (folder / "vae" / "config.json").is_file():
        raise CheckpointError(f"incomplete checkpoint: vae/config.json is missing in {folder}")
    _weights_file(folder / "vae", "diffusion_pytorch_model.safetensors")

    has_cached_prompt = prompt_cache_path(folder, prompt_cache_dir, must_exist=True) is not None
    if not has_cached_prompt:
        for needed in ("text_encoder/config.json", "tokenizer"):
            if not (folder / needed).exists():
                raise CheckpointError(
                    f"incomplete checkpoint: {needed} is missing in {folder} and there is no "
                    f"cached {EMPTY_PROMPT_FILE}")
        _weights_file(folder / "text_encoder", "model.safetensors")

    repo_id = repo_id or repo_id_from_path(folder)
    kind = _recognise_kind(folder, task, repo_id, kind_override)
    return CheckpointInfo(folder=folder, variant=variant, kind=kind, repo_id=repo_id,
                          has_cached_prompt=has_cached_prompt)


def known_kind(folder: Path, repo_id: str | None, kind_override: str | None = None) -> str | None:
    """What the checkpoint predicts, if the override, lotus.json or the repo id tells; else None."""
    if kind_override:
        return kind_override
    if (Path(folder) / METADATA_FILE).is_file():
        kind = _read_json(Path(folder) / METADATA_FILE).get("kind")
        if kind:
            return kind
    return protocol.KNOWN_CHECKPOINTS.get(repo_id or "")


def _recognise_kind(folder: Path, task: str, repo_id: str | None,
                    kind_override: str | None) -> str:
    kind = known_kind(folder, repo_id, kind_override)
    if kind is None:
        # Even for normals: a depth model run as a normal model gives plausible-looking nonsense.
        source = repo_id or str(folder)
        raise UnknownKindError(
            f"cannot tell what {source} predicts: it is not a known Lotus checkpoint and has no "
            f"{METADATA_FILE}; give its kind ({' or '.join(protocol.kinds_for(task))})", source)
    if kind not in protocol.KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}, expected one of {protocol.KINDS}")
    if (kind == protocol.KIND_NORMAL) != (task == protocol.TASK_NORMAL):
        raise CheckpointError(f"{repo_id or folder.name} predicts {kind}, it cannot be used for {task}")
    return kind


def prompt_cache_path(folder: Path, cache_dir: Path | None, must_exist: bool = False) -> Path | None:
    """The existing empty-prompt embedding file (beside the model, else in the cache folder).

    With ``must_exist`` False: where to write it (see ``prompt_cache_target``).
    """
    if not must_exist:
        return prompt_cache_target(folder, cache_dir)
    return next((c for c in prompt_cache_candidates(folder, cache_dir) if c.is_file()), None)


def prompt_cache_candidates(folder: Path, cache_dir: Path | None) -> list[Path]:
    """Where the empty-prompt embedding may be read from, in order: next to the model (compact
    bundles ship it there), then the cache."""
    candidates = [Path(folder) / EMPTY_PROMPT_FILE]
    if cache_dir is not None:
        candidates.append(prompt_cache_target(folder, cache_dir))
    return candidates


def prompt_cache_target(folder: Path, cache_dir: Path | None) -> Path:
    """Where a computed embedding is written: the cache folder (the add-on's), never the user's
    own model folder; beside the model only when no cache folder is given."""
    if cache_dir is None:
        return Path(folder) / EMPTY_PROMPT_FILE
    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(Path(folder).resolve()))[-120:]
    return Path(cache_dir) / "prompt_embeddings" / f"{key}.safetensors"


def resolve_source(model: protocol.ModelSpec,
                   progress: Callable[[str, float, str], None] | None = None
                   ) -> tuple[Path, str | None]:
    """Turn the request's model into a local folder (downloading if allowed).

    Returns (folder, repo_id or None).
    """
    source = model.source
    if not source:
        raise CheckpointError("no model given")
    local = Path(source).expanduser()
    if local.exists():
        return local, None
    if not is_repo_id(source):
        raise CheckpointError(f"model folder not found: {source}")
    cache_dir = model.cache_dir or None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as ex:
        raise CheckpointError(f"huggingface_hub is not installed: {ex}") from ex
    try:
        folder = snapshot_download(source, cache_dir=cache_dir, allow_patterns=DOWNLOAD_PATTERNS,
                                   local_files_only=True)
        if (Path(folder) / "unet" / "config.json").is_file():
            return Path(folder), source
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if not model.allow_network:
        raise CheckpointError(
            f"model {source} is not downloaded and online access is off; allow online access "
            "or choose a local model folder")
    return download(source, cache_dir, progress), source


def _refuse_pickle_only_repo(repo_id: str, files: list[str]) -> None:
    for component, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")):
        if f"{component}/{name}.safetensors" in files:
            continue
        if any(f.startswith(component + "/") and f.endswith(".safetensors") for f in files):
            continue
        if any(f.startswith(component + "/") and f.endswith(PICKLE_SUFFIXES) for f in files):
            raise CheckpointError(f"{repo_id} has only pickle weights for {component}/; for safety "
                                  "only .safetensors checkpoints are loaded")
        raise CheckpointError(f"{repo_id} has no {component}/ weights: not a Lotus checkpoint")


def download(repo_id: str, cache_dir: str | None,
             progress: Callable[[str, float, str], None] | None = None) -> Path:
    """snapshot_download of the needed files, reporting progress from the bytes on disk."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except Exception as ex:  # network, auth, missing repo: all one message for the artist
        raise CheckpointError(f"cannot reach model {repo_id} on Hugging Face: {ex}") from ex
    files = {s.rfilename: (s.size or 0) for s in info.siblings or []}
    _refuse_pickle_only_repo(repo_id, list(files))
    from fnmatch import fnmatch
    total = sum(size for name, size in files.items()
                if any(fnmatch(name, pattern) for pattern in DOWNLOAD_PATTERNS)) or 1
    watch_root = Path(cache_dir) if cache_dir else None
    done = threading.Event()

    def poll():
        start = _folder_bytes(watch_root) if watch_root else 0
        while not done.wait(0.5):
            got = (_folder_bytes(watch_root) - start) if watch_root else 0
            if progress:
                progress(protocol.STAGE_DOWNLOADING, min(got / total, 1.0),
                         f"{got / 1e6:.0f} / {total / 1e6:.0f} MB")

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        folder = snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=DOWNLOAD_PATTERNS)
    except Exception as ex:
        raise CheckpointError(f"download of {repo_id} failed: {ex}") from ex
    finally:
        done.set()
        watcher.join()
    if progress:
        progress(protocol.STAGE_DOWNLOADING, 1.0, "done")
    return Path(folder)


def _folder_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    total += os.path.getsize(path)
            except OSError:
                pass
    return total
