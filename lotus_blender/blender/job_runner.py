"""One operator run's jobs, from the queue to the artist: the modal operator feeds its events to a
``JobRunner``, which turns each ended job's arrays into Blender images and files (in the operator
that asked for them, so that each run is one undo step) and gives the run's reports at its end.
The queue and the worker the jobs wait in are job_queue.py's.
"""

from __future__ import annotations

import os
import shutil
import time

from ..core import temporal
from . import outputs
from .files import describe_failures
from .job_queue import DONE, FAILED, Job, first_line, manager


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
            summary = stabilize_summary(job.output.stabilized)
            if summary:
                self._note({'INFO'}, f"Lotus {job.task}, Stabilize Depth: {summary}")
            if job.output.temporary and job.output.written:
                self._note({'WARNING'}, f"The .blend is not saved: maps were written to "
                                        f"{job.output.folder}. Save the .blend, or Pack Results")
        elif job.state == FAILED:
            message = first_line(job.message)
            # Some messages send the artist to the log already.
            details = "" if "Open Log" in message else " (details: Open Log)"
            self._note({'ERROR'}, f"Lotus {job.task}: {message}{details}")
        else:
            self._note({'WARNING'}, f"Lotus {job.task}: cancelled")

    def _note(self, level: set, text: str) -> None:
        if (level, text) not in self.notes:  # Both: the same warning once, not per part
            self.notes.append((level, text))


# What the stabilizer says of the frames it did not simply align (core.temporal statuses), as
# (one frame, several frames) wordings; the command line prints each frame's note instead.
_STABILIZE_WORDS = ((temporal.CUT, "hard cut at frame {} (new alignment)",
                     "hard cuts at frames {} (new alignments)"),
                    (temporal.HELD, "frame {} held (fit not trusted: previous scale kept)",
                     "frames {} held (fits not trusted: previous scale kept)"),
                    (temporal.FLAT, "frame {} low-contrast (a fade?), not a reference",
                     "frames {} low-contrast (fades?), not references"))
MAX_FRAMES_LISTED = 6


def stabilize_summary(stabilized: list) -> str:
    """One line saying where a sequence's depth was cut, held or flat ("" when every frame was
    simply aligned): the panel's counterpart of the command line's per-frame notes."""
    parts = []
    for status, one, several in _STABILIZE_WORDS:
        frames = [str(frame) for frame, fit in stabilized if fit.status == status]
        if len(frames) > MAX_FRAMES_LISTED:
            frames = frames[:MAX_FRAMES_LISTED - 1] + [f"... ({len(frames)} in all)"]
        if frames:
            parts.append((one if len(frames) == 1 else several).format(", ".join(frames)))
    return "; ".join(parts)


def tag_redraw(context) -> None:
    """The modal operator's tick: the areas that show a run's progress draw it again."""
    window_manager = getattr(context, "window_manager", None)
    if window_manager is None:
        return
    for window in window_manager.windows:
        for area in window.screen.areas:
            if area.type in ('VIEW_3D', 'IMAGE_EDITOR', 'STATUSBAR'):
                area.tag_redraw()
