"""The worker process: JSON-lines requests on stdin, events on stdout (see ``protocol``).

Started as ``python -m lotus_blender.worker --log LOGFILE`` with PYTHONPATH holding the folder
that contains the package. The model stays warm between requests. Requests are read on a thread
so that ``cancel`` is seen while a job runs. The process exits on ``shutdown``, when its stdin
closes, or when its parent process dies. Messages become the engine's dataclasses here and back.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
import traceback

from .. import protocol

log = logging.getLogger("lotus.worker")

# What a job needs in the worker's Python besides the standard library.
REQUIRED_MODULES = ("numpy", "torch", "diffusers", "safetensors", "huggingface_hub")


def missing_modules() -> list[str]:
    """The required modules this Python cannot import (torch is imported: a broken install counts
    as missing; the others are only looked up, importing them is the engine's job)."""
    import importlib.util

    missing = []
    for name in REQUIRED_MODULES:
        if name == "torch":
            try:
                import torch  # noqa: F401  (already imported by the ready report when present)
            except (ImportError, OSError):
                missing.append(name)
        elif importlib.util.find_spec(name) is None:
            missing.append(name)
    return missing

PARENT_POLL_SECONDS = 1.0


class EventWriter:
    """The only writer of the protocol stream (a private handle on the original stdout)."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        data = protocol.encode(message)
        with self._lock:
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The parent is gone; nothing left to tell.
                os._exit(0)


def take_over_stdio(log_path: str | None):
    """Keep a private handle on stdout for events and send everything else to the log.

    Libraries print progress bars and warnings to stdout/stderr, some from C code, so the file
    descriptors themselves are redirected, not just sys.stdout.
    """
    protocol_fd = os.dup(1)
    if log_path:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 2)
        os.close(log_fd)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    return os.fdopen(protocol_fd, "wb", buffering=0)


class Worker:
    def __init__(self, events: EventWriter, log_path: str | None):
        self.events = events
        self.log_path = log_path
        self.requests: queue.Queue = queue.Queue()
        self.cancelled_ids: set = set()
        self.cancel_lock = threading.Lock()
        self.stopping = threading.Event()
        self.engine = None
        self.requirements_met = False

    # -- threads -----------------------------------------------------------------------------

    def read_requests(self, stdin) -> None:
        for raw in iter(stdin.readline, b""):
            if not raw.strip():
                continue
            try:
                message = protocol.decode(raw)
            except protocol.ProtocolError as ex:
                self.events.send(protocol.error_event(None, f"bad request: {ex}"))
                continue
            op = message.get(protocol.OP)
            if op == protocol.OP_CANCEL:
                with self.cancel_lock:
                    self.cancelled_ids.add(message.get("id"))
            elif op in protocol.REQUEST_OPS:
                self.requests.put(message)
            else:
                self.events.send(protocol.error_event(message.get("id"), f"unknown op {op!r}"))
        log.info("stdin closed: stopping")
        self.stop()

    def watch_parent(self, parent_pid: int) -> None:
        # An orphan is adopted by another process, so a changed parent id means ours died.
        while True:
            if os.getppid() != parent_pid:
                log.info("parent process %s is gone: exiting", parent_pid)
                logging.shutdown()
                os._exit(0)
            if self.stopping.wait(PARENT_POLL_SECONDS):
                return

    def stop(self) -> None:
        self.stopping.set()
        self.requests.put(protocol.shutdown_request())

    # -- requests ----------------------------------------------------------------------------

    def is_cancelled(self, job_id) -> bool:
        if self.stopping.is_set():
            return True
        with self.cancel_lock:
            return job_id in self.cancelled_ids

    def serve(self) -> int:
        while True:
            message = self.requests.get()
            op = message.get(protocol.OP)
            if op == protocol.OP_SHUTDOWN:
                log.info("shutdown")
                return 0
            if op == protocol.OP_PREDICT:
                self.predict(message)

    def predict(self, message: dict) -> None:
        job_id = message.get("id")
        if self.is_cancelled(job_id):
            self.events.send(protocol.cancelled_event(job_id))
            return
        started = time.perf_counter()
        if not self.requirements_met:
            missing = missing_modules()
            if missing:
                # The client knows how this Python was chosen and words the fix; this message is
                # for any other client.
                log.warning("job %s: this Python lacks %s", job_id, ", ".join(missing))
                self.events.send(protocol.error_event(
                    job_id, f"the worker's Python ({sys.executable}) lacks {', '.join(missing)}, "
                            f"needed to run Lotus", missing=missing))
                return
            self.requirements_met = True
        try:
            from .checkpoint import CheckpointError, UnknownKindError
            from .engine import JobCancelled, LotusEngine
            from .images import ImageReadError
            from .model import EngineError
        except ImportError as ex:
            self.events.send(protocol.error_event(
                job_id, f"the worker's Python lacks a package it needs: {ex}",
                traceback.format_exc()))
            return
        if self.engine is None:
            self.engine = LotusEngine()

        def emit(stage, fraction, item=0, items=0, message=""):
            self.events.send(protocol.progress_event(job_id, stage, fraction, item, items, message))

        try:
            request = protocol.PredictRequest.from_message(message)
            unknown = protocol.PredictOptions.unknown_names(message.get("options"))
            if unknown:
                log.warning("job %s: ignoring unknown options %s", job_id, unknown)
            result = self.engine.run(request, emit, lambda: self.is_cancelled(job_id))
        except JobCancelled:
            log.info("job %s cancelled", job_id)
            self.events.send(protocol.cancelled_event(job_id))
        except (protocol.ProtocolError, CheckpointError, EngineError, ImageReadError) as ex:
            log.warning("job %s failed: %s", job_id, ex)
            unknown = ex.source if isinstance(ex, UnknownKindError) else None
            self.events.send(protocol.error_event(job_id, str(ex), traceback.format_exc(),
                                                  unknown_kind=unknown))
        except Exception as ex:  # anything else still ends this job, not the worker
            log.exception("job %s crashed", job_id)
            self.events.send(protocol.error_event(job_id, f"{type(ex).__name__}: {ex}",
                                                  traceback.format_exc()))
        else:
            log.info("job %s done in %.2f s", job_id, time.perf_counter() - started)
            self.events.send(protocol.result_event(job_id, result))
        finally:
            with self.cancel_lock:
                self.cancelled_ids.discard(job_id)


def limit_heap_fragmentation() -> bool:
    """Serve large allocations from their own memory maps (glibc), returned to the OS when freed.

    The image-sized activations of each stage otherwise stay in the heap after they are freed,
    fragmented, which raised the worker's peak memory by a few hundred MB at 768 px.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 20))
    except (OSError, AttributeError):  # not glibc (e.g. musl): keep its defaults
        return False


def _environment_report() -> dict:
    try:
        import torch
    except ImportError as ex:
        return {"torch": None, "problem": f"PyTorch is not installed for this Python: {ex}"}
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.insert(0, "mps")
    return {"torch": torch.__version__, "devices": devices}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lotus_blender.worker")
    parser.add_argument("--log", help="log file (default: stderr)")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process is gone (default: the process that started us)")
    args = parser.parse_args(argv)

    parent_pid = args.parent_pid or os.getppid()
    limit_heap_fragmentation()
    protocol_stream = take_over_stdio(args.log)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    events = EventWriter(protocol_stream)
    worker = Worker(events, args.log)
    stdin = sys.stdin.buffer
    threading.Thread(target=worker.read_requests, args=(stdin,), daemon=True,
                     name="lotus-requests").start()
    threading.Thread(target=worker.watch_parent, args=(parent_pid,), daemon=True,
                     name="lotus-parent-watch").start()
    ready = protocol.ready_event(os.getpid(), args.log or "", sys.version.split()[0],
                                 **_environment_report())
    log.info("worker ready: %s", ready)
    events.send(ready)
    code = worker.serve()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # The request thread is blocked reading stdin; a normal interpreter shutdown would abort on
    # its buffer lock, so leave at once (every event has been written and flushed).
    os._exit(code)
