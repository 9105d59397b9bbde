"""Wire protocol between the Blender side and the Lotus worker process.

Standard library only: both the worker (no bpy) and the Blender side (no torch) import it.

Transport: one JSON object per line. Requests go to the worker's stdin, events come back on its
stdout. Nothing else is ever written to the worker's stdout (its logs go to a log file), so every
stdout line is an event. Pixel data never travels in the stream: inputs are file paths, outputs
are float32 ``.npy`` files written into the job's folder, so results survive a Blender crash.

Requests (Blender -> worker), each a dict with an ``op``:
  predict   {"op": "predict", "id": JOB_ID, "task": "depth"|"normal", "model": MODEL,
             "inputs": [PATH, ...], "output_dir": DIR, "options": {...}}
            MODEL = {"source": repo id or local folder, "cache_dir": DIR, "allow_network": bool,
                     "kind": optional override "depth"|"disparity"|"normal"}
  cancel    {"op": "cancel", "id": JOB_ID}
  release   {"op": "release"}                 free the model (memory), keep the process
  ping      {"op": "ping"}
  shutdown  {"op": "shutdown"}                exit cleanly

Events (worker -> Blender), each a dict with an ``event``:
  ready      {"event": "ready", "pid": int, "protocol": PROTOCOL_VERSION, "log_path": str, ...}
  progress   {"event": "progress", "id": JOB_ID, "stage": str, "fraction": 0..1,
              "item": int, "items": int, "message": str}
  result     {"event": "result", "id": JOB_ID, "outputs": [OUTPUT, ...], "info": {...}}
             OUTPUT = {"input": PATH, "path": NPY_PATH, "kind": "disparity"|"depth"|"normal",
                       "width": int, "height": int}
  error      {"event": "error", "id": JOB_ID or None, "message": short str, "traceback": str,
              "missing": [MODULE, ...] only when the worker's Python lacks packages (torch, ...),
              "unknown_kind": SOURCE only when the model's kind must be given (not recognised)}
  cancelled  {"event": "cancelled", "id": JOB_ID}
  released   {"event": "released"}
  pong       {"event": "pong"}
"""

from __future__ import annotations

import json

PROTOCOL_VERSION = 1

# Requests
OP_PREDICT = "predict"
OP_CANCEL = "cancel"
OP_RELEASE = "release"
OP_PING = "ping"
OP_SHUTDOWN = "shutdown"
REQUEST_OPS = (OP_PREDICT, OP_CANCEL, OP_RELEASE, OP_PING, OP_SHUTDOWN)

# Events
EV_READY = "ready"
EV_PROGRESS = "progress"
EV_RESULT = "result"
EV_ERROR = "error"
EV_CANCELLED = "cancelled"
EV_RELEASED = "released"
EV_PONG = "pong"
# Events that end a job: after one of them no more events come for that job id.
JOB_END_EVENTS = (EV_RESULT, EV_ERROR, EV_CANCELLED)

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


def kinds_for(task: str) -> tuple:
    """The kinds a model must predict to serve ``task``."""
    return (KIND_NORMAL,) if task == TASK_NORMAL else (KIND_DISPARITY, KIND_DEPTH)


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


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
    if not isinstance(message, dict) or not ("op" in message or "event" in message):
        raise ProtocolError(f"not a protocol message: {line[:200]!r}")
    return message


def predict_request(job_id: str, task: str, model: dict, inputs: list[str], output_dir: str,
                    options: dict | None = None) -> dict:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}, expected one of {TASKS}")
    return {"op": OP_PREDICT, "id": job_id, "task": task, "model": dict(model),
            "inputs": [str(p) for p in inputs], "output_dir": str(output_dir),
            "options": dict(options or {})}


def progress_event(job_id: str, stage: str, fraction: float, item: int = 0, items: int = 0,
                   message: str = "") -> dict:
    return {"event": EV_PROGRESS, "id": job_id, "stage": stage,
            "fraction": max(0.0, min(1.0, float(fraction))), "item": int(item),
            "items": int(items), "message": message}


def error_event(job_id: str | None, message: str, traceback_text: str = "",
                missing: list[str] | None = None, unknown_kind: str | None = None) -> dict:
    event = {"event": EV_ERROR, "id": job_id, "message": message, "traceback": traceback_text}
    if missing:
        event["missing"] = list(missing)
    if unknown_kind:
        event["unknown_kind"] = unknown_kind
    return event


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
