"""The worker as the panel and the command line both drive it: which interpreter runs it
(``worker_settings``), what a prediction asks for (``PredictionChoices``, the artist's options
from the operators or the command line, and ``prediction_options``, the request's), and one
``WorkerSession``: started on the first request, started again after a crash or when the
settings change, its requests in flight tracked by id, stopped at the end.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields

import bpy

from .. import protocol
from .job_folders import PACKAGE_DIR, extension_site_packages, log_path
from .preferences import get_preferences
from .worker_client import WorkerClient


@dataclass
class WorkerSettings:
    python: str
    log_path: str
    extra_paths: tuple


@functools.lru_cache(maxsize=8)
def python_version(python: str) -> str:
    """"3.11" for an interpreter, or "" when it cannot be run."""
    try:
        run = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return run.stdout.strip() if run.returncode == 0 else ""


def worker_settings(context=None, python: str = "") -> WorkerSettings:
    """The worker's interpreter: ``python`` (the command line's --python), else the preferences'
    Worker Python, else Blender's own."""
    if not python:
        prefs = get_preferences(context)
        python = bpy.path.abspath(prefs.python_path) if prefs.python_path else ""
    # The wheels bundled with the extension are built for Blender's Python: a chosen interpreter
    # of the same version uses them too (a light build brings no torch, the interpreter does);
    # another version keeps to its own packages.
    blender_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    same = not python or python_version(python) == blender_version
    extra = (extension_site_packages(),) if same else ()
    return WorkerSettings(python=python or sys.executable, log_path=log_path(), extra_paths=extra)


@dataclass(frozen=True)
class PredictionChoices:
    """The artist's options for one prediction, as one object from the predict operators
    (predict_options.choices) or the command line (``from_args``) to the jobs: a new option is a
    field here, a property in predict_options (and a flag of the command line) and its use.
    The worker reads every field (worker.engine.PredictOptions) but those marked blender_side."""
    tiled: bool = False        # full-resolution maps from overlapping tiles
    seamless: bool = False     # maps that tile (textures)
    # Sequences and movies: depth aligned frame to frame (core.temporal, on the Blender side).
    stabilize: bool = field(default=True, metadata={"blender_side": True})
    seed: int | None = None    # noise seed of G models (None: the worker's default)

    @classmethod
    def from_args(cls, args) -> "PredictionChoices":
        """The command line's parsed arguments (argparse.Namespace), taken by name."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)
                      if hasattr(args, f.name)})

    def request_options(self) -> dict:
        """The fields that go to the worker (None: left to the worker)."""
        blender_side = {f.name for f in fields(self) if f.metadata.get("blender_side")}
        return {name: value for name, value in asdict(self).items()
                if name not in blender_side and value is not None}


def prediction_options(resolution: int, device: str, precision: str,
                       choices: PredictionChoices = PredictionChoices()) -> dict:
    """The options of a predict request (worker.engine.PredictOptions). G models take each
    frame's noise from the seed alone, so frames of a sequence need nothing more."""
    options = {"processing_resolution": int(resolution), "device": device.lower(),
               "precision": precision.lower()}
    options.update(choices.request_options())
    return options


def preferences_options(context=None, choices: PredictionChoices = PredictionChoices()) -> dict:
    """prediction_options with the preferences' resolution, device and precision."""
    prefs = get_preferences(context)
    return prediction_options(int(prefs.processing_resolution), prefs.device, prefs.precision,
                              choices)


class WorkerUnavailable(RuntimeError):
    """The worker could not be started, or exited as it was given a request (``logged``: its
    log says why)."""

    def __init__(self, message: str, logged: bool = False):
        super().__init__(message)
        self.logged = logged


class WorkerSession:
    """One worker process at a time, and the requests sent to it that have not ended."""

    def __init__(self):
        self.client: WorkerClient | None = None
        self.settings: WorkerSettings | None = None
        self.log_path = ""                # the worker's log, as its ready event names it
        self.in_flight: dict[str, object] = {}   # request id -> what the caller keeps with it

    @property
    def running(self) -> bool:
        return self.client is not None

    def _ensure(self, settings: WorkerSettings) -> WorkerClient:
        if self.client is not None and (not self.client.is_alive() or self.settings != settings):
            self.stop(kill=not self.client.is_alive())
        if self.client is None:
            client = WorkerClient(settings.python, os.path.dirname(PACKAGE_DIR),
                                  os.path.basename(PACKAGE_DIR), settings.log_path,
                                  settings.extra_paths)
            try:
                client.start()
            except OSError as ex:
                raise WorkerUnavailable(f"Cannot start the worker ({settings.python}): {ex}") \
                    from None
            self.client, self.settings = client, settings
            self.log_path = settings.log_path
        return self.client

    def send(self, request: dict, settings: WorkerSettings, keep=None) -> None:
        """Send a request, starting the worker first where it is not running (or was started
        with other settings). ``keep`` comes back with the request's end. WorkerUnavailable
        when it cannot be started or is gone at once."""
        client = self._ensure(settings)
        if not client.send(request):
            self.stop(kill=True)
            raise WorkerUnavailable("The worker exited at start", logged=True)
        self.in_flight[request["id"]] = keep

    def cancel(self, request_id: str) -> None:
        if self.client is not None:
            self.client.send(protocol.cancel_request(request_id))

    def events(self, wait: float = 0.0) -> list[dict]:
        """The worker's events so far (waiting up to ``wait`` seconds for the first). A request's
        end event forgets it; when the process is gone, the exit event lists the requests it
        took with it under "lost" and the session forgets the process."""
        if self.client is None:
            return []
        events = self.client.poll_events()
        if not events and wait > 0:
            first = self.client.wait_event(timeout=wait)
            events = [first] + self.client.poll_events() if first is not None else []
        for event in events:
            kind = event.get(protocol.EVENT)
            if kind == protocol.EV_READY:
                self.log_path = event.get("log_path") or self.log_path
            elif kind in protocol.JOB_END_EVENTS:
                event["kept"] = self.in_flight.pop(event.get("id"), None)
            elif kind == protocol.EV_EXITED:
                # The process is gone: release its pipes and log handle, forget it.
                event["lost"] = list(self.in_flight.items())
                self.in_flight.clear()
                self.stop(kill=True)
                break
        return events

    def stop(self, kill: bool = False) -> None:
        """End the worker: asked to exit (``kill``: killed at once); its requests are dropped."""
        client, self.client, self.settings = self.client, None, None
        self.in_flight.clear()
        if client is not None:
            if kill:
                client.kill()
            else:
                client.stop()
