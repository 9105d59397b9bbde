"""The command line: ``blender -b -c lotus predict INPUTS... [options]`` (README "Sequences and
render farms").

``main(argv)`` is a plain function: Blender calls it through ``bpy.utils.register_cli_command``
with the arguments after ``-c lotus``, and tests call it directly (the ``bpy`` module has no
``-c``). One worker stays warm for the whole run; the next frame is read and queued while the
worker computes the current one, and results are written while it computes the next, so reading
and writing overlap compute. Finished frames are skipped, frames are claimed so that runs with
overlapping ranges share the work, and every file appears under its final name only when complete.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import bpy
import numpy as np

from .. import protocol
from ..core import motion, temporal
from . import batch_files, cli_sources, inputs, job_folders, job_queue, models, naming, outputs
from .cli_checks import (UsageError, check_frames_apply, make_output_folder, output_folder,
                         resolve_models)
from .preferences import get_preferences
from .worker_session import (PredictionChoices, WorkerSession, WorkerSettings, WorkerUnavailable,
                             prediction_options, worker_settings)

COMMAND_ID = "lotus"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Requests queued in the worker: one computing, one waiting, so it never idles between frames.
IN_FLIGHT = 2
WAIT_FOR_OTHERS_S = 2.0
PICTURE_INDEX = 99999  # job file of an earlier frame's picture read again for the stabilizer
MAIN_FILE = "exr"

EPILOG = """\
outputs (the add-on's names; sequences and movies add _FRAME, e.g. shot_depth_1001.exr):
  NAME_depth.exr                 float depth/disparity in R=G=B (+ NAME_depth_preview.png for
                                 single images)
  NAME_normal.exr                camera-space normal map, OpenGL convention (rgb = 0.5 n + 0.5)
  NAME_normal_opengl.png         16-bit normal map in --normal-convention

progress: one line per frame on stdout,
  LOTUS 36.4% 12/33 depth frame 1012 computed 4.81s compute 4.62s shot_depth_1012.exr
  (status: computed, skipped = already finished, failed); a last line "LOTUS done ...".

resume and farms: a frame is finished when its files exist; rerunning the same command skips
finished frames. Files are written to hidden temporary names and renamed when complete. Runs with
overlapping ranges claim frames (.NAME.lotus-claim files) so each frame is computed once.

exit status: 0 when every frame of the range is finished; 1 when a frame failed (the others
are still written) or the run was stopped (SIGTERM, Ctrl+C); 2 for a usage error, found before
any work and told in one line: a bad option, a missing input, --frames given with a single
image, a model that is missing, is not a Lotus checkpoint or does not predict the task, a --python
that is not found, an output folder that is not set, is a file or cannot be written.
"""

class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (UsageError) instead of the usage block."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser(defaults: dict) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="blender -b -c lotus",
        description="Lotus depth and normal maps for images, image sequences and movies, "
                    "without opening a .blend. Options default to the add-on's preferences.")
    commands = parser.add_subparsers(dest="command", metavar="predict")
    commands.required = True
    predict = commands.add_parser(
        "predict", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        help="write depth and/or normal maps",
        description="Write depth and/or normal maps for every frame of the inputs.")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image file, sequence (shot_####.exr or shot_%%04d.exr), folder "
                              "(its numbered files are sequences) or movie")
    predict.add_argument("--frames", metavar="A-B",
                         help="frames of sequences and movies: A-B, A, or A-B,C-D "
                              "(default: every file found / the whole movie, 1-based)")
    predict.add_argument("--task", choices=("depth", "normal", "both"), default="depth")
    predict.add_argument("--output", "-o", metavar="DIR", default=defaults["output"],
                         required=not defaults["output"],
                         help="output folder" + (f" (default {defaults['output']})"
                                                 if defaults["output"] else ""))
    for task in ("depth", "normal"):
        predict.add_argument(f"--{task}-model", metavar="REPO_OR_DIR", default=None,
                             help=f"{task} checkpoint: Hugging Face repo id or local folder "
                                  f"(default, from the preferences: {defaults[task + '_model']})")
    predict.add_argument("--depth-kind", choices=("disparity", "depth"), default=None,
                         help="what a local depth folder predicts, when it has no lotus.json")
    predict.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"),
                         default=defaults["device"])
    predict.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"),
                         default=defaults["precision"])
    predict.add_argument("--resolution", type=int, metavar="PX",
                         default=defaults["resolution"],
                         help="longest edge the model sees, 0 = native (default %(default)s)")
    predict.add_argument("--tiled", action="store_true",
                         help="full-resolution maps from overlapping tiles")
    predict.add_argument("--seamless", action="store_true", help="maps that tile (textures)")
    predict.add_argument("--stabilize", action=argparse.BooleanOptionalAction, default=True,
                         help="sequences and movies: align each frame's depth to the frames "
                              "before it, removing flicker (default on)")
    predict.add_argument("--normal-convention", choices=("opengl", "directx"),
                         default=defaults["convention"], help="of the PNG normal map")
    predict.add_argument("--python", metavar="PATH", default=defaults["python"],
                         help="interpreter running the worker (default: the preferences, "
                              "else Blender's own)")
    predict.add_argument("--seed", type=int, default=0, help="noise seed of G models")
    predict.add_argument("--overwrite", action="store_true",
                         help="recompute frames that are already finished")
    predict.add_argument("--stale-claim", type=float, metavar="SECONDS",
                         default=batch_files.DEFAULT_STALE_AFTER_S,
                         help="a claim not refreshed for this long belongs to a dead machine "
                              "(default %(default)s)")
    return parser


def _defaults() -> dict:
    prefs = get_preferences()
    output = prefs.output_dir if prefs.output_dir and not prefs.output_dir.startswith("//") else ""
    return {"output": output, "depth_model": models.preferences_model_label("depth"),
            "normal_model": models.preferences_model_label("normal"),
            "device": prefs.device.lower(), "precision": prefs.precision.lower(),
            "resolution": int(prefs.processing_resolution),
            "convention": prefs.normal_convention.lower(),
            "python": bpy.path.abspath(prefs.python_path) if prefs.python_path else ""}


# -- units of work --------------------------------------------------------------------------------

@dataclass
class Unit:
    task: str
    source: cli_sources.Source
    frame: int | None
    finals: dict                       # file role -> final path; MAIN_FILE is the EXR

    @property
    def main(self) -> str:
        return self.finals[MAIN_FILE]

    @property
    def frame_label(self) -> str:
        return "-" if self.frame is None else str(self.frame)


def final_paths(source: cli_sources.Source, frame, task: str, folder: str,
                convention: str) -> dict:
    """The add-on's file names (naming.result_file_name, as the panel's outputs) for one map of
    one frame or image; fixed names (no " (Lotus)" or numbering) so that a rerun finds them."""
    def path(suffix, extension):
        return os.path.join(folder, naming.result_file_name(source.name, suffix, extension, frame))
    if task == protocol.TASK_DEPTH:
        paths = {MAIN_FILE: path("depth", ".exr")}
        if frame is None:
            paths["preview"] = path("depth_preview", ".png")
        return paths
    return {MAIN_FILE: path("normal", ".exr"), "png": path(f"normal_{convention}", ".png")}


class Batch:
    """One run of the predict command."""

    def __init__(self, args, units: list[Unit], models: dict, worker: WorkerSettings,
                 job_dir: str, out=None):
        self.args = args
        self.units = units
        self.models = models
        self.worker = worker
        self.job_dir = job_dir
        self.out = out or sys.stdout
        self.claims = batch_files.Claims(args.stale_claim)
        self.session = WorkerSession()   # requests in flight: id -> (unit, prepared)
        self.waiting_told = False        # the line saying that it waits for other runs
        self.stabilizers: dict[str, temporal.TemporalStabilizer] = {}
        self.unreadable: set = set()      # (source, frame) whose picture the stabilizer cannot have
        self.counts = {"computed": 0, "skipped": 0, "failed": 0}
        self.choices = PredictionChoices.from_args(args)  # --tiled, --seamless, --stabilize, --seed
        self.requests = 0
        self.last_end = time.perf_counter()

    # -- reporting ------------------------------------------------------------------------------

    def _progress(self, unit: Unit, status: str, seconds: float = 0.0, compute: float = 0.0,
                  note: str = ""):
        self.counts[status] += 1
        done = sum(self.counts.values())
        percent = 100.0 * done / max(1, len(self.units))
        line = (f"LOTUS {percent:5.1f}% {done}/{len(self.units)} {unit.task} frame "
                f"{unit.frame_label} {status} {seconds:.2f}s")
        if compute:
            line += f" compute {compute:.2f}s"
        note = f" (stabilize: {note})" if note else ""
        print(f"{line} {os.path.basename(unit.main)}{note}", file=self.out, flush=True)

    def _fail(self, unit: Unit, message: str) -> None:
        print(f"LOTUS error: {unit.task} frame {unit.frame_label} ({unit.source.path}): "
              f"{message}", file=sys.stderr, flush=True)
        self.claims.release(unit.main)
        self._progress(unit, "failed")

    # -- the worker -----------------------------------------------------------------------------

    def _request(self, unit: Unit, prepared: inputs.PreparedInput) -> dict:
        self.requests += 1
        args = self.args
        options = prediction_options(args.resolution, args.device, args.precision, self.choices)
        output_dir = os.path.join(self.job_dir, f"out{self.requests:05d}")
        return protocol.predict_request(f"cli{os.getpid()}-{self.requests}", unit.task,
                                        self.models[unit.task], [prepared.npy_path], output_dir,
                                        options)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        pending = collections.deque(self.units)
        deferred: list[Unit] = []
        try:
            while pending or self.session.in_flight or deferred:
                while pending and len(self.session.in_flight) < IN_FLIGHT:
                    self._start(pending.popleft(), deferred)
                if self.session.in_flight:
                    self._wait()
                elif deferred:
                    # Only frames other runs hold are left: wait for them to finish (or die).
                    self._tell_waiting(deferred)
                    time.sleep(WAIT_FOR_OTHERS_S)
                    pending.extend(deferred)
                    deferred.clear()
                self.claims.heartbeat()
        finally:
            self.claims.release_all()
            self.session.stop()
        failed = self.counts["failed"]
        print(f"LOTUS done: {len(self.units)} maps, {self.counts['computed']} computed, "
              f"{self.counts['skipped']} skipped (finished), {failed} failed; output "
              f"{self.args.output}", file=self.out, flush=True)
        return EXIT_FAILED if failed else EXIT_OK

    def _start(self, unit: Unit, deferred: list) -> None:
        if not self.args.overwrite and batch_files.finished(unit.finals):
            self.claims.discard_stale(unit.main)
            self._progress(unit, "skipped")
            return
        if not self.claims.acquire(unit.main):
            deferred.append(unit)
            return
        if not self.args.overwrite and batch_files.finished(unit.finals):  # finished meanwhile
            self.claims.release(unit.main)
            self._progress(unit, "skipped")
            return
        resolution = 0 if self.choices.tiled else self.args.resolution
        try:
            prepared = cli_sources.prepare(unit.source, unit.frame, self.job_dir, resolution,
                                           self.requests)
        except (inputs.InputError, RuntimeError) as ex:
            self._fail(unit, str(ex))
            return
        try:
            self.session.send(self._request(unit, prepared), self.worker, keep=(unit, prepared))
        except WorkerUnavailable as ex:
            self._fail(unit, f"{ex}; see its log {self.worker.log_path}" if ex.logged else str(ex))
            return
        self.waiting_told = False

    def _tell_waiting(self, deferred: list) -> None:
        """One line when the run starts waiting for frames other runs claim (a run killed on
        another host holds its claims until they are --stale-claim seconds old)."""
        if self.waiting_told:
            return
        self.waiting_told = True
        owner = batch_files.describe_claim(self.claims.path_for(deferred[0].main))
        print(f"LOTUS waiting for {len(deferred)} frame(s) claimed by other runs (first: {owner}); "
              f"a claim not touched for {self.args.stale_claim:g} s is taken over",
              file=self.out, flush=True)

    def _wait(self) -> None:
        for event in self.session.events(wait=0.5):
            self._handle(event)

    def _handle(self, event: dict) -> None:
        kind = event.get(protocol.EVENT)
        if kind == protocol.EV_EXITED:
            for _, (unit, _) in event["lost"]:
                self._fail(unit, f"the worker stopped (exit code {event.get('returncode')}); "
                                 f"see its log {self.worker.log_path}")
            return
        if kind not in protocol.JOB_END_EVENTS or event.get("kept") is None:
            return
        unit, prepared = event["kept"]
        if kind == protocol.EV_RESULT and event.get("outputs"):
            try:
                note = self._write(unit, prepared, event["outputs"][0])
            except (outputs.OutputError, OSError) as ex:
                self._fail(unit, f"cannot write the maps: {ex}")
            else:
                now = time.perf_counter()
                info = event.get("info", {})
                # The model's own time (encode + UNet + decode), for comparison with the wall time.
                compute = sum(info.get("stage_seconds", {}).values()) or info.get("seconds", 0.0)
                self._progress(unit, "computed", now - self.last_end, float(compute), note)
                self.last_end = now
        else:
            self._fail(unit, event.get("message") or kind)
        try:
            os.remove(prepared.npy_path)
        except OSError:
            pass

    def _write(self, unit: Unit, prepared: inputs.PreparedInput, output: dict) -> str:
        """Writes the maps; returns what the stabilizer did if worth saying (a cut, a held fit)."""
        values = np.load(output["path"])
        kind = output["kind"]
        note = ""
        if kind != protocol.KIND_NORMAL and unit.source.is_clip and self.choices.stabilize:
            values, note = self._stabilized(unit, values, motion.load_picture(prepared.npy_path))
        partials = {role: batch_files.partial_path(path) for role, path in unit.finals.items()}
        try:
            outputs.write_map_files(values, kind, prepared.full_width, prepared.full_height,
                                    partials, self.args.normal_convention.upper())
            batch_files.commit(partials, unit.finals, MAIN_FILE)
        finally:
            for path in partials.values():
                if os.path.exists(path):
                    os.remove(path)
        shutil.rmtree(os.path.dirname(output["path"]), ignore_errors=True)
        self.claims.release(unit.main)
        return note

    def _stabilized(self, unit: Unit, values: np.ndarray,
                    picture: np.ndarray | None) -> tuple[np.ndarray, str]:
        """``picture``: the frame's input as the worker saw it (the stabilizer's motion mask)."""
        stabilizer = self.stabilizers.setdefault(unit.source.name, temporal.TemporalStabilizer())
        # Frames finished earlier (a resumed run, another machine's chunk) are the references.
        for frame in stabilizer.needs_reference(unit.frame):
            path = final_paths(unit.source, frame, unit.task, self.args.output,
                               self.args.normal_convention)[MAIN_FILE]
            if os.path.isfile(path):
                try:
                    stabilizer.add_reference(frame, outputs.read_map(path))
                except (outputs.OutputError, RuntimeError):
                    pass
        if picture is not None:
            # The pictures of those frames, read again as the worker saw them, so that a resumed
            # run finds the same moving cells as one run.
            for frame in stabilizer.photos_wanted(unit.frame):
                earlier = self._picture(unit.source, frame)
                if earlier is not None:
                    stabilizer.add_photo(frame, earlier)
        aligned, fit = stabilizer.align(unit.frame, values, picture)
        return aligned, fit.note

    def _picture(self, source, frame: int) -> np.ndarray | None:
        """An earlier frame's input picture (for the stabilizer), None if it cannot be read."""
        key = (source.name, frame)
        if key in self.unreadable:
            return None
        resolution = 0 if self.choices.tiled else self.args.resolution
        try:
            prepared = cli_sources.prepare(source, frame, self.job_dir, resolution, PICTURE_INDEX)
        except (inputs.InputError, RuntimeError):
            self.unreadable.add(key)
            return None
        try:
            return motion.load_picture(prepared.npy_path)
        finally:
            os.remove(prepared.npy_path)


# -- entry point ----------------------------------------------------------------------------------

def _error(message) -> None:
    """An error as one line on stderr."""
    print("LOTUS error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """``blender -b -c lotus ARGS``: returns the exit status."""
    try:
        args = build_parser(_defaults()).parse_args(list(argv))
    except SystemExit as ex:  # --help, which argparse has printed
        return int(ex.code) if isinstance(ex.code, int) else EXIT_USAGE
    except UsageError as ex:
        _error(ex)
        return EXIT_USAGE
    tasks = [protocol.TASK_DEPTH, protocol.TASK_NORMAL] if args.task == "both" else [args.task]
    sources = []
    try:
        # Every usage error is found here, before the first frame.
        try:
            output = output_folder(args.output)
            frames = cli_sources.parse_frames(args.frames)
            sources = cli_sources.find_sources(args.inputs, frames)
            check_frames_apply(args.frames, args.inputs, sources)
            chosen = resolve_models(args, tasks)
            if args.python and not shutil.which(args.python):
                raise UsageError(f"The worker interpreter {args.python} (--python) is not found")
            make_output_folder(output)
        except (ValueError, inputs.InputError, models.ModelError) as ex:
            _error(ex)
            return EXIT_USAGE
        args.output = output
        for note in (note for source in sources for note in source.notes):
            print(f"LOTUS warning: {note}", file=sys.stderr, flush=True)
        return _run(args, tasks, sources, chosen)
    finally:
        cli_sources.release(sources)


def _run(args, tasks: list[str], sources: list, chosen: dict) -> int:
    job_dir = ""
    previous_handler = None
    try:
        batch_files.remove_stale_partials(args.output, args.stale_claim)
        # One model at a time: all frames of a task, then the next task (no model swapping).
        units = [Unit(task, source, frame, final_paths(source, frame, task, args.output,
                                                       args.normal_convention))
                 for task in tasks for source in sources for frame in source.frames]
        job_queue.prune_job_folders()  # those of killed runs
        job_dir = job_folders.new_job_folder("cli")
        batch = Batch(args, units, chosen, worker_settings(python=args.python), job_dir)
        if hasattr(signal, "SIGTERM"):
            # A farm stopping the task: leave through the finally blocks (claims, worker).
            previous_handler = signal.signal(signal.SIGTERM, batch_files.stop_requested)
        return batch.run()
    except OSError as ex:
        _error(ex)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("LOTUS stopped", file=sys.stderr, flush=True)
        return EXIT_FAILED
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if job_dir:
            shutil.rmtree(job_dir, ignore_errors=True)


# -- registration ---------------------------------------------------------------------------------

_handle = None


def register():
    global _handle
    # Blender 4.2+; the add-on works without the command where it is missing.
    if hasattr(bpy.utils, "register_cli_command"):
        _handle = bpy.utils.register_cli_command(COMMAND_ID, main)


def unregister():
    global _handle
    if _handle is not None:
        bpy.utils.unregister_cli_command(_handle)
        _handle = None
