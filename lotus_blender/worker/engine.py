"""Lotus inference: depth/disparity and normals from one image, faithful to the reference math.

One prediction (Lotus ``pipeline.py``, G and D variants):
  rgb in [0,1] -> [-1,1]; resize so the longest edge is the processing resolution (sizes divisible
  by 8); image latent = VAE posterior MODE * scaling_factor (the reference samples it; the mode makes
  the output deterministic); UNet at timestep 999 with the cached empty-prompt embedding and the task
  switcher [sin 1, sin 0, cos 1, cos 0] as ``class_labels``; G models see concat(image latent, noise
  latent), D models the image latent alone; the UNet predicts the clean latent, which is decoded and
  mapped [-1,1] -> [0,1]; bilinear resize back to the input size; depth = channel mean, normals =
  normalised 2*rgb-1 in the Lotus camera convention (+X left, +Y up, +Z toward the camera).

``LotusEngine.run`` takes a ``protocol.PredictRequest`` and returns a ``protocol.PredictResult``;
the worker's server turns the messages into these and back.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import protocol
from ..protocol import DEFAULT_RESOLUTION, PredictOptions, PredictRequest, PredictResult
from . import checkpoint, memory
from .images import read_image
from .model import EngineError, LoadedModel, StageTimes, dtype_name, load_model
from .warm_models import WarmModels

log = logging.getLogger("lotus.worker")

# Out of GPU memory, a prediction is retried at three quarters of the resolution, down to this;
# below it the job fails.
MIN_OOM_RESOLUTION = 256

# progress(stage, fraction, item, items, message): the job's progress event
Progress = Callable[[str, float, int, int, str], None]
# step(stage, fraction, message): one stage of loading the model
LoadProgress = Callable[[str, float, str], None]


class JobCancelled(Exception):
    """The job was cancelled between two stages, tiles or frames."""


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
    """bf16 where the CPU computes it natively (AVX512-BF16/AMX, as oneDNN reports), measured
    faster than fp32 at equal quality by benchmarks/bench_engine.py; fp32 where bf16 would only
    be emulated (slower than fp32)."""
    import torch

    try:
        native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native_bf16 = False
    return "bf16" if native_bf16 else "fp32"


def torch_itemsize(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


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


class LotusEngine:
    """Keeps models warm between requests (both of Depth & Normals when memory allows) and runs
    predictions on them."""

    def __init__(self):
        self.warm = WarmModels()
        self.loads = 0  # models loaded by this engine so far (a warm request loads none)

    @property
    def model(self) -> LoadedModel | None:
        """The most recently used model."""
        return self.warm.latest

    def ensure_model(self, model_spec: protocol.ModelSpec, task: str, options: PredictOptions,
                     progress: LoadProgress | None = None) -> LoadedModel:
        progress = progress or (lambda stage, fraction, message="": None)
        folder, repo_id = checkpoint.resolve_source(model_spec, progress)
        cache_dir = Path(model_spec.cache_dir) if model_spec.cache_dir else None
        kind_override = options.kind or model_spec.kind
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
        progress(protocol.STAGE_LOADING, 0.0, f"{info.repo_id or info.folder.name} ({info.variant}, "
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
        step(protocol.STEP_ENCODING)
        latent = model.encode(x)
        if model.info.variant == "G" and noise is None:
            noise = make_noise(latent.shape, seed)
        step(protocol.STEP_PREDICTING)
        predicted = model.denoise(latent, noise)
        step(protocol.STEP_DECODING)
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

    def run(self, request: PredictRequest, progress: Progress,
            cancelled: Callable[[], bool]) -> PredictResult:
        """Run one predict request: one map per input, each written into the output folder.

        ``progress(stage, fraction, item, items, message)`` reports the job; ``cancelled()`` is
        polled between stages, tiles and images (JobCancelled).
        """
        options, count = request.options, len(request.inputs)

        def check():
            if cancelled():
                raise JobCancelled()

        # 1. Prepare the output folder.
        check()
        output_dir = Path(request.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)

        # 2. Take the model warm, or load it (downloading it first where allowed). A download
        # reports its own fraction; loading is at the job's start.
        loads_before = self.loads
        model = self.ensure_model(
            request.model, request.task, options,
            lambda stage, fraction, message="": progress(
                stage, fraction if stage == protocol.STAGE_DOWNLOADING else 0.0, 0, count, message))
        notes = list(model.notes)
        model.times = StageTimes()
        outputs, used_names = [], set()
        started = time.perf_counter()
        for index, path in enumerate(request.inputs):
            # 3. Read the image.
            check()
            image = read_image(path)
            height, width = image.shape[:2]

            # 4. Predict its map: whole, tiled or seamless, out of memory retried lighter.
            # G models: the noise comes from the seed alone (make_noise), the same for every frame
            # of a clip and independent of the frames before, so a chunked or resumed sequence
            # gives the same maps as one run. (The reference's video demo also blends in the
            # previous frame's output latent; that ties a frame to the whole history before it.)
            report = _step_reporter(progress, check, index, count, Path(path).name)
            values, _ = self.predict_image(model, image, options, notes, check, report)

            # 5. Write the map (a file appears only when complete).
            target = output_dir / _map_file_name(Path(path).stem, model.info.kind, index, used_names)
            _save_map(values, target)
            outputs.append(protocol.Output(input=path, path=str(target), kind=model.info.kind,
                                           width=int(width), height=int(height)))
            progress(protocol.STAGE_DONE if index + 1 == count else protocol.STAGE_NEXT_IMAGE,
                     (index + 1) / count, index + 1, count, Path(path).name)

        # 6. Say how it ran: the model, the times, what was changed to get a result.
        for note in model.notes:
            if note not in notes:
                notes.append(note)
        info = protocol.RunInfo(
            model=model.info.repo_id or str(model.info.folder),
            variant=model.info.variant,
            kind=model.info.kind,
            device=str(model.device),
            precision=dtype_name(next(model.unet.parameters()).dtype),
            processing_resolution=options.processing_resolution,
            seed=options.seed,
            load_seconds=round(model.load_seconds, 3),
            seconds=round(time.perf_counter() - started, 3),
            stage_seconds={k: round(v, 3) for k, v in model.times.as_dict().items()},
            notes=notes,
            # What stayed warm: a warm request loaded no model (both of Depth & Normals stay
            # loaded when memory allows).
            models_loaded=self.loads - loads_before,
            models_in_memory=len(self.warm),
            **peak_memory())
        model.load_seconds = 0.0  # later requests on the warm model did not pay for loading
        return PredictResult(outputs, info)


def _step_reporter(progress: Progress, check: Callable[[], None], index: int, count: int,
                   name: str):
    """report(tile_index, tiles, step) for image ``index`` of ``count``: the job's fraction
    counts the steps of every tile; a cancel is seen at each step."""
    steps = protocol.PREDICTION_STEPS

    def report(tile_index: int, tiles: int, step: str) -> None:
        position = steps.index(step) if step in steps else 0
        within = (tile_index * len(steps) + position) / (max(tiles, 1) * len(steps))
        check()
        progress(protocol.prediction_stage(step, index + 1, count, tile_index + 1, tiles),
                 (index + within) / count, index + 1, count, name)

    return report


def _map_file_name(stem: str, kind: str, index: int, used: set) -> str:
    """"photo_disparity.npy"; the image's number is added where two inputs share a stem."""
    name = f"{stem}_{kind}.npy"
    if name in used:
        name = f"{stem}_{index + 1}_{kind}.npy"
    used.add(name)
    return name


def _save_map(values: np.ndarray, target: Path) -> None:
    temporary = target.with_name(target.name + ".partial")
    with open(temporary, "wb") as handle:
        np.save(handle, values.astype(np.float32, copy=False))
    os.replace(temporary, target)


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

