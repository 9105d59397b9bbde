"""Checkpoint recognition and validation, and input image reading (no inference here)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from lotus_blender import protocol
from lotus_blender.worker import checkpoint
from lotus_blender.worker.checkpoint import CheckpointError
from lotus_blender.worker.images import ImageReadError, read_image

# -- checkpoints -------------------------------------------------------------------------------


def copy_checkpoint(tiny_checkpoints, tmp_path, key=("G", "disparity"), name="model"):
    folder = tmp_path / name
    shutil.copytree(tiny_checkpoints[key], folder)
    return folder


def test_variant_read_from_unet_config_and_kind_from_lotus_json(tiny_checkpoints):
    for (variant, kind), folder in tiny_checkpoints.items():
        task = "normal" if kind == "normal" else "depth"
        info = checkpoint.inspect_checkpoint(folder, task)
        assert (info.variant, info.kind) == (variant, kind)


def test_kind_from_known_repo_id_and_override(tiny_checkpoints, tmp_path):
    folder = copy_checkpoint(tiny_checkpoints, tmp_path)
    (folder / "lotus.json").unlink()
    # A local folder named after nothing known: depth vs disparity cannot be guessed.
    with pytest.raises(CheckpointError, match=r"give its kind \(disparity or depth\)"):
        checkpoint.inspect_checkpoint(folder, "depth")
    info = checkpoint.inspect_checkpoint(folder, "depth", repo_id="jingheya/lotus-depth-g-v1-0")
    assert info.kind == protocol.KIND_DEPTH
    assert checkpoint.inspect_checkpoint(folder, "depth", kind_override="disparity").kind == "disparity"
    # Hugging Face cache snapshots carry the repo id in their path.
    snapshot = tmp_path / "models--jingheya--lotus-depth-d-v2-0-disparity" / "snapshots" / "abc"
    shutil.copytree(folder, snapshot)
    assert checkpoint.inspect_checkpoint(snapshot, "depth").kind == protocol.KIND_DISPARITY
    # Not even for the normal task is an unrecognised model guessed: a depth model run as a
    # normal model would give plausible nonsense.
    normal = copy_checkpoint(tiny_checkpoints, tmp_path, ("D", "normal"), "normal-model")
    (normal / "lotus.json").unlink()
    with pytest.raises(CheckpointError, match=r"give its kind \(normal\)"):
        checkpoint.inspect_checkpoint(normal, "normal")
    assert checkpoint.inspect_checkpoint(normal, "normal", kind_override="normal").kind == \
        protocol.KIND_NORMAL


def test_kind_and_task_must_agree(tiny_checkpoints):
    with pytest.raises(CheckpointError, match="predicts normal, it cannot be used for depth"):
        checkpoint.inspect_checkpoint(tiny_checkpoints[("G", "normal")], "depth")


def test_missing_model(tmp_path):
    with pytest.raises(CheckpointError, match="model folder not found"):
        checkpoint.resolve_source(protocol.ModelSpec(str(tmp_path / "nowhere")))
    with pytest.raises(CheckpointError, match="not downloaded and online access is off"):
        checkpoint.resolve_source(protocol.ModelSpec("jingheya/lotus-depth-g-v2-1-disparity",
                                                     str(tmp_path / "cache"), allow_network=False))
    with pytest.raises(CheckpointError, match="no model given"):
        checkpoint.resolve_source(protocol.ModelSpec.from_dict({}))


def test_folder_without_unet(tiny_checkpoints, tmp_path):
    folder = copy_checkpoint(tiny_checkpoints, tmp_path)
    shutil.rmtree(folder / "unet")
    with pytest.raises(CheckpointError, match=r"unet/config.json is missing"):
        checkpoint.inspect_checkpoint(folder, "depth")


def test_plain_stable_diffusion_unet_is_refused(tiny_checkpoints, tmp_path):
    folder = copy_checkpoint(tiny_checkpoints, tmp_path)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(class_embed_type=None, projection_class_embeddings_input_dim=None)
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="plain Stable Diffusion"):
        checkpoint.inspect_checkpoint(folder, "depth")


def test_pickle_only_model_is_refused(tiny_checkpoints, tmp_path):
    folder = copy_checkpoint(tiny_checkpoints, tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickle weights"):
        checkpoint.inspect_checkpoint(folder, "depth")


def test_pickle_only_repo_listing_is_refused():
    with pytest.raises(CheckpointError, match="only pickle weights for unet"):
        checkpoint._refuse_pickle_only_repo("someone/old-lotus", [
            "unet/config.json", "unet/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.safetensors"])
    checkpoint._refuse_pickle_only_repo("someone/lotus", [
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"])


def test_missing_vae_and_text_encoder(tiny_checkpoints, tmp_path):
    folder = copy_checkpoint(tiny_checkpoints, tmp_path)
    (folder / "lotus_empty_prompt.safetensors").unlink(missing_ok=True)
    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(CheckpointError, match="text_encoder/config.json is missing"):
        checkpoint.inspect_checkpoint(folder, "depth")
    shutil.rmtree(folder / "vae")
    with pytest.raises(CheckpointError, match="vae/config.json is missing"):
        checkpoint.inspect_checkpoint(folder, "depth")


def test_download_patterns_skip_pickles_and_duplicates():
    from fnmatch import fnmatch

    def wanted(name):
        return any(fnmatch(name, pattern) for pattern in checkpoint.DOWNLOAD_PATTERNS)

    assert wanted("unet/diffusion_pytorch_model.safetensors")
    assert wanted("tokenizer/vocab.json") and wanted("tokenizer/merges.txt")
    assert not wanted("unet/diffusion_pytorch_model.bin")
    assert not wanted("unet/diffusion_pytorch_model.fp16.safetensors")
    assert not wanted("text_encoder/pytorch_model.bin")
    assert checkpoint.is_repo_id("jingheya/lotus-normal-g-v1-1")
    assert not checkpoint.is_repo_id("/abs/folder")


# -- images --------------------------------------------------------------------------------------


def test_npy_inputs(tmp_path):
    rgba = np.random.default_rng(0).random((5, 7, 4)).astype(np.float32)
    np.save(tmp_path / "rgba.npy", rgba)
    image = read_image(tmp_path / "rgba.npy")
    assert image.shape == (5, 7, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(image, rgba[:, :, :3])
    wild = np.full((2, 2, 3), np.nan, dtype=np.float32)
    wild[0, 0] = [2.0, -1.0, np.inf]
    np.save(tmp_path / "wild.npy", wild)
    cleaned = read_image(tmp_path / "wild.npy")
    assert np.isfinite(cleaned).all() and cleaned.min() >= 0 and cleaned.max() <= 1
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 5), dtype=np.float32))
    with pytest.raises(ImageReadError, match="HxWx3"):
        read_image(tmp_path / "bad.npy")


def test_pillow_inputs_rgba_grey_palette_16bit(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb8 = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    rgba = np.concatenate([rgb8, np.full((6, 8, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), rgb8 / 255.0, atol=1e-6)

    grey = (rng.random((6, 8)) * 255).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (6, 8, 3)
    np.testing.assert_allclose(out[:, :, 1], grey / 255.0, atol=1e-6)

    grey16 = (rng.random((6, 8)) * 65535).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    np.testing.assert_allclose(read_image(tmp_path / "grey16.png")[:, :, 0], grey16 / 65535.0, atol=1e-6)

    Image.fromarray(rgb8, "RGB").quantize(colors=16).save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (6, 8, 3)
    ramp = np.broadcast_to(np.linspace(0, 255, 8, dtype=np.uint8)[None, :, None], (6, 8, 3)).copy()
    Image.fromarray(ramp, "RGB").save(tmp_path / "photo.jpg", quality=95)
    np.testing.assert_allclose(read_image(tmp_path / "photo.jpg"), ramp / 255.0, atol=0.05)
    for suffix in ("tif", "bmp", "webp"):
        Image.fromarray(rgb8, "RGB").save(tmp_path / f"photo.{suffix}")
        assert read_image(tmp_path / f"photo.{suffix}").shape == (6, 8, 3)


def test_one_pixel_image(tmp_path):
    from PIL import Image

    Image.fromarray(np.array([[[10, 20, 30]]], dtype=np.uint8)).save(tmp_path / "dot.png")
    np.testing.assert_allclose(read_image(tmp_path / "dot.png"), [[[10 / 255, 20 / 255, 30 / 255]]],
                               atol=1e-6)


def test_corrupt_empty_and_missing_images(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageReadError, match="cannot read image corrupt.png"):
        read_image(tmp_path / "corrupt.png")
    (tmp_path / "corrupt.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ImageReadError, match="cannot read corrupt.npy"):
        read_image(tmp_path / "corrupt.npy")
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")


# -- bundle --------------------------------------------------------------------------------------


def test_bundle_is_fp16_without_text_encoder_and_predicts_the_same(tiny_checkpoints, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open

    from lotus_blender.worker.bundle import bundle_model
    from lotus_blender.worker.engine import LotusEngine

    source = tiny_checkpoints[("G", "normal")]
    bundle = bundle_model(str(source), tmp_path / "bundles", progress=lambda message: None)
    assert not (bundle / "text_encoder").exists() and not (bundle / "tokenizer").exists()
    assert (bundle / "lotus_empty_prompt.safetensors").is_file()
    assert json.loads((bundle / "lotus.json").read_text())["kind"] == "normal"
    with safe_open(str(bundle / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}
    info = checkpoint.inspect_checkpoint(bundle, "normal")
    assert (info.variant, info.kind, info.has_cached_prompt) == ("G", "normal", True)

    np.save(tmp_path / "in.npy", np.random.default_rng(0).random((16, 24, 3)).astype(np.float32))

    def predict(folder):
        result = LotusEngine().run(
            protocol.PredictRequest.from_message(
                {"task": "normal", "model": {"source": str(folder)},
                 "inputs": [str(tmp_path / "in.npy")], "output_dir": str(tmp_path / folder.name),
                 "options": {"processing_resolution": 32, "precision": "fp32"}}),
            lambda *event: None, lambda: False)
        return np.load(result.outputs[0].path)

    np.testing.assert_allclose(predict(bundle), predict(source), atol=2e-2)

    unknown = copy_checkpoint(tiny_checkpoints, tmp_path, ("D", "disparity"), "anonymous")
    (unknown / "lotus.json").unlink()
    with pytest.raises(CheckpointError, match="pass --kind"):
        bundle_model(str(unknown), tmp_path / "bundles", progress=lambda message: None)


def test_download_only_when_allowed_with_progress(tiny_checkpoints, tmp_path, monkeypatch):
    import time
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    source = tiny_checkpoints[("G", "disparity")]
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.name != "lotus.json")
    repo_id = "jingheya/lotus-depth-g-v2-1-disparity"
    cache = tmp_path / "hub"
    snapshot = cache / "models--jingheya--lotus-depth-g-v2-1-disparity" / "snapshots" / "abc123"
    calls = []

    class FakeApi:
        def model_info(self, repo, files_metadata=False):
            return SimpleNamespace(siblings=[
                SimpleNamespace(rfilename=str(p.relative_to(source)), size=p.stat().st_size)
                for p in files] + [SimpleNamespace(rfilename="unet/diffusion_pytorch_model.bin",
                                                   size=10**9)])

    def fake_snapshot_download(repo, cache_dir=None, allow_patterns=None, local_files_only=False,
                               **kwargs):
        calls.append((repo, local_files_only, tuple(allow_patterns or ())))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        for path in files:  # arrives over "the network", slowly enough for the progress poll
            target = snapshot / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            time.sleep(0.15)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = protocol.ModelSpec(repo_id, str(cache), allow_network=False)
    with pytest.raises(CheckpointError, match="online access is off"):
        checkpoint.resolve_source(model)
    assert calls == [(repo_id, True, tuple(checkpoint.DOWNLOAD_PATTERNS))]

    events = []
    folder, resolved_id = checkpoint.resolve_source(dataclasses.replace(model, allow_network=True),
                                                    lambda *event: events.append(event))
    assert folder == snapshot and resolved_id == repo_id
    assert calls[-1][1] is False
    fractions = [fraction for stage, fraction, _ in events if stage == protocol.STAGE_DOWNLOADING]
    assert len(fractions) >= 2 and fractions[-1] == 1.0 and 0 < fractions[0] < 1
    # The registry knows this repo id: a disparity model, G from its UNet.
    info = checkpoint.inspect_checkpoint(folder, "depth", repo_id=resolved_id)
    assert (info.variant, info.kind) == ("G", "disparity")
