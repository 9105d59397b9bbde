"""The panel's and the operators' job queue: one worker session, one job at a time, a queue for the
rest; the idle release and the file-load handlers.

``manager.pump()`` is the only place events are read: the modal operator's window timer calls it
(through ``job_runner.JobRunner``), and so does the blocking loop used in background mode
(``blender -b``), so both paths run the same code. What a run makes of its ended jobs (Blender
images, reports) is job_runner.py's.
"""

from __future__ import annotations

import collections
import itertools
import os
import sys
import time
from dataclasses import dataclass, field

import bpy

from .. import protocol
from . import job_folders, outputs, worker_setup
from .models import unknown_kind_message
from .preferences import get_preferences
from .worker_session import WorkerSession, WorkerSettings, WorkerUnavailable

# A worker that has not confirmed a cancel after this many seconds is killed.
CANCEL_TIMEOUT_S = 5.0
IDLE_CHECK_INTERVAL_S = 30.0
# How often the previous file's cancelled job is checked on after another file is opened.
FINISH_INTERVAL_S = 0.2

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"
ENDED = (DONE, FAILED, CANCELLED)
_job_numbers = itertools.count(1)


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
        shown = self.fraction if self.stage == protocol.STAGE_DOWNLOADING else self.run_fraction
        return int(round(shown * 100))

    def __post_init__(self):
        self.output_dir = self.output_dir or os.path.join(self.job_dir, "out")
        self.run_label = self.run_label or self.label
        self.run_id = self.run_id or self.id
        if self.stage != protocol.STAGE_DOWNLOADING:
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
        self.session = WorkerSession()
        self.queue: collections.deque[Job] = collections.deque()
        self.current: Job | None = None
        self.last_activity = time.monotonic()
        self.last_error = ""              # shown in the panel next to Open Log
        self.folders_in_use: set[str] = set()  # job folders whose results are not in Blender yet

    @property
    def client(self):
        """The worker process, while one runs."""
        return self.session.client

    @property
    def worker_log(self) -> str:
        return self.session.log_path

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
            self.session.cancel(job.id)

    def cancel_all(self) -> None:
        for job in list(self.queue):
            self.cancel(job)
        if self.current is not None:
            self.cancel(self.current)

    def pump(self) -> None:
        """Read the worker's events, advance the current job, start the next one."""
        for event in self.session.events():
            self._handle(event)
        job = self.current
        if job is not None and job.cancel_sent_at \
                and time.monotonic() - job.cancel_sent_at > CANCEL_TIMEOUT_S:
            # The worker did not stop in time: kill it; the next job starts a fresh one.
            self.session.stop(kill=True)
            self._end(job, CANCELLED, "cancelled (worker stopped)")
        if self.current is None and self.queue:
            self._start(self.queue.popleft())

    def _start(self, job: Job) -> None:
        if job.run_part == 0:
            self.last_error = ""  # a new run: the previous run's failure is old news
        self.current = job
        job.state, job.stage = RUNNING, "starting"
        try:
            self.session.send(job.request(), job.worker, keep=job)
        except WorkerUnavailable as ex:
            self._end(job, FAILED, f"{ex}; see the log (Open Log)" if ex.logged else str(ex))

    def _handle(self, event: dict) -> None:
        kind = event.get(protocol.EVENT)
        job = self.current
        if kind == protocol.EV_EXITED:
            # The process is gone (the session has forgotten it).
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
            if event.get("stage") != protocol.STAGE_DOWNLOADING:
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
            self.last_error = f"{job.label}: {first_line(message)}"
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

    def forget_previous_file(self) -> None:
        """A file was opened (or File > New): its panel starts clean. The previous file's failure
        is not this one's, and the operators that would take its runs' results are gone (load_pre
        cancelled their jobs), so their folders are free to prune. The worker stays warm."""
        self.last_error = ""
        self.folders_in_use.clear()
        if self.current is not None and self.current.cancelling:
            # Nobody reads the worker's events now: read them until the cancel is confirmed
            # (or the worker is killed after CANCEL_TIMEOUT_S), so no stale bar stays.
            if not bpy.app.timers.is_registered(_finish_cancelled):
                bpy.app.timers.register(_finish_cancelled, first_interval=FINISH_INTERVAL_S,
                                        persistent=True)

    def release(self) -> bool:
        """Stop the idle worker: frees all its memory (the next job starts a fresh one)."""
        if self.busy or self.client is None:
            return False
        self.session.stop()
        return True

    def shutdown(self) -> None:
        """Everything stops: queued and running jobs are cancelled and the worker ends."""
        for job in list(self.queue):
            job.state, job.stage, job.message = CANCELLED, "cancelled", "cancelled"
        self.queue.clear()
        if self.current is not None:
            job, self.current = self.current, None
            job.state, job.stage, job.message = CANCELLED, "cancelled", "cancelled"
        self.session.stop()


manager = JobManager()


def prune_job_folders(keep: int = job_folders.KEEP_JOB_FOLDERS) -> list[str]:
    """job_folders.prune_job_folders, sparing this Blender's queued and running jobs' folders
    and those whose results are not in Blender yet."""
    in_use = {job.job_dir for job in manager.active_jobs()} | manager.folders_in_use
    return job_folders.prune_job_folders(in_use, keep)


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


def _finish_cancelled():
    """bpy.app.timers callback after a file load: pump until the previous file's cancelled job
    has ended (a job of the new file has its own operator reading the events)."""
    manager.pump()
    job = manager.current
    return FINISH_INTERVAL_S if job is not None and job.cancelling else None


def first_line(message: str, limit: int = 300) -> str:
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


@bpy.app.handlers.persistent
def _cancel_on_file_load(*_args):
    """Opening another .blend ends the operators waiting for results: stop their jobs too."""
    manager.cancel_all()


@bpy.app.handlers.persistent
def _forget_previous_file(*_args):
    """The opened file's panel shows nothing of the previous file's runs (its error above all)."""
    manager.forget_previous_file()


_HANDLERS = ((bpy.app.handlers.load_pre, _cancel_on_file_load),
             (bpy.app.handlers.load_post, _forget_previous_file))


def register():
    for handlers, function in _HANDLERS:
        handlers.append(function)


def unregister():
    for handlers, function in _HANDLERS:
        if function in handlers:
            handlers.remove(function)
    remove_idle_timer()
    if bpy.app.timers.is_registered(_finish_cancelled):
        bpy.app.timers.unregister(_finish_cancelled)
    manager.shutdown()
