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
from ..core import temporal
from . import batch_files, cli_sources, inputs, jobs, outputs
from .preferences import get_preferences
from .worker_client import EV_EXITED, WorkerClient

COMMAND_ID = "lotus"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Requests queued in the worker: one computing, one waiting, so it never idles between frames.
IN_FLIGHT = 2
WAIT_FOR_OTHERS_S = 2.0
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

exit status: 0 when every frame of the range is finished, 1 when a frame failed, 2 for a
usage error (bad option, missing input, unusable model).
"""


def build_parser(defaults: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
                                  f"(default: the preferences, now {defaults[task + '_model']})")
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
    return {"output": output, "depth_model": prefs.depth_model, "normal_model": prefs.normal_model,
            "device": prefs.device.lower(), "precision": prefs.precision.lower(),
            "resolution": int(prefs.processing_resolution),
            "convention": prefs.normal_convention.lower(),
            "python": bpy.path.abspath(prefs.python_path) if prefs.python_path else ""}


# -- models and the worker ------------------------------------------------------------------------

def model_spec(task: str, choice: str | None, depth_kind: str | None) -> dict:
    """The protocol MODEL for a task: the preferences', or a repo id / folder from the command."""
    if not choice:
        return jobs.model_request(task)
    if os.path.isdir(choice):
        spec = {"source": os.path.abspath(choice), "cache_dir": jobs.models_folder(),
                "allow_network": False}
        if task == protocol.TASK_DEPTH and depth_kind:
            spec["kind"] = depth_kind
        return spec
    if "/" not in choice or os.sep in choice.replace("/", "", 1) or choice.startswith("."):
        raise jobs.ModelError(f"The {task} model is neither a folder nor a repo id: {choice}")
    online = bool(bpy.app.online_access)
    if not online and not jobs._downloaded(choice, jobs.models_folder()):
        raise jobs.ModelError(f"The model {choice} is not downloaded and online access is off: "
                              f"run once with Blender's --online-mode, or give a folder")
    return {"source": choice, "cache_dir": jobs.models_folder(), "allow_network": online}


def worker_settings(python: str) -> jobs.WorkerSettings:
    if not python:
        return jobs.worker_settings()
    same = jobs.python_version(python) == f"{sys.version_info.major}.{sys.version_info.minor}"
    return jobs.WorkerSettings(python=python, log_path=jobs.log_path(),
                               extra_paths=(jobs.extension_site_packages(),) if same else ())


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
    """The add-on's file names (outputs.py) for one map of one frame or image."""
    number = "" if frame is None else f"_{frame:04d}"
    if task == protocol.TASK_DEPTH:
        paths = {MAIN_FILE: os.path.join(folder, f"{source.name}_depth{number}.exr")}
        if frame is None:
            paths["preview"] = os.path.join(folder, f"{source.name}_depth_preview.png")
        return paths
    return {MAIN_FILE: os.path.join(folder, f"{source.name}_normal{number}.exr"),
            "png": os.path.join(folder, f"{source.name}_normal_{convention}{number}.png")}


class Batch:
    """One run of the predict command."""

    def __init__(self, args, units: list[Unit], models: dict, worker: jobs.WorkerSettings,
                 job_dir: str, out=None):
        self.args = args
        self.units = units
        self.models = models
        self.worker = worker
        self.job_dir = job_dir
        self.out = out or sys.stdout
        self.claims = batch_files.Claims(args.stale_claim)
        self.client: WorkerClient | None = None
        self.in_flight: collections.deque = collections.deque()   # (unit, prepared, id, sent)
        self.stabilizers: dict[str, temporal.TemporalStabilizer] = {}
        self.counts = {"computed": 0, "skipped": 0, "failed": 0}
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

    def _client(self) -> WorkerClient:
        if self.client is None or not self.client.is_alive():
            if self.client is not None:
                self.client.kill()
            package = jobs.PACKAGE_DIR
            self.client = WorkerClient(self.worker.python, os.path.dirname(package),
                                       os.path.basename(package), self.worker.log_path,
                                       self.worker.extra_paths)
            self.client.start()
        return self.client

    def _request(self, unit: Unit, prepared: inputs.PreparedInput) -> dict:
        self.requests += 1
        args = self.args
        options = {"processing_resolution": args.resolution, "device": args.device,
                   "precision": args.precision, "tiled": args.tiled, "seamless": args.seamless,
                   "seed": args.seed}
        output_dir = os.path.join(self.job_dir, f"out{self.requests:05d}")
        return protocol.predict_request(f"cli{os.getpid()}-{self.requests}", unit.task,
                                        self.models[unit.task], [prepared.npy_path], output_dir,
                                        options)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        pending = collections.deque(self.units)
        deferred: list[Unit] = []
        try:
            while pending or self.in_flight or deferred:
                while pending and len(self.in_flight) < IN_FLIGHT:
                    self._start(pending.popleft(), deferred)
                if self.in_flight:
                    self._wait()
                elif deferred:
                    # Only frames other runs hold are left: wait for them to finish (or die).
                    time.sleep(WAIT_FOR_OTHERS_S)
                    pending.extend(deferred)
                    deferred.clear()
                self.claims.heartbeat()
        finally:
            self.claims.release_all()
            if self.client is not None:
                self.client.stop()
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
        resolution = 0 if self.args.tiled else self.args.resolution
        try:
            prepared = cli_sources.prepare(unit.source, unit.frame, self.job_dir, resolution,
                                           self.requests)
        except (inputs.InputError, RuntimeError) as ex:
            self._fail(unit, str(ex))
            return
        request = self._request(unit, prepared)
        try:
            client = self._client()
        except OSError as ex:
            self._fail(unit, f"cannot start the worker ({self.worker.python}): {ex}")
            return
        if not client.send(request):
            self._fail(unit, f"the worker exited; see its log {self.worker.log_path}")
            return
        self.in_flight.append((unit, prepared, request["id"]))

    def _wait(self) -> None:
        event = self.client.wait_event(timeout=0.5) if self.client is not None else None
        if event is None:
            return
        kind = event.get("event")
        if kind == EV_EXITED:
            code = event.get("returncode")
            while self.in_flight:
                unit, _, _ = self.in_flight.popleft()
                self._fail(unit, f"the worker stopped (exit code {code}); see its log "
                                 f"{self.worker.log_path}")
            self.client.kill()
            self.client = None
            return
        if kind not in protocol.JOB_END_EVENTS:
            return
        ids = [item[2] for item in self.in_flight]
        if event.get("id") not in ids:
            return
        unit, prepared, _ = self.in_flight[ids.index(event["id"])]
        self.in_flight.remove((unit, prepared, event["id"]))
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
        if kind != protocol.KIND_NORMAL and unit.source.is_clip and self.args.stabilize:
            values, note = self._stabilized(unit, values)
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

    def _stabilized(self, unit: Unit, values: np.ndarray) -> tuple[np.ndarray, str]:
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
        aligned, fit = stabilizer.align(unit.frame, values)
        return aligned, fit.note


# -- entry point ----------------------------------------------------------------------------------

def _parse(argv: list[str]):
    parser = build_parser(_defaults())
    try:
        return parser.parse_args(argv), None
    except SystemExit as ex:  # --help (0) or a usage error (2): argparse has printed why
        return None, int(ex.code) if isinstance(ex.code, int) else EXIT_USAGE


def main(argv: list[str]) -> int:
    """``blender -b -c lotus ARGS``: returns the exit status."""
    args, code = _parse(list(argv))
    if args is None:
        return code
    args.output = os.path.abspath(bpy.path.abspath(args.output))
    try:
        frames = cli_sources.parse_frames(args.frames)
        sources = cli_sources.find_sources(args.inputs, frames)
    except (ValueError, inputs.InputError) as ex:
        print(f"LOTUS error: {ex}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    tasks = [protocol.TASK_DEPTH, protocol.TASK_NORMAL] if args.task == "both" else [args.task]
    job_dir = ""
    previous_handler = None
    try:
        models = {task: model_spec(task, getattr(args, f"{task}_model"), args.depth_kind)
                  for task in tasks}
        os.makedirs(args.output, exist_ok=True)
        batch_files.remove_stale_partials(args.output, args.stale_claim)
        # One model at a time: all frames of a task, then the next task (no model swapping).
        units = [Unit(task, source, frame, final_paths(source, frame, task, args.output,
                                                       args.normal_convention))
                 for task in tasks for source in sources for frame in source.frames]
        job_dir = jobs.user_folder("jobs", f"cli-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        batch = Batch(args, units, models, worker_settings(args.python), job_dir)
        if hasattr(signal, "SIGTERM"):
            # A farm stopping the task: leave through the finally blocks (claims, worker).
            previous_handler = signal.signal(signal.SIGTERM, batch_files.stop_requested)
        return batch.run()
    except (jobs.ModelError, OSError) as ex:
        print(f"LOTUS error: {ex}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("LOTUS stopped", file=sys.stderr, flush=True)
        return EXIT_FAILED
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if job_dir:
            shutil.rmtree(job_dir, ignore_errors=True)
        cli_sources.release(sources)


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
