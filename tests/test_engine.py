"""The Lotus engine on tiny random-weight checkpoints: reference math, shapes, determinism, options."""

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lotus_blender import protocol  # noqa: E402
from lotus_blender.worker import engine as engine_module  # noqa: E402
from lotus_blender.worker import model as model_module  # noqa: E402
from lotus_blender.worker.engine import LotusEngine  # noqa: E402

RES = 64  # tiny models: a 64 px processing resolution keeps every test well under a second


def run(engine, checkpoint, tmp_path, image, task="depth", name="in", **options):
    """One predict request through the engine; returns (output array, info, progress events)."""
    path = tmp_path / f"{name}.npy"
    np.save(path, image.astype(np.float32))
    options.setdefault("processing_resolution", RES)
    options.setdefault("precision", "fp32")
    events = []
    result = engine.run(request(task=task, model={"source": str(checkpoint)}, inputs=[str(path)],
                                output_dir=str(tmp_path / "out"), options=options),
                        lambda *event: events.append(event), lambda: False)
    return np.load(result.outputs[0].path), result.info.to_dict(), events


def request(**message):
    """A predict request as the worker's server hands it to the engine."""
    return protocol.PredictRequest.from_message(message)


def smooth_image(height, width, seed=0):
    """A smooth colourful test picture, top row first, in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    channels = [0.5 + 0.4 * np.sin(x / max(width, 1) * 2 * np.pi + p) * np.cos(y / max(height, 1) * np.pi + p)
                for p in phases]
    return np.stack(channels, axis=-1).astype(np.float32)

def fail_denoise_once_out_of_memory(monkeypatch) -> list:
    """The next denoise raises a CUDA out-of-memory error once; returns the list of failures."""
    failures = []
    original_denoise = model_module.LoadedModel.denoise

    def denoise(self, latent, noise=None):
        if not failures:
            failures.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original_denoise(self, latent, noise)

    monkeypatch.setattr(model_module.LoadedModel, "denoise", denoise)
    return failures



def reference_prediction(folder, image, kind, resolution, seed):
    """Lotus math written out plainly with diffusers/transformers in fp32 (independent of the engine)."""
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet").eval()
    vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae").eval()
    with torch.no_grad():
        ids = tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids
        assert ids.shape == (1, 2)
        prompt = text_encoder(ids)[0]
        h, w = image.shape[:2]
        scale = resolution / max(h, w)
        size = (int(round(h * scale / 8)) * 8, int(round(w * scale / 8)) * 8)
        rgb = torch.from_numpy(image).permute(2, 0, 1)[None] * 2 - 1
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True)
        latent = vae.encode(rgb).latent_dist.mode() * vae.config.scaling_factor
        if unet.config.in_channels == 8:
            noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
            latent = torch.cat([latent, noise], dim=1)
        task = torch.tensor([[np.sin(1.0), np.sin(0.0), np.cos(1.0), np.cos(0.0)]], dtype=torch.float32)
        pred = unet(latent, torch.tensor([999]), encoder_hidden_states=prompt, class_labels=task).sample
        decoded = vae.decode(pred / vae.config.scaling_factor).sample
        decoded = ((decoded + 1) / 2).clamp(0, 1)
        decoded = F.interpolate(decoded, size=(h, w), mode="bilinear", align_corners=False,
                                antialias=h < size[0] or w < size[1])[0]
    if kind == "normal":
        n = decoded * 2 - 1
        return (n / n.norm(dim=0, keepdim=True)).permute(1, 2, 0).numpy()
    return decoded.mean(dim=0).numpy()


@pytest.mark.parametrize("variant,kind", [("G", "disparity"), ("D", "disparity"), ("G", "normal"),
                                          ("D", "normal")])
def test_engine_matches_the_reference_math(tiny_checkpoints, tmp_path, variant, kind):
    folder = tiny_checkpoints[(variant, kind)]
    image = smooth_image(40, 56, seed=1)
    task = "normal" if kind == "normal" else "depth"
    out, info, _ = run(LotusEngine(), folder, tmp_path, image, task=task, seed=5)
    expected = reference_prediction(folder, image, kind, RES, seed=5)
    assert info["variant"] == variant and info["kind"] == kind and info["precision"] == "fp32"
    assert out.shape == expected.shape and out.dtype == np.float32
    # channels-last convolutions sum in another order; normalising amplifies that a little
    np.testing.assert_allclose(out, expected, atol=3e-4 if kind == "normal" else 2e-5)


def test_striped_vae_upsampling_is_exact(tiny_checkpoints, tmp_path, monkeypatch):
    import functools

    from diffusers.models.upsampling import Upsample2D

    torch.manual_seed(0)
    for height, width, layout, dtype in [(7, 5, torch.contiguous_format, torch.float32),
                                         (16, 9, torch.channels_last, torch.float32),
                                         (12, 12, torch.channels_last, torch.bfloat16)]:
        upsampler = Upsample2D(8, use_conv=True, out_channels=6).to(dtype)
        x = torch.randn(1, 8, height, width, dtype=dtype).contiguous(memory_format=layout)
        with torch.no_grad():
            whole = upsampler(x)
            for stripe_rows in (1, 2, 3):
                monkeypatch.setattr(model_module, "UPSAMPLE_STRIPE_BYTES",
                                    stripe_rows * 8 * 4 * width * x.element_size())
                striped = model_module._striped_upsample_forward(
                    upsampler, Upsample2D.forward.__get__(upsampler), x)
                assert striped.shape == whole.shape
                torch.testing.assert_close(striped, whole, rtol=0, atol=0)
    # End to end: one-row stripes in every decoder upsampler still give the reference result.
    monkeypatch.setattr(model_module, "UPSAMPLE_STRIPE_BYTES", 1)
    folder = tiny_checkpoints[("G", "disparity")]
    image = smooth_image(40, 56, seed=4)
    out, _, _ = run(LotusEngine(), folder, tmp_path, image, seed=2)
    np.testing.assert_allclose(out, reference_prediction(folder, image, "disparity", RES, seed=2),
                               atol=2e-5)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_lean_vae_resnet_block_gives_the_same_numbers(layout):
    import functools

    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(1)
    for in_channels, out_channels in ((8, 6), (8, 8)):
        block = ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=None,
                              groups=2, groups_out=2).eval().to(memory_format=layout)
        x = torch.randn(1, in_channels, 9, 7).contiguous(memory_format=layout)
        with torch.no_grad():
            expected = block(x, None)
            before = x.clone()
            lean = model_module._lean_resnet_forward(block, block.forward, x, None)
        assert torch.equal(x, before)  # the in-place steps never touch the block's input
        assert lean.shape == expected.shape
        torch.testing.assert_close(lean, expected, rtol=0, atol=1e-5)
        with torch.no_grad():  # blocks with a time embedding keep diffusers' own forward
            timed = ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=4,
                                  groups=2, groups_out=2).eval()
            temb = torch.randn(1, 4)
            torch.testing.assert_close(
                model_module._lean_resnet_forward(timed, functools.partial(timed.forward), x, temb),
                timed(x, temb), rtol=0, atol=0)


def test_shapes_ranges_and_meaning(tiny_checkpoints, tmp_path):
    engine = LotusEngine()
    depth, info, events = run(engine, tiny_checkpoints[("G", "disparity")], tmp_path,
                              smooth_image(30, 50))
    assert depth.shape == (30, 50) and depth.dtype == np.float32
    assert 0.0 <= depth.min() and depth.max() <= 1.0 and np.isfinite(depth).all()
    assert info["kind"] == protocol.KIND_DISPARITY
    normals, info, _ = run(engine, tiny_checkpoints[("G", "normal")], tmp_path, smooth_image(30, 50),
                           task="normal")
    assert normals.shape == (30, 50, 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)
    stages = [event[0] for event in events]
    assert stages[0] == "loading model" and stages[-1] == "done"
    assert {"encoding", "predicting", "decoding"} <= set(stages)
    fractions = [event[1] for event in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_one_pixel_image_and_native_resolution(tiny_checkpoints, tmp_path):
    engine = LotusEngine()
    out, _, _ = run(engine, tiny_checkpoints[("D", "disparity")], tmp_path, np.full((1, 1, 3), 0.3))
    assert out.shape == (1, 1) and np.isfinite(out).all()
    out, _, _ = run(engine, tiny_checkpoints[("D", "disparity")], tmp_path, smooth_image(21, 13),
                    processing_resolution=0)
    assert out.shape == (21, 13)
    assert engine_module.processing_size(21, 13, 0) == (24, 16)
    assert engine_module.processing_size(600, 800, 768) == (576, 768)


def test_determinism_and_seed(tiny_checkpoints, tmp_path):
    engine = LotusEngine()
    image = smooth_image(32, 32)
    g = tiny_checkpoints[("G", "disparity")]
    first, _, _ = run(engine, g, tmp_path, image, seed=3)
    again, _, _ = run(LotusEngine(), g, tmp_path, image, seed=3)
    other, _, _ = run(engine, g, tmp_path, image, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)  # G models see the seeded noise
    d = tiny_checkpoints[("D", "disparity")]
    d3, _, _ = run(engine, d, tmp_path, image, seed=3)
    d4, _, _ = run(engine, d, tmp_path, image, seed=4)
    np.testing.assert_array_equal(d3, d4)  # D models have no noise input
    # The noise comes from a CPU generator, so the same seed is the same noise on every device.
    np.testing.assert_array_equal(engine_module.make_noise((1, 4, 2, 2), 7).numpy(),
                                  torch.randn((1, 4, 2, 2), generator=torch.Generator().manual_seed(7)).numpy())


def test_prompt_embedding_is_cached_and_text_encoder_never_needed_again(tiny_checkpoints, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoints[("G", "normal")], folder)
    image = smooth_image(24, 24)
    first, _, _ = run(LotusEngine(), folder, tmp_path, image, task="normal")
    assert (folder / "lotus_empty_prompt.safetensors").is_file()
    shutil.rmtree(folder / "text_encoder")
    shutil.rmtree(folder / "tokenizer")
    second, _, _ = run(LotusEngine(), folder, tmp_path, image, task="normal")
    np.testing.assert_array_equal(first, second)


def test_prompt_cache_goes_to_the_cache_never_into_the_users_model_folder(tiny_checkpoints, tmp_path):
    """With a cache folder (the add-on always gives its own), the computed empty-prompt
    embedding is written there: the user's model folder stays exactly as it was."""
    folder = tmp_path / "users-model"
    shutil.copytree(tiny_checkpoints[("D", "normal")], folder)
    (folder / "lotus_empty_prompt.safetensors").unlink(missing_ok=True)  # cached by earlier tests
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    cache = tmp_path / "cache"
    engine = LotusEngine()
    path = tmp_path / "in.npy"
    np.save(path, smooth_image(16, 16))
    normal = request(task="normal", model={"source": str(folder), "cache_dir": str(cache)},
                     inputs=[str(path)], output_dir=str(tmp_path / "out"),
                     options={"processing_resolution": RES})
    engine.run(normal, lambda *event: None, lambda: False)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    cached = list((cache / "prompt_embeddings").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".safetensors"   # no partial file left
    # The cached embedding is used from now on: the text encoder is never needed again.
    shutil.rmtree(folder / "text_encoder")
    engine.warm.clear()
    engine.run(normal, lambda *event: None, lambda: False)


def test_warm_model_is_reused_and_clearing_frees_it(tiny_checkpoints, tmp_path):
    engine = LotusEngine()
    g = tiny_checkpoints[("G", "disparity")]
    _, info, _ = run(engine, g, tmp_path, smooth_image(16, 16))
    loaded = engine.model
    _, info2, events = run(engine, g, tmp_path, smooth_image(16, 16))
    assert engine.model is loaded and info2["load_seconds"] == 0.0
    assert protocol.STAGE_LOADING not in [event[0] for event in events]
    assert engine.warm.clear() and engine.model is None


def boundary_jump_ratio(values, axis_positions, axis=1):
    """Mean |difference| across the given column boundaries / mean |difference| everywhere."""
    diffs = np.abs(np.diff(values, axis=axis))
    if diffs.ndim == 3:
        diffs = diffs.mean(axis=-1)
    return diffs[:, axis_positions].mean() / diffs.mean()


def test_tiled_prediction_has_no_seams(tiny_checkpoints, tmp_path):
    engine = LotusEngine()
    image = smooth_image(48, 96, seed=2)
    normal = tiny_checkpoints[("G", "normal")]
    tiled, _, events = run(engine, normal, tmp_path, image, task="normal", tiled=True,
                           tile_size=48, tile_overlap=16)
    assert tiled.shape == (48, 96, 3)
    np.testing.assert_allclose(np.linalg.norm(tiled, axis=-1), 1.0, atol=1e-4)
    assert any(event[0].startswith("tile 3/") for event in events)
    # Hard-pasted tiles (no blending) jump at their borders; the blended result must not.
    from lotus_blender.core import tiling
    tiles = tiling.plan_tiles(48, 96, 48, 16)
    pasted = np.zeros_like(tiled)
    for index, t in enumerate(tiles):
        values, _ = engine.predict_with_recovery(engine.model, image[t.slices], 0, index, [])
        pasted[t.slices] = values
    borders = sorted({t.x0 - 1 for t in tiles if t.x0 > 0})
    assert boundary_jump_ratio(pasted, borders) > 1.2 * boundary_jump_ratio(tiled, borders)
    assert boundary_jump_ratio(tiled, borders) < 1.35
    depth, _, _ = run(engine, tiny_checkpoints[("G", "disparity")], tmp_path, image, tiled=True,
                      tile_size=48, tile_overlap=16)
    assert depth.shape == (48, 96) and 0 <= depth.min() and depth.max() <= 1


@pytest.mark.parametrize("tiled", [False, True])
def test_seamless_output_wraps_without_a_seam(tiny_checkpoints, tmp_path, tiled):
    engine = LotusEngine()
    image = smooth_image(48, 64, seed=3)
    image = image[:, ::-1] * 0.2 + np.roll(image, 20, axis=1) * 0.8  # not periodic on its own
    normal = tiny_checkpoints[("G", "normal")]
    options = dict(tiled=True, tile_size=40, tile_overlap=12) if tiled else {}
    plain, _, _ = run(engine, normal, tmp_path, image, task="normal", **options)
    seamless, _, _ = run(engine, normal, tmp_path, image, task="normal", seamless=True, **options)
    assert seamless.shape == plain.shape

    def wrap_jump(values):
        across = np.abs(values[:, 0] - values[:, -1]).mean()
        inside = np.abs(np.diff(values, axis=1)).mean()
        return across / inside

    assert wrap_jump(seamless) < 2.0
    assert wrap_jump(plain) > wrap_jump(seamless)


def test_frame_noise_does_not_depend_on_the_frames_before(tiny_checkpoints, tmp_path):
    """G models: a frame's noise comes from the seed alone, so a sequence run in one request, one
    frame per request or in another order (chunks, a resumed run) gives the same maps."""
    engine = LotusEngine()
    g = tiny_checkpoints[("G", "disparity")]
    frames = []
    for index in range(3):
        path = tmp_path / f"frame{index}.npy"
        np.save(path, smooth_image(32, 32, seed=10 + index))
        frames.append(str(path))

    def predict(inputs, name, seed=0):
        result = engine.run(request(task="depth", model={"source": str(g)}, inputs=inputs,
                                    output_dir=str(tmp_path / name),
                                    options={"processing_resolution": RES, "precision": "fp32",
                                             "seed": seed}),
                            lambda *event: None, lambda: False)
        return [np.load(o.path) for o in result.outputs]

    together = predict(frames, "together")
    alone = [predict([frame], f"alone{index}")[0] for index, frame in reversed(list(enumerate(frames)))]
    for one, other in zip(together, reversed(alone)):
        np.testing.assert_array_equal(one, other)
    assert not np.allclose(predict(frames[:1], "other-seed", seed=5)[0], together[0])  # noise matters


def test_cancel_between_stages(tiny_checkpoints, tmp_path):
    engine = LotusEngine()
    np.save(tmp_path / "a.npy", smooth_image(16, 16))
    seen = []

    def cancelled():
        return any(protocol.STEP_PREDICTING in stage for stage in seen)

    with pytest.raises(engine_module.JobCancelled):
        engine.run(request(task="depth", model={"source": str(tiny_checkpoints[("D", "disparity")])},
                           inputs=[str(tmp_path / "a.npy")] * 3, output_dir=str(tmp_path / "out"),
                           options={"processing_resolution": RES}),
                   lambda stage, *rest: seen.append(stage), cancelled)
    assert not any(protocol.STEP_DECODING in stage for stage in seen) and not (tmp_path / "out" / "a_disparity.npy").exists()


def test_non_finite_half_precision_stage_is_redone_in_fp32(tiny_checkpoints, tmp_path, monkeypatch):
    engine = LotusEngine()
    folder = tiny_checkpoints[("D", "disparity")]
    image = smooth_image(24, 24)
    reference, _, _ = run(engine, folder, tmp_path, image, precision="fp32")
    engine.warm.clear()
    original_decode = model_module.LoadedModel.decode

    def overflowing_decode(self, latent):
        decoder = self.vae.decode

        def decode(z, **kwargs):
            out = decoder(z, **kwargs)
            if z.dtype != torch.float32:  # what a half-precision overflow looks like
                out = (out[0] * float("inf"),)
            return out
        self.vae.decode = decode
        try:
            return original_decode(self, latent)
        finally:
            del self.vae.decode

    monkeypatch.setattr(model_module.LoadedModel, "decode", overflowing_decode)
    out, info, _ = run(engine, folder, tmp_path, image, precision="bf16")
    assert np.isfinite(out).all()
    assert any("decoding overflowed in bf16; redone in fp32" in note for note in info["notes"])
    assert np.abs(out - reference).max() < 0.1


def test_out_of_memory_retries_with_vae_tiling(tiny_checkpoints, tmp_path, monkeypatch):
    engine = LotusEngine()
    folder = tiny_checkpoints[("D", "normal")]
    failures = fail_denoise_once_out_of_memory(monkeypatch)
    out, info, _ = run(engine, folder, tmp_path, smooth_image(16, 16), task="normal")
    assert failures and np.isfinite(out).all()
    assert "out of GPU memory: retried with VAE tiling" in info["notes"]
    assert engine.model.vae.use_tiling


def test_options_are_validated():
    with pytest.raises(protocol.ProtocolError, match="precision"):
        protocol.PredictOptions.from_dict({"precision": "fp8"})
    with pytest.raises(model_module.EngineError, match="fp16 is not supported on the CPU"):
        engine_module.select_dtype("fp16", torch.device("cpu"))
    assert engine_module.select_device("auto").type in ("cuda", "mps", "cpu")
    # On the CPU, auto means bf16 only where oneDNN computes bf16 natively (else it is emulated, slow).
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert engine_module.select_dtype("auto", torch.device("cpu")) == \
        (torch.bfloat16 if native else torch.float32)
    assert engine_module.select_dtype("auto", torch.device("cuda")) == torch.float16
    options = protocol.PredictOptions.from_dict({"seed": "4", "tiled": True})
    assert options.seed == 4 and options.tiled and options.processing_resolution == 768
