"""The loaded Lotus model and how it is loaded, lean in memory.

``load_model`` reads the UNet and VAE weights chunk by chunk as real copies in channels-last
layout (peak memory = final size), uses the cached empty-prompt embedding instead of the text
encoder, and makes the VAE decoder compute its upsamplers in stripes and its ResNet blocks in
place (same numbers, smaller peak). ``LoadedModel`` runs the three stages of one prediction and
times them. engine.py drives it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoint

log = logging.getLogger("lotus.worker")

LOAD_CHUNK_BYTES = 256 * 2**20
UPSAMPLE_STRIPE_BYTES = 128 * 2**20  # largest upsampled stripe the VAE decoder may hold at once
TIMESTEP = 999  # Lotus predicts in one step, at the last timestep


class EngineError(RuntimeError):
    """A failure with a message meant for the artist."""


_SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                         "I8": 1, "U8": 1, "BOOL": 1}


def dtype_name(dtype) -> str:
    return {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}[str(dtype)]


def task_embedding():
    """The Lotus task switcher for 'annotation': [sin 1, sin 0, cos 1, cos 0], shape [1, 4]."""
    import torch

    switch = torch.tensor([[1.0, 0.0]])
    return torch.cat([torch.sin(switch), torch.cos(switch)], dim=-1)


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
    target = checkpoint.prompt_cache_target(info.folder, cache_dir)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({"prompt_embeds": embeds}, str(partial))
        os.replace(partial, target)  # another worker may read it at any moment: whole or absent
    except (OSError, SafetensorError) as ex:  # computed again next time: slower, not wrong
        partial.unlink(missing_ok=True)
        log.warning("could not cache the empty-prompt embedding in %s: %s", target, ex)
    else:
        log.info("cached the empty-prompt embedding in %s", target)
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
