"""Jobs: one worker process, one job at a time, a queue for the rest.

``manager.pump()`` is the only place events are read: the modal operator's window timer calls it
(through ``JobRunner``), and so does the blocking loop used in background mode (``blender -b``),
so both paths run the same code. Results become Blender images in the operator that asked for
them, when its jobs end, so that each run is one undo step.
"""

from __future__ import annotations

import collections
import functools
import glob
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

import bpy

from .. import protocol
from . import outputs, worker_setup
from .files import describe_failures
from .preferences import ADDON_ID, BUNDLED_PREFIX, bundled_models, get_preferences
from .worker_client import EV_EXITED, WorkerClient

# A worker that has not confirmed a cancel after this many seconds is killed.
CANCEL_TIMEOUT_S = 5.0
IDLE_CHECK_INTERVAL_S = 30.0
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"
STAGE_DOWNLOADING = "downloading model"   # the worker's stage whose fraction is the download's
ENDED = (DONE, FAILED, CANCELLED)
_job_numbers = itertools.count(1)


# -- folders --------------------------------------------------------------------------------------

def user_folder(*parts: str) -> str:
    """The extension's per-user folder (models, logs, jobs), created on demand."""
    path = bpy.utils.extension_path_user(ADDON_ID, path=os.path.join(*parts) if parts else "",
                                         create=True)
    return path


# Folders of runs whose files could not be written keep their arrays; at most this many are
# kept, older ones (and any left by a crash or a killed Blender) go when the next run starts.
KEEP_JOB_FOLDERS = 3


def jobs_folder() -> str:
    return user_folder("jobs")


def _folder_pid(name: str) -> int:
    """Batch folders are named "<date>-<time>-<pid>-<n>" (operators.build_jobs)."""
    parts = name.split("-")
    return int(parts[2]) if len(parts) >= 4 and parts[2].isdigit() else 0


# Windows has no harmless signal 0 (os.kill would end the process): there a folder of another
# process counts as live for this long after it last changed.
OTHER_PROCESS_GRACE_S = 24 * 3600


def _process_alive(pid: int, folder: str) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return time.time() - os.path.getmtime(folder) < OTHER_PROCESS_GRACE_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def prune_job_folders(keep: int = KEEP_JOB_FOLDERS) -> list[str]:
    """Remove leftover job folders beyond the ``keep`` newest. Folders of this Blender's queued or
    running jobs, and of other running Blenders, are left alone. Returns the removed paths."""
    root = jobs_folder()
    active = {os.path.normpath(job.job_dir) for job in manager.active_jobs()}
    active |= {os.path.normpath(folder) for folder in manager.folders_in_use}
    try:
        entries = [os.path.join(root, name) for name in os.listdir(root)]
    except OSError:
        return []
    leftovers = []
    for path in entries:
        name = os.path.basename(path)
        if not os.path.isdir(path) or os.path.normpath(path) in active:
            continue
        pid = _folder_pid(name)
        if pid != os.getpid() and _process_alive(pid, path):
            continue
        leftovers.append(path)
    leftovers.sort(key=lambda path: os.path.getmtime(path), reverse=True)
    removed = []
    for path in leftovers[keep:]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def models_folder() -> str:
    return user_folder("models")


def log_path() -> str:
    return os.path.join(user_folder("logs"), "worker.log")


def extension_site_packages() -> str:
    """Where Blender installs the wheels extensions bundle (shared by all extensions)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return os.path.join(bpy.utils.user_resource('EXTENSIONS', path=".local"), "lib", version,
                        "site-packages")


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


def worker_settings(context=None) -> WorkerSettings:
    prefs = get_preferences(context)
    custom = bpy.path.abspath(prefs.python_path) if prefs.python_path else ""
    python = custom or sys.executable
    # The wheels bundled with the extension are built for Blender's Python: a chosen interpreter
    # of the same version uses them too (a light build brings no torch, the interpreter does);
    # another version keeps to its own packages.
    blender_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    same = not custom or python_version(custom) == blender_version
    extra = (extension_site_packages(),) if same else ()
    return WorkerSettings(python=python, log_path=log_path(), extra_paths=extra)


# -- models ---------------------------------------------------------------------------------------

class ModelError(RuntimeError):
    """The chosen model cannot be used as it is (missing folder, offline and not downloaded)."""


def _downloaded(repo_id: str, cache_dir: str) -> bool:
    snapshots = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"), "snapshots")
    return bool(glob.glob(os.path.join(snapshots, "*", "unet", "config.json")))


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _kind_label(task: str) -> str:
    """The Model Output choices as the preferences show them: "Disparity or Depth"."""
    return " or ".join(kind.capitalize() for kind in protocol.kinds_for(task))


def unknown_kind_message(task: str, source: str) -> str:
    return (f"Lotus cannot tell what {source} predicts: set {task.capitalize()} Model Output "
            f"({_kind_label(task)}) in the Lotus add-on preferences")


def model_request(task: str, context=None) -> dict:
    """The protocol MODEL dict for a task, from the preferences; ModelError when unusable."""
    prefs = get_preferences(context)
    choice = getattr(prefs, f"{task}_model")
    cache_dir = models_folder()
    kind_choice = getattr(prefs, f"{task}_model_kind")
    kind = None if kind_choice == 'AUTO' else kind_choice.lower()
    if choice == 'LOCAL':
        folder = bpy.path.abspath(getattr(prefs, f"{task}_model_path"))
        if not folder or not os.path.isdir(folder):
            raise ModelError(f"The local {task} model folder does not exist: '{folder}'. "
                             f"Set it in the add-on preferences")
        model = {"source": os.path.normpath(folder), "cache_dir": cache_dir,
                 "allow_network": False}
        if kind:  # else the worker recognises it (lotus.json, a known repo's folder) or asks
            model["kind"] = kind
        return model
    if choice.startswith(BUNDLED_PREFIX):
        folder = bundled_models(task).get(choice[len(BUNDLED_PREFIX):])
        if folder is None:
            raise ModelError(f"The bundled model {choice[len(BUNDLED_PREFIX):]} is missing from "
                             f"the extension; choose another model in the preferences")
        # The bundle's lotus.json says what it predicts.
        return {"source": folder, "cache_dir": cache_dir, "allow_network": False}
    model = {}
    if choice == 'REPO':
        choice = getattr(prefs, f"{task}_model_repo").strip()
        if not _REPO_ID.match(choice):
            raise ModelError(f"Set the {task} model's Hugging Face repo id (owner/name) in the "
                             f"Lotus add-on preferences (now '{choice}')")
        if kind is None and choice not in protocol.KNOWN_CHECKPOINTS:
            # Asked before any download: never guessed from the task.
            raise ModelError(unknown_kind_message(task, choice))
        if kind:
            model["kind"] = kind
    online = bool(bpy.app.online_access)
    if not online and not _downloaded(choice, cache_dir):
        raise ModelError(
            f"The model {choice} is not downloaded and Blender's online access is off. Enable "
            f"Edit > Preferences > System > Network > Allow Online Access to download it, "
            f"or choose a Local Folder model in the Lotus add-on preferences")
    model.update({"source": choice, "cache_dir": cache_dir, "allow_network": online})
    return model


def worker_options(context=None, **overrides) -> dict:
    prefs = get_preferences(context)
    options = {"processing_resolution": int(prefs.processing_resolution),
               "device": prefs.device.lower(), "precision": prefs.precision.lower()}
    options.update(overrides)
    return options


# -- jobs -----------------------------------------------------------------------------------------

@dataclass
class Job:
    task: str
    model: dict
    inputs: list                      # PreparedInput, in order
    job_dir: str
    options: dict
    output: outputs.OutputSettings
    worker: WorkerSettings
    label: str = ""
    output_dir: str = ""              # the worker's arrays; default job_dir/out
    id: str = field(default_factory=lambda: f"job{os.getpid()}_{next(_job_numbers)}_{int(time.time())}")
    state: str = QUEUED
    fraction: float = 0.0
    stage: str = "queued"
    item: int = 0
    items: int = 0
    message: str = ""
    traceback: str = ""
    outputs: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    cancel_sent_at: float = 0.0
    # One run (one operator call) may be several jobs, e.g. Depth & Normals: part i of n. The
    # panel shows one bar for the whole run, under the run's label.
    run_id: str = ""                  # default: the job's own id (a run of one job)
    run_part: int = 0
    run_parts: int = 1
    run_label: str = ""
    progress: float = 0.0             # prediction progress, never goes back (fraction may)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def cancelling(self) -> bool:
        return bool(self.cancel_sent_at) and not self.ended

    @property
    def run_fraction(self) -> float:
        """The whole run's progress: earlier parts count as done."""
        parts = max(1, self.run_parts)
        return min(1.0, (self.run_part + min(1.0, self.progress)) / parts)

    @property
    def percent(self) -> int:
        """What the progress text shows: the download's own progress while downloading."""
        shown = self.fraction if self.stage == STAGE_DOWNLOADING else self.run_fraction
        return int(round(shown * 100))

    def __post_init__(self):
        self.output_dir = self.output_dir or os.path.join(self.job_dir, "out")
        self.run_label = self.run_label or self.label
        self.run_id = self.run_id or self.id
        if self.stage != STAGE_DOWNLOADING:
            self.progress = max(self.progress, self.fraction)

    def status_text(self) -> str:
        if self.state == QUEUED:
            return f"{self.run_label}: waiting"
        if self.cancelling:
            return f"{self.run_label}: cancelling..."
        # The worker's stage already says where it is ("image 3/12: predicting").
        part = f"{self.task}, " if self.run_parts > 1 else ""
        return f"{self.run_label}: {part}{self.stage} {self.percent}%"

    def request(self) -> dict:
        return protocol.predict_request(self.id, self.task, self.model,
                                        [p.npy_path for p in self.inputs], self.output_dir,
                                        self.options)


class JobManager:
    """The single worker and the job queue."""

    def __init__(self):
        self.client: WorkerClient | None = None
        self.client_settings: WorkerSettings | None = None
        self.queue: collections.deque[Job] = collections.deque()
        self.current: Job | None = None
        self.last_activity = time.monotonic()
        self.worker_log = ""
        self.last_error = ""              # shown in the panel next to Open Log
        self.folders_in_use: set[str] = set()  # job folders whose results are not in Blender yet

    def active_jobs(self) -> list:
        return ([self.current] if self.current is not None else []) + list(self.queue)

    # state for the panel
    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.queue)

    def waiting_runs(self) -> int:
        """Runs in the queue, not counting the rest of the running one."""
        running = self.current.run_id if self.current is not None else None
        return len({job.run_id for job in self.queue if job.run_id != running})

    def submit(self, job: Job) -> Job:
        os.makedirs(job.output_dir, exist_ok=True)
        self.queue.append(job)
        self.pump()
        return job

    def cancel(self, job: Job) -> None:
        if job.ended:
            return
        if job in self.queue:
            self.queue.remove(job)
            job.state, job.stage = CANCELLED, "cancelled"
            return
        if job is self.current and not job.cancel_sent_at:
            job.stage = "cancelling"
            job.cancel_sent_at = time.monotonic()
            if self.client is not None:
                self.client.send({"op": protocol.OP_CANCEL, "id": job.id})

    def cancel_all(self) -> None:
        for job in list(self.queue):
            self.cancel(job)
        if self.current is not None:
            self.cancel(self.current)

    def pump(self) -> None:
        """Read the worker's events, advance the current job, start the next one."""
        if self.client is not None:
            for event in self.client.poll_events():
                self._handle(event)
        job = self.current
        if job is not None and job.cancel_sent_at \
                and time.monotonic() - job.cancel_sent_at > CANCEL_TIMEOUT_S:
            # The worker did not stop in time: kill it; the next job starts a fresh one.
            self._stop_client(kill=True)
            self._end(job, CANCELLED, "cancelled (worker stopped)")
        if self.current is None and self.queue:
            self._start(self.queue.popleft())

    def _start(self, job: Job) -> None:
        if job.run_part == 0:
            self.last_error = ""  # a new run: the previous run's failure is old news
        if self.client is not None and (not self.client.is_alive()
                                        or self.client_settings != job.worker):
            self._stop_client()
        if self.client is None:
            client = WorkerClient(job.worker.python, os.path.dirname(PACKAGE_DIR),
                                  os.path.basename(PACKAGE_DIR), job.worker.log_path,
                                  job.worker.extra_paths)
            try:
                client.start()
            except OSError as ex:
                self._end(job, FAILED, f"Cannot start the worker ({job.worker.python}): {ex}")
                return
            self.client, self.client_settings = client, job.worker
            self.worker_log = job.worker.log_path
        self.current = job
        job.state, job.stage = RUNNING, "starting"
        if not self.client.send(job.request()):
            self._stop_client(kill=True)
            self._end(job, FAILED, "The worker exited at start; see the log (Open Log)")

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        job = self.current
        if kind == protocol.EV_READY:
            self.worker_log = event.get("log_path") or self.worker_log
            return
        if kind == EV_EXITED:
            # The process is gone: release its pipes and log handle, forget it.
            self._stop_client(kill=True)
            if job is not None:
                if job.cancel_sent_at:
                    self._end(job, CANCELLED, "cancelled")
                else:
                    self._end(job, FAILED, f"The worker stopped unexpectedly (exit code "
                                           f"{event.get('returncode')}); see the log (Open Log)")
            return
        if job is None or event.get("id") not in (job.id, None):
            return
        if kind == protocol.EV_PROGRESS:
            job.fraction = float(event.get("fraction", 0.0))
            if not job.cancel_sent_at:  # "cancelling" stays until the worker confirms
                job.stage = event.get("stage") or job.stage
            if event.get("stage") != STAGE_DOWNLOADING:
                job.progress = max(job.progress, job.fraction)
            job.item = int(event.get("item", 0))
            job.items = int(event.get("items", 0))
            job.message = event.get("message", "")
        elif kind == protocol.EV_RESULT:
            job.outputs = list(event.get("outputs", []))
            job.info = dict(event.get("info", {}))
            job.fraction = job.progress = 1.0
            self._end(job, DONE, "done")
        elif kind == protocol.EV_ERROR:
            job.traceback = event.get("traceback", "")
            message = event.get("message") or "the worker reported an error"
            if event.get("missing"):
                # The worker's Python cannot run Lotus (a light build, a distro Blender): say how
                # to fix it rather than pass on "No module named 'torch'".
                job.traceback = job.traceback or message
                custom = job.worker.python if job.worker.python != sys.executable else ""
                message = worker_setup.missing_packages_message(event["missing"], custom)
            elif event.get("unknown_kind"):
                message = unknown_kind_message(job.task, event["unknown_kind"])
            self._end(job, FAILED, message)
        elif kind == protocol.EV_CANCELLED:
            self._end(job, CANCELLED, "cancelled")

    def _end(self, job: Job, state: str, message: str) -> None:
        job.state = state
        job.stage = state.lower()
        if state != DONE or not job.message:
            job.message = message
        if state == FAILED:
            self.last_error = f"{job.label}: {_first_line(message)}"
            self._log_failure(job)
        elif state == DONE:
            self.last_error = ""
        if job is self.current:
            self.current = None
        self.last_activity = time.monotonic()
        ensure_idle_timer()

    def _log_failure(self, job: Job) -> None:
        """Put the failure and the worker's traceback in the log Open Log shows."""
        path = self.worker_log or job.worker.log_path
        try:
            with open(path, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} Blender: job {job.id} "
                          f"({job.label}) failed: {job.message}\n")
                if job.traceback:
                    log.write(job.traceback.rstrip() + "\n")
        except OSError:
            pass  # the report already told the artist; a missing log must not hide it

    def _stop_client(self, kill: bool = False) -> None:
        client, self.client, self.client_settings = self.client, None, None
        if client is not None:
            if kill:
                client.kill()
            else:
                client.stop()

    def release(self) -> bool:
        """Stop the idle worker: frees all its memory (the next job starts a fresh one)."""
        if self.busy or self.client is None:
            return False
        self._stop_client()
        return True

    def shutdown(self) -> None:
        """Everything stops: queued and running jobs are cancelled and the worker ends."""
        for job in list(self.queue):
            job.state, job.stage, job.message = CANCELLED, "cancelled", "cancelled"
        self.queue.clear()
        if self.current is not None:
            job, self.current = self.current, None
            job.state, job.stage, job.message = CANCELLED, "cancelled", "cancelled"
        self._stop_client()


manager = JobManager()


# -- idle release -----------------------------------------------------------------------------------

def _idle_check():
    """bpy.app.timers callback: release the worker after the preference's idle minutes."""
    try:
        minutes = get_preferences().idle_release_minutes
    except KeyError:  # the add-on is being disabled
        return None
    if manager.client is None:
        return None  # nothing to release; registered again when a job ends
    if minutes > 0 and not manager.busy \
            and time.monotonic() - manager.last_activity >= minutes * 60.0:
        manager.release()
        return None
    return IDLE_CHECK_INTERVAL_S


def ensure_idle_timer() -> None:
    if not bpy.app.timers.is_registered(_idle_check):
        bpy.app.timers.register(_idle_check, first_interval=IDLE_CHECK_INTERVAL_S, persistent=True)


def remove_idle_timer() -> None:
    if bpy.app.timers.is_registered(_idle_check):
        bpy.app.timers.unregister(_idle_check)


# -- driving jobs ---------------------------------------------------------------------------------

def finish_job(job: Job, prepared_inputs=None) -> tuple[list, list[str]]:
    """Turn a finished job's arrays into Blender images and files. Returns (images, problems)."""
    by_npy = {os.path.normpath(p.npy_path): p for p in (prepared_inputs or job.inputs)}
    return outputs.create_results(job.outputs, by_npy, job.output)


class JobRunner:
    """What one operator run does with its jobs; fed TIMER / ESC events by the modal operator
    (or by tests), so the modal path needs no window to be tested."""

    def __init__(self, jobs: list[Job], report=None):
        self.jobs = list(jobs)
        self.report = report if report is not None else (lambda level, text: None)
        self.images: list = []
        self.problems: list[outputs.OutputError] = []
        self.finished: set[str] = set()
        # The run's reports, given at its end: one line naming every map (Both: depth and
        # normals; Blender's status bar shows only the last report), then what went wrong.
        self.made: list[str] = []
        self.notes: list[tuple[set, str]] = []
        manager.folders_in_use.update(job.job_dir for job in self.jobs)

    @property
    def ended(self) -> bool:
        return all(job.ended for job in self.jobs)

    def cancel(self) -> None:
        for job in self.jobs:
            manager.cancel(job)

    def handle(self, event_type: str) -> set:
        """One modal event: ESC cancels, TIMER advances. Returns the operator's return set."""
        if event_type == 'ESC':
            self.cancel()
            return {'RUNNING_MODAL'}
        if event_type != 'TIMER':
            return {'PASS_THROUGH'}
        manager.pump()
        for job in self.jobs:
            if job.ended and job.id not in self.finished:
                self.finished.add(job.id)
                self._conclude(job)
        if not self.ended:
            return {'RUNNING_MODAL'}
        folders = sorted({job.job_dir for job in self.jobs})
        manager.folders_in_use.difference_update(folders)
        if self.made:
            self.report({'INFO'}, f"Lotus: {', '.join(self.made)}")
        for level, text in self.notes:
            self.report(level, text)
        if self.problems:
            # Files are missing: the raw arrays stay (prune_job_folders bounds how many).
            self.report({'ERROR'}, describe_failures(self.problems, (
                f"The maps are kept in Blender, packed into the .blend; the raw arrays are in "
                f"{', '.join(folders)}")))
        else:
            # Done, failed or cancelled: the arrays are in Blender and on disk, or of no use.
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        if self.images:
            return {'FINISHED'}
        return {'CANCELLED'}

    def run_blocking(self, poll_interval: float = 0.05) -> set:
        """Background mode: the same steps, waiting in between."""
        while True:
            result = self.handle('TIMER')
            if 'RUNNING_MODAL' not in result:
                return result
            time.sleep(poll_interval)

    def _conclude(self, job: Job) -> None:
        if job.state == DONE:
            images, problems = finish_job(job)
            self.images += images
            self.problems += problems
            self.made += [image.name for image in images if "preview" not in image.name]
            for note in job.info.get("notes", []):
                self._note({'WARNING'}, f"Lotus {job.task}: {note}")
            if job.output.temporary and job.output.written:
                self._note({'WARNING'}, f"The .blend is not saved: maps were written to "
                                        f"{job.output.folder}. Save the .blend, or Pack Results")
        elif job.state == FAILED:
            message = _first_line(job.message)
            # Some messages send the artist to the log already.
            details = "" if "Open Log" in message else " (details: Open Log)"
            self._note({'ERROR'}, f"Lotus {job.task}: {message}{details}")
        else:
            self._note({'WARNING'}, f"Lotus {job.task}: cancelled")

    def _note(self, level: set, text: str) -> None:
        if (level, text) not in self.notes:  # Both: the same warning once, not per part
            self.notes.append((level, text))


def _first_line(message: str, limit: int = 300) -> str:
    """Reports stay short: the first line of a message, cut at ``limit`` characters."""
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def status_line() -> str:
    if manager.current is not None:
        text = manager.current.status_text()
        waiting = manager.waiting_runs()
        if waiting:
            text += f" (+{waiting} queued)"
        return text
    return ""


def tag_redraw(context) -> None:
    window_manager = getattr(context, "window_manager", None)
    if window_manager is None:
        return
    for window in window_manager.windows:
        for area in window.screen.areas:
            if area.type in ('VIEW_3D', 'IMAGE_EDITOR', 'STATUSBAR'):
                area.tag_redraw()


@bpy.app.handlers.persistent
def _cancel_on_file_load(*_args):
    """Opening another .blend ends the operators waiting for results: stop their jobs too."""
    manager.cancel_all()


def register():
    bpy.app.handlers.load_pre.append(_cancel_on_file_load)


def unregister():
    if _cancel_on_file_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_cancel_on_file_load)
    remove_idle_timer()
    manager.shutdown()
