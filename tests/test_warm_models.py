"""Depth & Normals stays warm: both models stay loaded when memory allows, else they swap.

LOTUS_MEMORY_BUDGET_MB caps the memory the loaded models may take; a 1 MB cap forces swapping
with the tiny checkpoints.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lotus_blender import protocol  # noqa: E402
from lotus_blender.worker import memory, warm_models  # noqa: E402
from lotus_blender.worker.engine import LotusEngine  # noqa: E402
from tests.test_engine import fail_denoise_once_out_of_memory, run, smooth_image  # noqa: E402
from tests.test_worker import WorkerProcess, predict  # noqa: E402


def depth_and_normals(engine, checkpoints, tmp_path, image):
    """One Depth & Normals run as the Blender side sends it: a depth job, then a normal job."""
    depth = run(engine, checkpoints[("G", "disparity")], tmp_path, image, task="depth")
    normal = run(engine, checkpoints[("G", "normal")], tmp_path, image, task="normal")
    return depth, normal


def loaded_stage(events):
    return "loading model" in [event[0] for event in events]


def test_second_depth_and_normals_run_loads_no_model(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    engine = LotusEngine()
    image = smooth_image(24, 32)
    first = depth_and_normals(engine, tiny_checkpoints, tmp_path, image)
    assert [info["models_loaded"] for _, info, _ in first] == [1, 1]
    second = depth_and_normals(engine, tiny_checkpoints, tmp_path, image)
    for (out1, _, _), (out2, info, events) in zip(first, second):
        assert info["models_loaded"] == 0 and info["load_seconds"] == 0.0
        assert info["models_in_memory"] == 2 and not loaded_stage(events)
        np.testing.assert_array_equal(out1, out2)
    assert engine.loads == 2


def test_low_memory_budget_falls_back_to_swapping(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv(memory.BUDGET_ENV, "1")
    engine = LotusEngine()
    image = smooth_image(24, 32)
    first = depth_and_normals(engine, tiny_checkpoints, tmp_path, image)
    second = depth_and_normals(engine, tiny_checkpoints, tmp_path, image)
    for (out1, _, _), (out2, info, events) in zip(first, second):
        assert info["models_loaded"] == 1 and info["models_in_memory"] == 1 and loaded_stage(events)
        np.testing.assert_array_equal(out1, out2)
    assert engine.loads == 4


def test_least_recently_used_model_goes_first(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    engine = LotusEngine()
    image = smooth_image(16, 16)
    a, b, c = (tiny_checkpoints[key] for key in (("G", "disparity"), ("D", "disparity"), ("G", "depth")))
    run(engine, a, tmp_path, image)
    run(engine, b, tmp_path, image)
    run(engine, a, tmp_path, image)            # a is now the most recently used
    _, info, _ = run(engine, c, tmp_path, image)  # at most two stay loaded: b goes
    assert info["models_in_memory"] == warm_models.MAX_WARM_MODELS == 2
    assert run(engine, a, tmp_path, image)[1]["models_loaded"] == 0
    assert run(engine, b, tmp_path, image)[1]["models_loaded"] == 1


def test_out_of_memory_releases_the_other_model_first(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    engine = LotusEngine()
    image = smooth_image(16, 16)
    run(engine, tiny_checkpoints[("G", "disparity")], tmp_path, image)
    failures = fail_denoise_once_out_of_memory(monkeypatch)
    out, info, _ = run(engine, tiny_checkpoints[("G", "normal")], tmp_path, image, task="normal")
    assert failures and np.isfinite(out).all() and info["models_in_memory"] == 1
    assert any(note.startswith("out of memory: released the other loaded model") for note in info["notes"])
    assert not engine.model.vae.use_tiling  # freeing the other model was enough


def test_size_estimate_matches_the_loaded_model(tiny_checkpoints, tmp_path):
    engine = LotusEngine()
    folder = tiny_checkpoints[("G", "normal")]
    run(engine, folder, tmp_path, smooth_image(16, 16), task="normal")
    measured = memory.module_bytes(engine.model.unet, engine.model.vae)
    assert memory.checkpoint_bytes(folder, itemsize=4) == measured > 0
    assert memory.checkpoint_bytes(folder, itemsize=2) < measured


def test_free_memory_is_known_and_capped_by_the_budget(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    free = memory.free_bytes(cpu)
    assert free is not None and free > 0
    monkeypatch.setenv(memory.BUDGET_ENV, "100")
    assert memory.free_bytes(cpu, loaded_bytes=30 * 2**20) == min(free, 70 * 2**20)
    monkeypatch.setenv(memory.BUDGET_ENV, "not a number")
    assert memory.budget_bytes() is None


def worker_depth_and_normals(worker, checkpoints, images, out, run_index):
    results = []
    for task, key in (("depth", ("G", "disparity")), ("normal", ("G", "normal"))):
        job = f"{task}-{run_index}"
        worker.send(predict(job, checkpoints[key], [images / "photo.npy"], out / job, task=task))
        events = worker.until(*protocol.JOB_END_EVENTS, job_id=job)
        assert events[-1]["event"] == protocol.EV_RESULT, events[-1]
        results.append(events)
    return results


@pytest.fixture
def worker_images(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    np.save(folder / "photo.npy", np.random.default_rng(0).random((24, 40, 3)).astype(np.float32))
    return folder


@pytest.mark.parametrize("budget_mb", [None, 1])
def test_worker_keeps_depth_and_normals_warm_or_swaps(tiny_checkpoints, worker_images, tmp_path,
                                                      budget_mb):
    env = {memory.BUDGET_ENV: str(budget_mb)} if budget_mb else {}
    worker = WorkerProcess(tmp_path, **env)
    try:
        assert worker.next_event()["event"] == protocol.EV_READY
        worker_depth_and_normals(worker, tiny_checkpoints, worker_images, tmp_path, 1)
        second = worker_depth_and_normals(worker, tiny_checkpoints, worker_images, tmp_path, 2)
    finally:
        worker.close()
    for events in second:
        info = events[-1]["info"]
        loaded = "loading model" in {e.get("stage") for e in events}
        if budget_mb is None:
            assert info["models_loaded"] == 0 and not loaded and info["models_in_memory"] == 2
        else:
            assert info["models_loaded"] == 1 and loaded and info["models_in_memory"] == 1
    log = worker.log_path.read_text()
    assert ("released" in log) == (budget_mb is not None)
