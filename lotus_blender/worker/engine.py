"""Lotus inference: depth/disparity and normals from one image, faithful to the reference math.

One prediction (Lotus ``pipeline.py``, G and D variants):
  rgb in [0,1] -> [-1,1]; resize so the longest edge is the processing resolution (sizes divisible
  by 8); image latent = VAE posterior MODE * scaling_factor (the reference samples it; the mode makes
  the output deterministic); UNet at timestep 999 with the cached empty-prompt embedding and the task
  switcher [sin 1, sin 0, cos 1, cos 0] as ``class_labels``; G models see concat(image latent, noise
  latent), D models the image latent alone; the UNet predicts the clean latent, which is decoded and
  mapped [-1,1] -> [0,1]; bilinear resize back to the input size; depth = channel mean, normals =
  normalised 2*rgb-1 in the Lotus camera convention (+X left, +Y up, +Z toward the camera).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import protocol
from . import checkpoint, memory
from .images import read_image
from .warm_models import WarmModels

log = logging.getLogger("lotus.worker")

TIMESTEP = 999
DEFAULT_RESOLUTION = 768
VIDEO_NOISE_WEIGHT = 0.9  # reference app.py: 0.9 * clip noise + 0.1 * previous frame's latent
# CPU "auto" precision: bf16 where the CPU computes it natively (AVX512-BF16/AMX, as oneDNN
# reports), measured faster than fp32 at equal quality by benchmarks/bench_engine.py; fp32 where
# bf16 would only be emulated (slower than fp32).
MIN_OOM_RESOLUTION = 256
LOAD_CHUNK_BYTES = 256 * 2**20
UPSAMPLE_STRIPE_BYTES = 128 * 2**20  # largest upsampled stripe the VAE decoder may hold at once
_SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                         "I8": 1, "U8": 1, "BOOL": 1}

Progress = Callable[[str, float, str], None]


class JobCancelled(Exception):
    """The job was cancelled between two stages, tiles or frames."""


class EngineError(RuntimeError):
    """A failure with a message meant for the artist."""


@dataclass
class PredictOptions:
    processing_resolution: int = DEFAULT_RESOLUTION
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    tiled: bool = False
    tile_size: int | None = None
    tile_overlap: int | None = None
    seamless: bool = False
    video_smoothing: bool = False
    clip: str | None = None       # requests of one clip continue its noise (one frame per request)
    kind: str | None = None

    @classmethod
    def from_dict(cls, options: dict | None) -> "PredictOptions":
        options = dict(options or {})
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            log.warning("ignoring unknown options %s", sorted(unknown))
        result = cls()
        for name in cls.__dataclass_fields__:
            if options.get(name) is not None:
                setattr(result, name, options[name])
        for name in ("processing_resolution", "seed"):
            setattr(result, name, int(getattr(result, name)))
        for name in ("tile_size", "tile_overlap"):
            if getattr(result, name) is not None:
                setattr(result, name, int(getattr(result, name)))
        if result.processing_resolution < 0:
            raise EngineError("processing resolution must be 0 (native) or positive")
        if result.device not in ("auto", "cuda", "mps", "cpu"):
            raise EngineError(f"unknown device {result.device!r}")
        if result.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise EngineError(f"unknown precision {result.precision!r}")
        if result.kind is not None and result.kind not in protocol.KINDS:
            raise EngineError(f"unknown kind {result.kind!r}")
        return result


def select_device(name: str = "auto"):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EngineError("CUDA was asked for but no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EngineError("Apple MPS was asked for but is not available")
    return torch.device(name)


def select_dtype(precision: str, device):
    import torch

    if precision == "auto":
        precision = "fp16" if device.type in ("cuda", "mps") else cpu_auto_precision()
    if precision == "fp16" and device.type == "cpu":
        raise EngineError("fp16 is not supported on the CPU; use bf16 or fp32")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def cpu_auto_precision() -> str:
    import torch

    try:
        native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native_bf16 = False
    return "bf16" if native_bf16 else "fp32"


def torch_itemsize(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def dtype_name(dtype) -> str:
    return {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}[str(dtype)]


def task_embedding():
    """The Lotus task switcher for 'annotation': [sin 1, sin 0, cos 1, cos 0], shape [1, 4]."""
    import torch

    switch = torch.tensor([[1.0, 0.0]])
    return torch.cat([torch.sin(switch), torch.cos(switch)], dim=-1)


def processing_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Longest edge = resolution (0 = native), aspect kept, both sides multiples of 8."""
    scale = 1.0 if resolution == 0 else resolution / max(height, width)
    return (max(8, int(round(height * scale / 8.0)) * 8),
            max(8, int(round(width * scale / 8.0)) * 8))


def image_to_tensor(image: np.ndarray, size: tuple[int, int]):
    """HxWx3 [0,1] -> [1,3,h,w] float32 in [-1,1] at the processing size (bilinear, antialiased)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    x = x * 2.0 - 1.0
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x


def decoded_to_output(decoded01, size: tuple[int, int], kind: str) -> np.ndarray:
    """[1,3,h,w] in [0,1] -> the output map at ``size``: HxW (depth kinds) or HxWx3 unit normals."""
    import torch
    import torch.nn.functional as F

    x = decoded01.detach().to("cpu", torch.float32)
    if tuple(x.shape[-2:]) != tuple(size):
        shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    if kind == protocol.KIND_NORMAL:
        n = x[0] * 2.0 - 1.0
        n = n / n.norm(dim=0, keepdim=True).clamp_min(1e-6)
        return np.ascontiguousarray(n.permute(1, 2, 0).numpy(), dtype=np.float32)
    return np.ascontiguousarray(x[0].mean(dim=0).clamp(0.0, 1.0).numpy(), dtype=np.float32)


def make_noise(shape, seed: int):
    """Gaussian noise from a seeded CPU generator: the same seed gives the same noise on any device."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def _is_out_of_memory(ex: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(ex, oom_type) or "out of memory" in str(ex).lower()


@dataclass
class StageTimes:
    encode: float = 0.0
    unet: float = 0.0
    decode: float = 0.0

    def as_dict(self) -> dict:
        return {"encode": self.encode, "unet": self.unet, "decode": self.decode}


@dataclass
class LoadedModel:
    """UNet + VAE on a device with the cached empty-prompt embedding (no text encoder)."""
    info: checkpoint.CheckpointInfo
    unet: object
    vae: object
    prompt_embeds: object
    device: object
    dtype: object
    load_seconds: float
    notes: list = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    # Each stage runs in its module's dtype; a non-finite result is redone in fp32 (once a module
    # overflows in half precision it stays in fp32, as diffusers' force_upcast does for VAEs).
    def _run(self, module_name: str, stage: str, fn, *tensors):
        import torch

        module = getattr(self, module_name)
        dtype = next(module.parameters()).dtype
        with torch.inference_mode():
            out = fn(*[t.to(self.device, dtype) for t in tensors])
        if torch.isfinite(out).all():
            return out
        if dtype == torch.float32:
            raise EngineError(f"the model produced invalid values (NaN/inf) while {stage}, even in fp32")
        note = f"{stage} overflowed in {dtype_name(dtype)}; redone in fp32"
        log.warning(note)
        if note not in self.notes:
            self.notes.append(note)
        setattr(self, module_name, module.to(torch.float32))
        with torch.inference_mode():
            out = fn(*[t.to(self.device, torch.float32) for t in tensors])
        if not torch.isfinite(out).all():
            raise EngineError(f"the model produced invalid values (NaN/inf) while {stage}, even in fp32")
        return out

    def _sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def encode(self, x):
        start = time.perf_counter()
        out = self._run("vae", "encoding",
                        lambda t: self.vae.encode(t).latent_dist.mode() * self.scaling_factor, x)
        self._sync()
        self.times.encode += time.perf_counter() - start
        return out

    def denoise(self, image_latent, noise=None):
        """One UNet call at t=999 predicting the clean annotation latent."""
        import torch

        start = time.perf_counter()
        batch = image_latent.shape[0]
        embeds = self.prompt_embeds.expand(batch, -1, -1)
        labels = task_embedding().expand(batch, -1)
        timestep = torch.tensor([TIMESTEP] * batch, device=self.device)

        def call(latent, emb, lab, *extra):
            model_input = torch.cat([latent, extra[0]], dim=1) if extra else latent
            return self.unet(model_input, timestep, encoder_hidden_states=emb,
                             class_labels=lab, return_dict=False)[0]

        tensors = [image_latent, embeds, labels]
        if self.info.variant == "G":
            if noise is None:
                raise EngineError("G models need a noise latent")
            tensors.append(noise)
        out = self._run("unet", "predicting", call, *tensors)
        self._sync()
        self.times.unet += time.perf_counter() - start
        return out

    def decode(self, latent):
        """Clean latent -> [1,3,h,w] float32 in [0,1]."""
        import torch

        start = time.perf_counter()
        out = self._run("vae", "decoding",
                        lambda t: self.vae.decode(t / self.scaling_factor, return_dict=False)[0],
                        latent)
        self._sync()
        self.times.decode += time.perf_counter() - start
        return ((out.to(torch.float32) + 1.0) / 2.0).clamp(0.0, 1.0)


def load_prompt_embeds(info: checkpoint.CheckpointInfo, cache_dir: Path | None):
    """The empty-prompt embedding [1, 2, C]: from its cache file, else computed once and cached."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    cached = checkpoint.prompt_cache_path(info.folder, cache_dir, must_exist=True)
    if cached is not None:
        return load_file(str(cached))["prompt_embeds"].to(torch.float32)
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(info.folder / "tokenizer"))
    ids = tokenizer("", padding="do_not_pad", truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    encoder = CLIPTextModel.from_pretrained(str(info.folder / "text_encoder"),
                                            torch_dtype=torch.float32, use_safetensors=True)
    with torch.inference_mode():
        embeds = encoder(ids)[0].to(torch.float32).contiguous()
    del encoder
    for target in checkpoint.prompt_cache_candidates(info.folder, cache_dir):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            save_file({"prompt_embeds": embeds}, str(target))
        except (OSError, SafetensorError) as ex:  # a read-only model folder: try the cache next
            log.info("cannot cache the empty-prompt embedding in %s: %s", target, ex)
            continue
        log.info("cached the empty-prompt embedding in %s", target)
        break
    else:
        log.warning("could not cache the empty-prompt embedding anywhere")
    return embeds


def _load_component(model_class, folder: Path, subfolder: str, dtype, channels_last: bool = False):
    """A diffusers model built on the meta device and filled tensor by tensor from safetensors.

    Without ``accelerate`` diffusers' from_pretrained first initialises random weights and then
    copies the checkpoint over them: twice the memory and many seconds for an 867M-parameter
    UNet. Reading one tensor at a time, cast to the target dtype, keeps the peak at the final
    size. Checkpoints whose keys need diffusers' legacy conversions go through from_pretrained.
    """
    import torch
    from safetensors import safe_open

    component = Path(folder) / subfolder
    weights = checkpoint._weights_file(component, "diffusion_pytorch_model.safetensors")
    shards = [weights] if weights.name == "diffusion_pytorch_model.safetensors" else \
        sorted(component.glob("*.safetensors"))
    with torch.device("meta"):
        model = model_class.from_config(model_class.load_config(str(component)))
    expected = set(model.state_dict())
    state = {}
    for shard in shards:
        # safe_open memory-maps the file and every page read stays in our resident memory until
        # the map closes: reopening per chunk keeps that to one chunk instead of the whole file.
        for chunk in _key_chunks(shard, expected):
            with safe_open(str(shard), framework="pt", device="cpu") as handle:
                for key in chunk:
                    # A real copy (never a view of the map), already in its final layout.
                    tensor = handle.get_tensor(key)
                    layout = torch.channels_last if channels_last and tensor.dim() == 4 \
                        else torch.contiguous_format
                    state[key] = tensor.to(dtype=dtype, memory_format=layout, copy=True)
                    del tensor
    if set(state) != expected:
        log.info("%s: checkpoint keys need conversion, using from_pretrained", subfolder)
        return model_class.from_pretrained(str(folder), subfolder=subfolder, torch_dtype=dtype,
                                           use_safetensors=True)
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [name for name, t in list(model.named_parameters()) + list(model.named_buffers())
                if t.is_meta]
    if leftover:
        raise checkpoint.CheckpointError(f"{subfolder}: weights missing for {leftover[:3]}")
    return model


def _key_chunks(shard: Path, wanted: set) -> list[list[str]]:
    """The shard's wanted tensor names in groups of about LOAD_CHUNK_BYTES."""
    from safetensors import safe_open

    chunks, current, size = [], [], 0
    with safe_open(str(shard), framework="pt", device="cpu") as handle:
        for key in handle.keys():
            if key not in wanted:
                continue
            view = handle.get_slice(key)
            nbytes = math.prod(view.get_shape()) * _SAFETENSORS_ITEMSIZE.get(view.get_dtype(), 4)
            if current and size + nbytes > LOAD_CHUNK_BYTES:
                chunks.append(current)
                current, size = [], 0
            current.append(key)
            size += nbytes
    if current:
        chunks.append(current)
    return chunks


def _striped_upsample_forward(upsampler, original_forward, hidden_states, output_size=None,
                              *args, **kwargs):
    """Nearest 2x upsampling + 3x3 convolution computed in horizontal stripes.

    The SD VAE decoder's last upsampler makes a 512-channel full-resolution tensor (1.2 GB in
    fp32 at 768 px) only to convolve it down to 256 channels. Computing each stripe of output
    rows from its input rows (one halo row each side) gives the same numbers without ever
    holding the whole upsampled tensor: the single largest allocation of a prediction.
    """
    import torch
    import torch.nn.functional as F

    conv = getattr(upsampler, "conv", None)
    batch, channels, height, width = hidden_states.shape
    row_bytes = channels * 4 * width * hidden_states.element_size()  # one input row, upsampled
    if (output_size is not None or args or kwargs or upsampler.norm is not None
            or upsampler.use_conv_transpose or not upsampler.interpolate or not upsampler.use_conv
            or not isinstance(conv, torch.nn.Conv2d) or conv.kernel_size != (3, 3)
            or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.dilation != (1, 1)
            or conv.groups != 1 or row_bytes * height <= UPSAMPLE_STRIPE_BYTES):
        return original_forward(hidden_states, output_size, *args, **kwargs)
    rows = max(1, UPSAMPLE_STRIPE_BYTES // row_bytes)
    layout = torch.channels_last if hidden_states.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format
    out = torch.empty((batch, conv.out_channels, 2 * height, 2 * width), dtype=hidden_states.dtype,
                      device=hidden_states.device).contiguous(memory_format=layout)
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        a, b = max(r0 - 1, 0), min(r1 + 1, height)
        up = F.interpolate(hidden_states[:, :, a:b], scale_factor=2.0, mode="nearest")
        # Upsampled rows [2a, 2b) -> exactly rows [2r0 - 1, 2r1 + 1), zero rows beyond the image.
        up = up[:, :, (1 if a < r0 else 0):(up.shape[2] - 1 if b > r1 else up.shape[2])]
        up = F.pad(up, (0, 0, 1 if a == r0 else 0, 1 if b == r1 else 0))
        out[:, :, 2 * r0:2 * r1] = F.conv2d(up, conv.weight, conv.bias, padding=(0, 1))
        del up
    return out


def _lean_resnet_forward(block, original_forward, input_tensor, temb=None, *args, **kwargs):
    """diffusers' ResnetBlock2D.forward for the VAE (no time embedding), holding fewer
    full-resolution tensors: SiLU in place on the fresh GroupNorm outputs, the 1x1 shortcut as a
    matmul on the channels-last data (oneDNN would copy the input first), the residual added in
    place. Same operations on the same values, so the same numbers."""
    import torch
    import torch.nn.functional as F

    if (temb is not None or args or kwargs or block.upsample is not None
            or block.downsample is not None or block.time_emb_proj is not None
            or not isinstance(block.nonlinearity, torch.nn.SiLU)):
        return original_forward(input_tensor, temb, *args, **kwargs)
    hidden = F.silu(block.norm1(input_tensor), inplace=True)
    hidden = block.conv1(hidden)
    hidden = F.silu(block.norm2(hidden), inplace=True)
    hidden = block.conv2(block.dropout(hidden))
    shortcut = input_tensor
    conv = block.conv_shortcut
    if conv is not None:
        pointwise = (isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
                     and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.groups == 1
                     and input_tensor.is_contiguous(memory_format=torch.channels_last))
        if pointwise:
            weight = conv.weight.reshape(conv.out_channels, conv.in_channels)
            shortcut = F.linear(input_tensor.permute(0, 2, 3, 1), weight, conv.bias).permute(0, 3, 1, 2)
        else:
            shortcut = conv(input_tensor)
    hidden += shortcut
    del shortcut
    if block.output_scale_factor != 1.0:
        hidden /= block.output_scale_factor
    return hidden


def _reduce_vae_peak_memory(vae) -> None:
    """Same numbers, smaller peak: the decoder's upsamplers in stripes, lean ResNet blocks, and the
    final SiLUs in place (each acts on a fresh GroupNorm output nobody else holds)."""
    import functools

    import torch
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    for coder in (vae.encoder, vae.decoder):
        for module in coder.modules():
            if isinstance(module, Upsample2D):
                module.forward = functools.partial(_striped_upsample_forward, module, module.forward)
            elif isinstance(module, ResnetBlock2D):
                module.forward = functools.partial(_lean_resnet_forward, module, module.forward)
        if isinstance(coder.conv_act, torch.nn.SiLU):
            coder.conv_act.inplace = True


def load_model(info: checkpoint.CheckpointInfo, device, dtype, cache_dir: Path | None) -> LoadedModel:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    start = time.perf_counter()
    prompt_embeds = load_prompt_embeds(info, cache_dir)
    try:
        # oneDNN convolutions on the CPU are much faster in channels-last layout (bf16 most of all).
        channels_last = device.type == "cpu"
        unet = _load_component(UNet2DConditionModel, info.folder, "unet", dtype, channels_last)
        vae = _load_component(AutoencoderKL, info.folder, "vae", dtype, channels_last)
    except (OSError, ValueError) as ex:
        raise checkpoint.CheckpointError(f"cannot load the model in {info.folder}: {ex}") from ex
    if unet.config.cross_attention_dim != prompt_embeds.shape[-1]:
        raise checkpoint.CheckpointError(
            f"the cached prompt embedding has width {prompt_embeds.shape[-1]} but the UNet expects "
            f"{unet.config.cross_attention_dim}: delete {checkpoint.EMPTY_PROMPT_FILE} to rebuild it")
    unet.eval().to(device)
    vae.eval().to(device)
    _reduce_vae_peak_memory(vae)
    if channels_last:  # weights loaded by from_pretrained (legacy keys) are not yet
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    model = LoadedModel(info=info, unet=unet, vae=vae, prompt_embeds=prompt_embeds.to(device),
                        device=device, dtype=dtype, load_seconds=0.0)
    model.load_seconds = time.perf_counter() - start
    return model


class LotusEngine:
    """Keeps models warm between requests (both of Depth & Normals when memory allows) and runs
    predictions on them."""

    def __init__(self):
        self.warm = WarmModels()
        self.loads = 0  # models loaded by this engine so far (a warm request loads none)
        # (clip id, clip noise, previous frame's latent) of the last request with a clip id.
        self._clip_state = (None, None, None)

    @property
    def model(self) -> LoadedModel | None:
        """The most recently used model."""
        return self.warm.latest

    def release(self) -> bool:
        return self.warm.clear()

    def ensure_model(self, model_spec: dict, task: str, options: PredictOptions,
                     progress: Progress | None = None) -> LoadedModel:
        progress = progress or (lambda stage, fraction, message="": None)
        folder, repo_id = checkpoint.resolve_source(model_spec, progress)
        cache_dir = Path(model_spec["cache_dir"]) if model_spec.get("cache_dir") else None
        kind_override = options.kind or model_spec.get("kind") or None
        info = checkpoint.inspect_checkpoint(folder, task, repo_id=repo_id,
                                             kind_override=kind_override,
                                             prompt_cache_dir=cache_dir)
        device = select_device(options.device)
        dtype = select_dtype(options.precision, device)
        key = (str(Path(folder).resolve()), str(device), str(dtype))
        model = self.warm.get(key)
        if model is not None:
            model.info = info  # the kind may differ by override; weights are the same
            return model
        itemsize = torch_itemsize(dtype)
        resolution = options.tile_size if options.tiled and options.tile_size else \
            options.processing_resolution
        self.warm.make_room(key, device, memory.checkpoint_bytes(folder, itemsize=itemsize),
                            memory.working_bytes(resolution, itemsize))
        progress("loading model", 0.0, f"{info.repo_id or info.folder.name} ({info.variant}, "
                                       f"{device.type}, {dtype_name(dtype)})")
        model = load_model(info, device, dtype, cache_dir)
        self.warm.add(key, model)
        self.loads += 1
        log.info("loaded %s (%s, %s) on %s %s in %.1f s", info.folder, info.variant, info.kind,
                 device, dtype_name(dtype), model.load_seconds)
        return model

    # -- one image ---------------------------------------------------------------------------

    def predict_array(self, model: LoadedModel, image: np.ndarray, resolution: int, seed: int,
                      noise=None, step: Callable[[str], None] | None = None):
        """Full-image prediction. Returns (output map at the input size, predicted latent)."""
        step = step or (lambda stage: None)
        height, width = image.shape[:2]
        x = image_to_tensor(image, processing_size(height, width, resolution))
        step("encoding")
        latent = model.encode(x)
        if model.info.variant == "G" and noise is None:
            noise = make_noise(latent.shape, seed)
        step("predicting")
        predicted = model.denoise(latent, noise)
        step("decoding")
        decoded = model.decode(predicted)
        return decoded_to_output(decoded, (height, width), model.info.kind), predicted

    def predict_with_recovery(self, model: LoadedModel, image: np.ndarray, resolution: int,
                              seed: int, notes: list, noise=None, step=None):
        """predict_array, retrying out-of-memory failures with VAE tiling, then lower resolution."""
        while True:
            try:
                return self.predict_array(model, image, resolution, seed, noise=noise, step=step)
            except JobCancelled:
                raise
            except RuntimeError as ex:
                if not _is_out_of_memory(ex):
                    raise
                released = self.warm.release_others(model)
                self._free_device_memory(model)
                if released:
                    notes.append(f"out of memory: released the other loaded model ({', '.join(released)})")
                    log.warning(notes[-1])
                    continue
                if not getattr(model.vae, "use_tiling", False):
                    model.vae.enable_tiling()
                    notes.append("out of GPU memory: retried with VAE tiling")
                    log.warning(notes[-1])
                    continue
                current = resolution or max(image.shape[:2])
                lower = int(current * 0.75) // 8 * 8
                if lower < MIN_OOM_RESOLUTION:
                    raise EngineError("out of GPU memory even at a low resolution; "
                                      "try the CPU or close other GPU programs") from ex
                notes.append(f"out of GPU memory: retried at {lower} px instead of {current} px")
                log.warning(notes[-1])
                resolution, noise = lower, None

    @staticmethod
    def _free_device_memory(model: LoadedModel):
        import gc
        gc.collect()
        if model.device.type == "cuda":
            import torch
            torch.cuda.empty_cache()

    # -- tiled and seamless ----------------------------------------------------------------------

    def predict_tiled(self, model: LoadedModel, image: np.ndarray, options: PredictOptions,
                      notes: list, check: Callable[[], None], tile_progress) -> np.ndarray:
        """Tiles at native resolution blended with smooth (raised-cosine) weights.

        Seamless: the tiles are planned on the torus, so the image's opposite edges are blended
        like any other tile border. Depth tiles are aligned (least-squares scale and shift) to a
        whole-image prediction first, as each tile's depth is only defined up to an affine map.
        """
        from ..core import tiling

        height, width = image.shape[:2]
        tile = options.tile_size or options.processing_resolution or DEFAULT_RESOLUTION
        tile = max(16, min(tile, max(height, width)))
        overlap = options.tile_overlap if options.tile_overlap is not None else tile // 4
        overlap = max(1 if options.seamless else 0, min(overlap, tile // 2))
        wrap = bool(options.seamless)
        tiles = (tiling.plan_tiles_wrapped if wrap else tiling.plan_tiles)(height, width, tile, overlap)
        is_normal = model.info.kind == protocol.KIND_NORMAL
        guide = None
        if not is_normal and len(tiles) > 1:
            check()
            guide = self.predict_whole(model, image, options.processing_resolution or DEFAULT_RESOLUTION,
                                       options, notes, lambda stage: tile_progress(0, len(tiles) + 1, stage))
        channels = 3 if is_normal else 1
        blender = tiling.TileBlender(height, width, channels, wrap=wrap)
        first = 1 if guide is not None else 0
        for index, t in enumerate(tiles):
            check()
            crop = tiling.extract_tile(image, t, wrap=wrap)
            values, _ = self.predict_with_recovery(
                model, crop, 0, options.seed + index, notes,
                step=lambda stage, i=index: tile_progress(i + first, len(tiles) + first, stage))
            if guide is not None:
                values = _align_affine(values, tiling.extract_tile(guide, t, wrap=wrap))
            blender.add(t, values.reshape(t.height, t.width, channels),
                        tiling.blend_weights(t.height, t.width, overlap))
        result = blender.result()
        if is_normal:
            result = result / np.maximum(np.linalg.norm(result, axis=-1, keepdims=True), 1e-6)
            return result.astype(np.float32)
        return np.clip(result.reshape(height, width), 0.0, 1.0).astype(np.float32)

    def predict_whole(self, model: LoadedModel, image: np.ndarray, resolution: int,
                      options: PredictOptions, notes: list, step, noise=None):
        """The whole image in one pass; seamless: on a wrap-padded copy folded back onto the torus."""
        if not options.seamless:
            values, _ = self.predict_with_recovery(model, image, resolution, options.seed, notes,
                                                   noise=noise, step=step)
            return values
        from ..core import tiling

        height, width = image.shape[:2]
        pad = min(max(8, min(height, width) // 8), height, width)
        values, _ = self.predict_with_recovery(model, tiling.pad_wrap(image, pad),
                                               resolution + 2 * pad * resolution // max(height, width)
                                               if resolution else 0,
                                               options.seed, notes, step=step)
        result = tiling.fold_wrap(values, pad)
        if model.info.kind == protocol.KIND_NORMAL:
            result = result / np.maximum(np.linalg.norm(result, axis=-1, keepdims=True), 1e-6)
        return result.astype(np.float32)

    def predict_image(self, model: LoadedModel, image: np.ndarray, options: PredictOptions,
                      notes: list, check: Callable[[], None], report, noise=None):
        """One image with the job's options (plain, tiled, seamless). Returns (map, latent or None)."""
        if options.tiled:
            return self.predict_tiled(model, image, options, notes, check, report), None
        if options.seamless:
            return self.predict_whole(model, image, options.processing_resolution, options, notes,
                                      lambda stage: report(0, 1, stage)), None
        return self.predict_with_recovery(model, image, options.processing_resolution, options.seed,
                                          notes, noise=noise, step=lambda stage: report(0, 1, stage))

    def latent_shape(self, model: LoadedModel, height: int, width: int, resolution: int):
        factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
        ph, pw = processing_size(height, width, resolution)
        return (1, int(model.vae.config.latent_channels), ph // factor, pw // factor)

    def run(self, request: dict, emit_progress, cancelled: Callable[[], bool]) -> dict:
        """Run one predict request. Returns {"outputs": [...], "info": {...}}.

        ``emit_progress(stage, fraction, item, items, message)``; ``cancelled()`` is polled between
        stages, tiles and frames.
        """
        import torch

        task = request.get("task")
        if task not in protocol.TASKS:
            raise EngineError(f"unknown task {task!r}")
        inputs = [str(p) for p in request.get("inputs") or []]
        if not inputs:
            raise EngineError("no input images given")
        output_dir = Path(request.get("output_dir") or "")
        if not str(output_dir):
            raise EngineError("no output folder given")
        options = PredictOptions.from_dict(request.get("options"))
        output_dir.mkdir(parents=True, exist_ok=True)

        def check():
            if cancelled():
                raise JobCancelled()

        check()
        loads_before = self.loads
        model = self.ensure_model(request.get("model") or {}, task, options,
                                  lambda stage, fraction, message="":
                                  emit_progress(stage, fraction if stage == "downloading model" else 0.0,
                                                0, len(inputs), message))
        notes = list(model.notes)
        model.times = StageTimes()
        kind = model.info.kind
        smoothing = bool(options.video_smoothing)
        if smoothing and (model.info.variant != "G" or options.tiled or options.seamless):
            smoothing = False
            notes.append("video smoothing needs a G model without tiling or seamless; it was skipped")
        steps = ("encoding", "predicting", "decoding")
        outputs, used_names = [], set()
        clip_noise, previous_latent = None, None
        if smoothing and options.clip and self._clip_state[0] == options.clip:
            _, clip_noise, previous_latent = self._clip_state
        started = time.perf_counter()
        for index, path in enumerate(inputs):
            check()
            image = read_image(path)
            height, width = image.shape[:2]

            def report(tile_index, tiles, stage, index=index):
                position = steps.index(stage) if stage in steps else 0
                within = (tile_index * len(steps) + position) / (max(tiles, 1) * len(steps))
                parts = []
                if len(inputs) > 1:
                    parts.append(f"image {index + 1}/{len(inputs)}")
                if tiles > 1:
                    parts.append(f"tile {tile_index + 1}/{tiles}")
                label = ", ".join(parts)
                check()
                emit_progress(f"{label}: {stage}" if label else stage,
                              (index + within) / len(inputs), index + 1, len(inputs),
                              Path(path).name)

            noise = None
            if smoothing:
                shape = self.latent_shape(model, height, width, options.processing_resolution)
                if clip_noise is None or tuple(clip_noise.shape) != shape:
                    clip_noise, previous_latent = make_noise(shape, options.seed), None
                noise = clip_noise if previous_latent is None else \
                    VIDEO_NOISE_WEIGHT * clip_noise + (1.0 - VIDEO_NOISE_WEIGHT) * previous_latent
            values, latent = self.predict_image(model, image, options, notes, check, report, noise)
            if smoothing and latent is not None:
                previous_latent = latent.detach().to("cpu", torch.float32)
            stem = Path(path).stem
            name = f"{stem}_{kind}.npy"
            if name in used_names:
                name = f"{stem}_{index + 1}_{kind}.npy"
            used_names.add(name)
            target = output_dir / name
            temporary = output_dir / (name + ".partial")
            with open(temporary, "wb") as handle:
                np.save(handle, values.astype(np.float32, copy=False))
            os.replace(temporary, target)
            outputs.append({"input": path, "path": str(target), "kind": kind,
                            "width": int(width), "height": int(height)})
            emit_progress("done" if index + 1 == len(inputs) else "next image",
                          (index + 1) / len(inputs), index + 1, len(inputs), Path(path).name)
        if smoothing and options.clip:
            self._clip_state = (options.clip, clip_noise, previous_latent)
        for note in model.notes:
            if note not in notes:
                notes.append(note)
        info = {
            "model": model.info.repo_id or str(model.info.folder),
            "variant": model.info.variant,
            "kind": kind,
            "device": str(model.device),
            "precision": dtype_name(next(model.unet.parameters()).dtype),
            "processing_resolution": options.processing_resolution,
            "seed": options.seed,
            "load_seconds": round(model.load_seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
            "stage_seconds": {k: round(v, 3) for k, v in model.times.as_dict().items()},
            "notes": notes,
            # What stayed warm: a warm request loaded no model (both of Depth & Normals stay
            # loaded when memory allows).
            "models_loaded": self.loads - loads_before,
            "models_in_memory": len(self.warm),
        }
        info.update(peak_memory())
        model.load_seconds = 0.0  # later requests on the warm model did not pay for loading
        return {"outputs": outputs, "info": info}


def peak_memory() -> dict:
    """This process's peak resident memory (and peak GPU memory on CUDA), in MB."""
    import sys

    result = {}
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result["peak_memory_mb"] = round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except ImportError:  # Windows has no resource module
        pass
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            result["peak_vram_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    return result


def _align_affine(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """values * s + t closest (least squares) to target."""
    a = values.reshape(-1).astype(np.float64)
    b = target.reshape(-1).astype(np.float64)
    design = np.stack([a, np.ones_like(a)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, b, rcond=None)
    if not np.isfinite(scale) or scale <= 0:
        scale, shift = 1.0, float(b.mean() - a.mean())
    return (values * scale + shift).astype(np.float32)

