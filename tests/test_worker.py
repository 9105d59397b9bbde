"""The worker process over its JSON-lines protocol, on tiny checkpoints.

One warm worker serves most tests (module fixture); the crash, stdin and parent tests start their own.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lotus_blender import protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENT_WAIT = 120.0  # generous: only stops a broken worker from hanging the suite, never a speed check
RES = {"processing_resolution": 64}


class WorkerProcess:
    """The worker as the Blender side starts it, with every stdout line kept for inspection."""

    def __init__(self, tmp_path: Path, **extra_env):
        self.log_path = tmp_path / "worker.log"
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **extra_env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lotus_blender.worker", "--log", str(self.log_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            cwd=str(tmp_path))
        self.raw_lines = []
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.raw_lines.append(line)
            self.events.put(protocol.decode(line))
        self.events.put(None)  # EOF

    def send(self, message: dict):
        self.process.stdin.write(protocol.encode(message))
        self.process.stdin.flush()

    def next_event(self):
        return self.events.get(timeout=EVENT_WAIT)

    def until(self, *names, job_id=None):
        """Events up to and including the first one named in ``names`` (for job_id if given)."""
        seen = []
        while True:
            event = self.next_event()
            seen.append(event)
            if event is None or (event["event"] in names and
                                 (job_id is None or event.get("id") == job_id)):
                return seen

    def close(self):
        if self.process.poll() is None:
            try:
                self.send(protocol.shutdown_request())
                self.process.wait(timeout=EVENT_WAIT)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    process = WorkerProcess(tmp_path_factory.mktemp("worker"))
    yield process
    process.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("worker-inputs")
    rng = np.random.default_rng(0)
    np.save(folder / "photo.npy", rng.random((24, 40, 3)).astype(np.float32))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return folder


def predict(job_id, source, inputs, output_dir, task="depth", **options):
    return protocol.predict_request(job_id, task, {"source": str(source)}, [str(p) for p in inputs],
                                    str(output_dir), dict(RES, **options))


def test_ready_comes_first(worker):
    ready = worker.next_event()
    assert ready["event"] == protocol.EV_READY
    assert ready["protocol"] == protocol.PROTOCOL_VERSION and ready["pid"] == worker.process.pid
    assert ready["torch"] and "cpu" in ready["devices"]


def test_predict_and_warm_second_request(worker, tiny_checkpoints, images, tmp_path):
    source = tiny_checkpoints[("G", "disparity")]
    worker.send(predict("job-1", source, [images / "photo.npy"], tmp_path))
    events = worker.until(protocol.EV_RESULT, protocol.EV_ERROR, job_id="job-1")
    result = events[-1]
    assert result["event"] == protocol.EV_RESULT, result
    progress = [e for e in events if e["event"] == protocol.EV_PROGRESS]
    assert progress[0]["stage"] == protocol.STAGE_LOADING == "loading model"
    assert set(protocol.PREDICTION_STEPS) <= {e["stage"] for e in progress}
    assert [e["fraction"] for e in progress] == sorted(e["fraction"] for e in progress)
    (output,) = result["outputs"]
    assert output["kind"] == "disparity" and (output["width"], output["height"]) == (40, 24)
    depth = np.load(output["path"])
    assert depth.shape == (24, 40) and depth.dtype == np.float32
    assert result["info"]["variant"] == "G" and result["info"]["load_seconds"] > 0

    worker.send(predict("job-2", source, [images / "photo.npy"] * 2, tmp_path / "again"))
    events = worker.until(protocol.EV_RESULT, protocol.EV_ERROR, job_id="job-2")
    assert events[-1]["event"] == protocol.EV_RESULT
    assert events[-1]["info"]["load_seconds"] == 0.0  # the model stayed warm
    assert protocol.STAGE_LOADING not in {e.get("stage") for e in events}
    assert any(e.get("stage") == "image 2/2: decoding" for e in events)
    first, second = (np.load(o["path"]) for o in events[-1]["outputs"])
    np.testing.assert_array_equal(first, depth)
    assert len({o["path"] for o in events[-1]["outputs"]}) == 2


def test_errors_are_per_job_and_the_worker_lives_on(worker, tiny_checkpoints, images, tmp_path):
    worker.send(predict("missing", tmp_path / "no-such-model", [images / "photo.npy"], tmp_path))
    error = worker.until(protocol.EV_ERROR, job_id="missing")[-1]
    assert "model folder not found" in error["message"] and "Traceback" in error["traceback"]

    worker.send(predict("corrupt", tiny_checkpoints[("D", "normal")], [images / "corrupt.png"],
                        tmp_path, task="normal"))
    error = worker.until(protocol.EV_ERROR, protocol.EV_RESULT, job_id="corrupt")[-1]
    assert error["event"] == protocol.EV_ERROR and "cannot read image corrupt.png" in error["message"]

    worker.process.stdin.write(b"this is not json\n")
    worker.process.stdin.flush()
    assert "bad request" in worker.until(protocol.EV_ERROR)[-1]["message"]
    # An op the worker does not serve is answered, not ignored (release and ping are gone:
    # releasing the model is ending the worker).
    for op in ("release", "ping"):
        worker.send({protocol.OP: op})
        assert f"unknown op {op!r}" in worker.until(protocol.EV_ERROR)[-1]["message"]
    # A request the worker cannot run ends its job with the reason; the worker lives on.
    bad = predict("bad-options", tiny_checkpoints[("D", "normal")], [images / "photo.npy"],
                  tmp_path, task="normal", precision="fp8")
    worker.send(bad)
    error = worker.until(*protocol.JOB_END_EVENTS, job_id="bad-options")[-1]
    assert error["event"] == protocol.EV_ERROR and error["message"] == "unknown precision 'fp8'"
    worker.send(dict(bad, id="no-inputs", inputs=[]))
    assert worker.until(*protocol.JOB_END_EVENTS, job_id="no-inputs")[-1]["message"] == \
        "no input images given"


def test_cancel_mid_job(worker, tiny_checkpoints, images, tmp_path):
    worker.send(predict("long", tiny_checkpoints[("G", "normal")], [images / "photo.npy"] * 200,
                        tmp_path, task="normal"))
    while True:
        event = worker.next_event()
        if event["event"] == protocol.EV_PROGRESS and event["stage"].startswith("image 2/200"):
            break
    worker.send(protocol.cancel_request("long"))
    events = worker.until(*protocol.JOB_END_EVENTS, job_id="long")
    assert events[-1]["event"] == protocol.EV_CANCELLED
    assert len(list(tmp_path.glob("*.npy"))) < 200
    # A cancel that arrives before its job starts cancels it at once.
    worker.send(protocol.cancel_request("early"))
    worker.send(predict("early", tiny_checkpoints[("G", "normal")], [images / "photo.npy"],
                        tmp_path, task="normal"))
    assert worker.until(*protocol.JOB_END_EVENTS, job_id="early")[-1]["event"] == protocol.EV_CANCELLED


def test_stdout_carries_only_protocol_lines(worker):
    assert worker.raw_lines
    for line in worker.raw_lines:
        message = json.loads(line)
        assert protocol.EVENT in message
    # The libraries' own chatter went to the log file instead.
    assert "worker ready" in worker.log_path.read_text()


def test_shutdown_exits_cleanly(worker):
    worker.send(protocol.shutdown_request())
    assert worker.process.wait(timeout=EVENT_WAIT) == 0
    assert worker.next_event() is None  # stdout closed after the last event


def test_killed_worker_gives_eof_and_next_start_works(tiny_checkpoints, images, tmp_path):
    doomed = WorkerProcess(tmp_path)
    assert doomed.next_event()["event"] == protocol.EV_READY
    doomed.send(predict("doomed", tiny_checkpoints[("D", "disparity")], [images / "photo.npy"] * 200,
                        tmp_path / "doomed"))
    while (event := doomed.next_event())["event"] != protocol.EV_PROGRESS or "image" not in event["stage"]:
        pass
    os.kill(doomed.process.pid, signal.SIGKILL)
    while (event := doomed.next_event()) is not None:
        pass  # events already in flight, then EOF
    assert doomed.process.wait() == -signal.SIGKILL

    (tmp_path / "fresh").mkdir()
    fresh = WorkerProcess(tmp_path / "fresh")
    try:
        assert fresh.next_event()["event"] == protocol.EV_READY
        fresh.send(predict("fresh", tiny_checkpoints[("D", "disparity")], [images / "photo.npy"],
                           tmp_path / "fresh-out"))
        assert fresh.until(*protocol.JOB_END_EVENTS)[-1]["event"] == protocol.EV_RESULT
    finally:
        fresh.close()
    assert fresh.process.returncode == 0


def test_worker_exits_when_stdin_closes(tmp_path):
    process = WorkerProcess(tmp_path)
    assert process.next_event()["event"] == protocol.EV_READY
    process.process.stdin.close()
    assert process.process.wait(timeout=EVENT_WAIT) == 0
    assert "stdin closed" in process.log_path.read_text()


def _process_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie has exited; only its parent's reaping is left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_exits_when_its_parent_dies(tmp_path):
    # The worker's stdin stays open (held by this test), so only the parent watch can end it.
    read_end, write_end = os.pipe()
    launcher = (
        "import os, subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-m', 'lotus_blender.worker', '--log', {str(tmp_path / 'w.log')!r},"
        " '--parent-pid', str(os.getpid())],"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n")
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdin=read_end, stdout=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    os.close(read_end)
    try:
        worker_pid = int(parent.stdout.readline())
        parent.wait()
        deadline = time.monotonic() + EVENT_WAIT
        while not _process_gone(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _process_gone(worker_pid)
        assert "is gone: exiting" in (tmp_path / "w.log").read_text()
    finally:
        os.close(write_end)
        if not _process_gone(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
