"""Wire protocol between the Blender side and the Lotus worker process: every word on the wire.

Standard library only: both the worker (no bpy) and the Blender side (no torch) import it.

Transport: one JSON object per line. Requests go to the worker's stdin, events come back on its
stdout. Nothing else is ever written to the worker's stdout (its logs go to a log file), so every
stdout line is an event. Pixel data never travels in the stream: inputs are file paths, outputs
are float32 ``.npy`` files written into the job's folder, so results survive a Blender crash.

Requests (Blender -> worker), each a dict with an ``op``:
  predict   {"op": "predict", "id": JOB_ID, "task": "depth"|"normal", "model": MODEL,
             "inputs": [PATH, ...], "output_dir": DIR, "options": OPTIONS}
            MODEL = ModelSpec: {"source": repo id or local folder, "cache_dir": DIR,
                     "allow_network": bool, "kind": optional override "depth"|"disparity"|"normal"}
            OPTIONS = PredictOptions (every field optional)
  cancel    {"op": "cancel", "id": JOB_ID}
  shutdown  {"op": "shutdown"}                exit cleanly

Events (worker -> Blender), each a dict with an ``event``:
  ready      {"event": "ready", "pid": int, "protocol": PROTOCOL_VERSION, "log_path": str, ...}
  progress   {"event": "progress", "id": JOB_ID, "stage": STAGE, "fraction": 0..1,
              "item": int, "items": int, "message": str}
  result     {"event": "result", "id": JOB_ID, "outputs": [OUTPUT, ...], "info": RunInfo}
             OUTPUT = Output: {"input": PATH, "path": NPY_PATH, "kind": "disparity"|"depth"|"normal",
                               "width": int, "height": int}
  error      {"event": "error", "id": JOB_ID or None, "message": short str, "traceback": str,
              "missing": [MODULE, ...] only when the worker's Python lacks packages (torch, ...),
              "unknown_kind": SOURCE only when the model's kind must be given (not recognised)}
  cancelled  {"event": "cancelled", "id": JOB_ID}

Freeing the model's memory is ending the worker (``shutdown``): that also frees the GPU context
and the allocator's cache, which a model-only release inside a live process would keep.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

PROTOCOL_VERSION = 2  # 2: the unused release and ping requests removed

# The field that names a message: requests have an "op", events an "event".
OP = "op"
EVENT = "event"

# Requests
OP_PREDICT = "predict"
OP_CANCEL = "cancel"
OP_SHUTDOWN = "shutdown"
REQUEST_OPS = (OP_PREDICT, OP_CANCEL, OP_SHUTDOWN)

# Events
EV_READY = "ready"
EV_PROGRESS = "progress"
EV_RESULT = "result"
EV_ERROR = "error"
EV_CANCELLED = "cancelled"
# Events that end a job: after one of them no more events come for that job id.
JOB_END_EVENTS = (EV_RESULT, EV_ERROR, EV_CANCELLED)
# Events the client puts on its own queue, never sent by the worker: a stdout line that is not a
# message (logged as a note), and the end of the worker's stdout (it exited or was killed).
EV_STRAY = "stray"
EV_EXITED = "exited"

# Progress stages. The panel shows the stage as it comes. While downloading, the fraction is the
# download's own (the panel shows it as the percentage); every other stage's fraction is the job's.
STAGE_DOWNLOADING = "downloading model"
STAGE_LOADING = "loading model"
STEP_ENCODING = "encoding"
STEP_PREDICTING = "predicting"
STEP_DECODING = "decoding"
PREDICTION_STEPS = (STEP_ENCODING, STEP_PREDICTING, STEP_DECODING)  # one prediction, in order
STAGE_NEXT_IMAGE = "next image"
STAGE_DONE = "done"

TASK_DEPTH = "depth"
TASK_NORMAL = "normal"
TASKS = (TASK_DEPTH, TASK_NORMAL)

# What an output array means (see README "Conventions"):
#   disparity: HxW float32 in [0, 1], near = 1 (affine-invariant inverse depth)
#   depth:     HxW float32 in [0, 1], near = 0 (affine-invariant relative depth)
#   normal:    HxWx3 float32 unit vectors, Lotus camera convention (+X left, +Y up, +Z toward camera)
KIND_DISPARITY = "disparity"
KIND_DEPTH = "depth"
KIND_NORMAL = "normal"
KINDS = (KIND_DISPARITY, KIND_DEPTH, KIND_NORMAL)

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEFAULT_RESOLUTION = 768


def kinds_for(task: str) -> tuple:
    """The kinds a model must predict to serve ``task``."""
    return (KIND_NORMAL,) if task == TASK_NORMAL else (KIND_DISPARITY, KIND_DEPTH)


class ProtocolError(ValueError):
    """A line that is not a valid protocol message, or a request the worker cannot take."""


def encode(message: dict) -> bytes:
    """One message as one UTF-8 JSON line (no embedded newlines)."""
    return (json.dumps(message, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


def decode(line: bytes | str) -> dict:
    """Parse one line into a message dict; raise ProtocolError on anything else."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line:
        raise ProtocolError("empty line")
    try:
        message = json.loads(line)
    except json.JSONDecodeError as ex:
        raise ProtocolError(f"not JSON: {line[:200]!r}") from ex
    if not isinstance(message, dict) or not (OP in message or EVENT in message):
        raise ProtocolError(f"not a protocol message: {line[:200]!r}")
    return message


# -- what a predict request carries (the worker reads it into these) -----------------------------

@dataclass
class ModelSpec:
    """Which checkpoint: a Hugging Face repo id or a local folder."""
    source: str
    cache_dir: str = ""            # where repos are downloaded (and prompt embeddings cached)
    allow_network: bool = False
    kind: str | None = None        # what it predicts, where its files do not say

    @classmethod
    def from_dict(cls, model: dict | None) -> "ModelSpec":
        model = model or {}
        return cls(source=str(model.get("source") or "").strip(),
                   cache_dir=str(model.get("cache_dir") or ""),
                   allow_network=bool(model.get("allow_network", False)),
                   kind=model.get("kind") or None)   # checked against the checkpoint's files

    def to_dict(self) -> dict:
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass
class PredictOptions:
    processing_resolution: int = DEFAULT_RESOLUTION   # longest edge; 0 = the image's own
    seed: int = 0
    device: str = "auto"           # DEVICES
    precision: str = "auto"        # PRECISIONS
    tiled: bool = False            # full resolution from overlapping tiles
    tile_size: int | None = None
    tile_overlap: int | None = None
    seamless: bool = False         # opposite edges meet (tiling textures)
    kind: str | None = None        # overrides ModelSpec.kind

    @classmethod
    def from_dict(cls, options: dict | None) -> "PredictOptions":
        """The options given (unknown names are left to the caller to report); ProtocolError on
        a value the worker cannot use."""
        options = options or {}
        result = cls(**{f.name: options[f.name] for f in fields(cls)
                        if options.get(f.name) is not None})
        result.processing_resolution, result.seed = int(result.processing_resolution), int(result.seed)
        for name in ("tile_size", "tile_overlap"):
            if getattr(result, name) is not None:
                setattr(result, name, int(getattr(result, name)))
        if result.processing_resolution < 0:
            raise ProtocolError("processing resolution must be 0 (native) or positive")
        if result.device not in DEVICES:
            raise ProtocolError(f"unknown device {result.device!r}")
        if result.precision not in PRECISIONS:
            raise ProtocolError(f"unknown precision {result.precision!r}")
        if result.kind is not None and result.kind not in KINDS:
            raise ProtocolError(f"unknown kind {result.kind!r}")
        return result

    @classmethod
    def unknown_names(cls, options: dict | None) -> list[str]:
        return sorted(set(options or {}) - {f.name for f in fields(cls)})


@dataclass
class PredictRequest:
    task: str
    model: ModelSpec
    inputs: list[str]
    output_dir: str
    options: PredictOptions = field(default_factory=PredictOptions)
    id: str = ""

    @classmethod
    def from_message(cls, message: dict) -> "PredictRequest":
        """A predict request as the worker takes it; ProtocolError when it cannot be run."""
        task = message.get("task")
        if task not in TASKS:
            raise ProtocolError(f"unknown task {task!r}")
        inputs = [str(p) for p in message.get("inputs") or []]
        if not inputs:
            raise ProtocolError("no input images given")
        output_dir = str(message.get("output_dir") or "")
        if not output_dir:
            raise ProtocolError("no output folder given")
        return cls(task=task, model=ModelSpec.from_dict(message.get("model")), inputs=inputs,
                   output_dir=output_dir, options=PredictOptions.from_dict(message.get("options")),
                   id=message.get("id") or "")


def model_spec(source: str, cache_dir: str, allow_network: bool = False,
               kind: str | None = None) -> dict:
    """The MODEL of a predict request (no kind: the worker reads it from the checkpoint)."""
    return ModelSpec(source, cache_dir, allow_network, kind or None).to_dict()


def predict_request(job_id: str, task: str, model: dict, inputs: list[str], output_dir: str,
                    options: dict | None = None) -> dict:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}, expected one of {TASKS}")
    return {OP: OP_PREDICT, "id": job_id, "task": task, "model": dict(model),
            "inputs": [str(p) for p in inputs], "output_dir": str(output_dir),
            "options": dict(options or {})}


def cancel_request(job_id: str) -> dict:
    return {OP: OP_CANCEL, "id": job_id}


def shutdown_request() -> dict:
    return {OP: OP_SHUTDOWN}


# -- what the worker sends ----------------------------------------------------------------------

@dataclass
class Output:
    """One input's map: a float32 .npy file (see the KIND_* conventions)."""
    input: str
    path: str
    kind: str
    width: int
    height: int


@dataclass
class RunInfo:
    """How a job ran: what the result event's "info" holds (the panel shows the notes)."""
    model: str                     # repo id or folder
    variant: str                   # "G" or "D"
    kind: str
    device: str
    precision: str
    processing_resolution: int
    seed: int
    load_seconds: float            # 0 when the model was warm
    seconds: float                 # the images' wall time
    stage_seconds: dict            # step -> seconds, summed over the images
    notes: list                    # what the worker changed to get a result (e.g. after OOM)
    models_loaded: int             # models this job loaded (0 when warm)
    models_in_memory: int
    peak_memory_mb: float | None = None
    peak_vram_mb: float | None = None

    def to_dict(self) -> dict:
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass
class PredictResult:
    outputs: list                  # Output, one per input, in order
    info: RunInfo


def ready_event(pid: int, log_path: str, python: str, **environment) -> dict:
    """The worker's first event; ``environment`` says what it found (torch version, devices)."""
    return {EVENT: EV_READY, "pid": pid, "protocol": PROTOCOL_VERSION, "log_path": log_path,
            "python": python, **environment}


def prediction_stage(step: str, image: int = 1, images: int = 1, tile: int = 1,
                     tiles: int = 1) -> str:
    """A prediction step as the panel shows it: "image 3/12, tile 2/4: predicting" (counted from 1;
    a count of one is not shown)."""
    where = ([f"image {image}/{images}"] if images > 1 else []) + \
        ([f"tile {tile}/{tiles}"] if tiles > 1 else [])
    return f"{', '.join(where)}: {step}" if where else step


def progress_event(job_id: str, stage: str, fraction: float, item: int = 0, items: int = 0,
                   message: str = "") -> dict:
    return {EVENT: EV_PROGRESS, "id": job_id, "stage": stage,
            "fraction": max(0.0, min(1.0, float(fraction))), "item": int(item),
            "items": int(items), "message": message}


def result_event(job_id: str, result: PredictResult) -> dict:
    return {EVENT: EV_RESULT, "id": job_id, "outputs": [asdict(o) for o in result.outputs],
            "info": result.info.to_dict()}


def error_event(job_id: str | None, message: str, traceback_text: str = "",
                missing: list[str] | None = None, unknown_kind: str | None = None) -> dict:
    event = {EVENT: EV_ERROR, "id": job_id, "message": message, "traceback": traceback_text}
    if missing:
        event["missing"] = list(missing)
    if unknown_kind:
        event["unknown_kind"] = unknown_kind
    return event


def cancelled_event(job_id: str) -> dict:
    return {EVENT: EV_CANCELLED, "id": job_id}


def stray_event(problem: str) -> dict:
    return {EVENT: EV_STRAY, "message": problem}


def exited_event(returncode: int | None) -> dict:
    return {EVENT: EV_EXITED, "returncode": returncode}


# The known Lotus checkpoints (Hugging Face repo ids), shared by the worker (to tell what a
# checkpoint predicts) and the preferences (to offer them). G vs D is read from the files
# (unet/config.json in_channels), never from this table.
KNOWN_CHECKPOINTS = {
    "jingheya/lotus-depth-g-v2-1-disparity": KIND_DISPARITY,
    "jingheya/lotus-depth-g-v2-0-disparity": KIND_DISPARITY,  # the official infer.sh/app.py default
    "jingheya/lotus-depth-d-v2-0-disparity": KIND_DISPARITY,
    "jingheya/lotus-depth-g-v1-0": KIND_DEPTH,
    "jingheya/lotus-depth-d-v1-0": KIND_DEPTH,
    "jingheya/lotus-depth-d-v1-1": KIND_DEPTH,
    "jingheya/lotus-normal-g-v1-1": KIND_NORMAL,
    "jingheya/lotus-normal-d-v1-1": KIND_NORMAL,
    "jingheya/lotus-normal-g-v1-0": KIND_NORMAL,  # the official app.py's normal models
    "jingheya/lotus-normal-d-v1-0": KIND_NORMAL,
}
DEFAULT_CHECKPOINTS = {
    TASK_DEPTH: "jingheya/lotus-depth-g-v2-1-disparity",
    TASK_NORMAL: "jingheya/lotus-normal-g-v1-1",
}
