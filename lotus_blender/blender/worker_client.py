"""The worker subprocess seen from Blender: start, send requests, collect events, stop.

No bpy here (the caller passes paths and the interpreter), so the client can be driven from any
thread-free caller. A reader thread turns the worker's stdout lines into protocol events on a
queue; the Blender side drains the queue from its timer, never blocking the UI.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

from .. import protocol


class WorkerClient:
    """One worker process and the queue of events it has sent."""

    def __init__(self, python: str, package_parent: str, package_name: str, log_path: str,
                 extra_paths: tuple[str, ...] = ()):
        self.python = python
        self.package_parent = package_parent
        self.package_name = package_name
        self.log_path = log_path
        self.extra_paths = tuple(p for p in extra_paths if p)
        self.process: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._stderr_file = None
        self.started_at = 0.0

    # -- lifetime -----------------------------------------------------------------------------

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
        env = dict(os.environ)
        # The worker imports our package by its folder name, and torch from the interpreter's
        # own site-packages or Blender's extension site-packages (bundled wheels).
        paths = [self.package_parent, *self.extra_paths]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        # Anything the worker (or a native library) prints to stderr lands in the log too.
        self._stderr_file = open(self.log_path, "ab")
        creationflags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            self.process = subprocess.Popen(
                [self.python, "-m", f"{self.package_name}.worker", "--log", self.log_path],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr_file,
                env=env, cwd=self.package_parent, creationflags=creationflags)
        except OSError:
            self._stderr_file.close()
            self._stderr_file = None
            raise
        self.started_at = time.monotonic()
        self._reader = threading.Thread(target=self._read_stdout, name="lotus-worker-reader",
                                        daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        process = self.process
        for line in process.stdout:
            if not line.strip():
                continue
            try:
                self.events.put(protocol.decode(line))
            except protocol.ProtocolError as ex:
                # A stray print in the worker must not break the job: log it as a note.
                self.events.put(protocol.stray_event(str(ex)))
        # The stdout closed: the worker exited or was killed.
        self.events.put(protocol.exited_event(process.wait()))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, message: dict) -> bool:
        """Write one request; False when the worker is gone (the exit event will follow)."""
        if not self.is_alive():
            return False
        try:
            self.process.stdin.write(protocol.encode(message))
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def poll_events(self) -> list[dict]:
        """Every event received so far, without waiting."""
        events = []
        while True:
            try:
                events.append(self.events.get_nowait())
            except queue.Empty:
                return events

    def wait_event(self, timeout: float) -> dict | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit; kill it when it does not within ``timeout`` seconds."""
        if self.is_alive():
            self.send(protocol.shutdown_request())
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def _close(self) -> None:
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        if self.process is not None:
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
