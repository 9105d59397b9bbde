"""The protocol module owns every word on the wire: the worker and the Blender side use its
constants and builders, never the words themselves (a word written twice drifts, as the
"downloading model" stage once did between the worker and the panel's percentage).

No Blender and no torch here: the sources are read, and the message helpers run as they are.
"""

import ast
from pathlib import Path

import pytest

from lotus_blender import protocol

PACKAGE = Path(protocol.__file__).resolve().parent

# The message kinds and the progress stages: protocol.OP_*, EV_*, STAGE_* and STEP_* values.
WIRE_WORDS = {value for name, value in vars(protocol).items()
              if name.startswith(("OP_", "EV_", "STAGE_", "STEP_")) and isinstance(value, str)}
# The fields that name a message.
NAME_FIELDS = {protocol.OP, protocol.EVENT}


def _text(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _targets(assignment) -> list:
    return assignment.targets if isinstance(assignment, ast.Assign) else [assignment.target]


def wire_literals(source: str) -> list[str]:
    """Where ``source`` spells a wire word itself: a message built by hand ({"op": ...}), a
    message's name field read by its literal name, a wire word compared with or given a name of
    its own, or a stage reported by its words ("downloading model": any literal with a space is
    a stage no other text can mean). A one-word stage passed as an argument ("encoding") reads
    like any other word and is not seen."""
    found = []

    def flag(node, why):
        found.append(f"line {node.lineno}: {why}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if _text(key) in NAME_FIELDS:
                    flag(key, f"message built by hand ({_text(key)!r} key)")
        elif isinstance(node, ast.Subscript) and _text(node.slice) in NAME_FIELDS:
            flag(node, f"field {_text(node.slice)!r} read by its literal name")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "get" and node.args and _text(node.args[0]) in NAME_FIELDS:
            flag(node, f"field {_text(node.args[0])!r} read by its literal name")
        elif isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                for item in items:
                    if _text(item) in WIRE_WORDS:
                        flag(item, f"wire word {_text(item)!r} compared")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and \
                all(isinstance(target, ast.Name) for target in _targets(node)):
            # a name of its own (an object's own state, job.stage = "cancelled", is its business)
            values = node.value.elts if isinstance(node.value, (ast.Tuple, ast.List)) else [node.value]
            for value in values:
                if _text(value) in WIRE_WORDS:
                    flag(node, f"wire word {_text(value)!r} given a second home")
        elif _text(node) in WIRE_WORDS and " " in _text(node):
            flag(node, f"stage {_text(node)!r} spelled out")
    return found


def sources():
    files = sorted((PACKAGE / "worker").rglob("*.py")) + sorted((PACKAGE / "blender").rglob("*.py"))
    assert len(files) > 20  # both sides were found
    return files


@pytest.mark.parametrize("snippet", [
    'progress("downloading model", 0.5, "12 / 80 MB")',                # the worker's stage
    'shown = fraction if stage == "downloading model" else total',      # the panel's reading of it
    'STAGE_DOWNLOADING = "downloading model"',
    'EV_EXITED = "exited"',                                             # a client-side event
    'steps = ("encoding", "predicting", "decoding")',
    'events.put({"event": "stray", "message": str(ex)})',
    'client.send({"op": "cancel", "id": job_id})',
    'if message.get("op") == protocol.OP_CANCEL: pass',
    'if kind in ("result", "error"): pass',
    'kind = event["event"]',
])
def test_the_scan_sees_a_wire_word_spelled_out(snippet):
    assert wire_literals(snippet), snippet


def test_words_that_are_not_on_the_wire_pass():
    assert not wire_literals('job.stage = "starting"\n'
                             'job.state, job.stage = CANCELLED, "cancelled"\n'
                             'report({"INFO"}, "done")\n'
                             'options = {"device": "cpu", "precision": "fp32"}\n'
                             'if kind == protocol.EV_RESULT and event.get("outputs"): pass\n')


def test_worker_and_blender_side_use_the_protocols_words():
    leaks = {str(path.relative_to(PACKAGE)): found for path in sources()
             if (found := wire_literals(path.read_text(encoding="utf-8")))}
    assert not leaks, leaks


def test_messages_round_trip_through_the_wire():
    request = protocol.predict_request(
        "job-1", protocol.TASK_DEPTH,
        protocol.model_spec("owner/repo", "/models", allow_network=True),
        ["/in/a.npy"], "/out", {"seed": 3, "precision": "fp32", "future_option": 1})
    parsed = protocol.PredictRequest.from_message(protocol.decode(protocol.encode(request)))
    assert parsed.id == "job-1" and parsed.model.allow_network and parsed.model.kind is None
    assert (parsed.options.seed, parsed.options.precision, parsed.options.processing_resolution) == \
        (3, "fp32", protocol.DEFAULT_RESOLUTION)
    assert protocol.PredictOptions.unknown_names(request["options"]) == ["future_option"]

    info = protocol.RunInfo(model="owner/repo", variant="G", kind=protocol.KIND_DISPARITY,
                            device="cpu", precision="fp32", processing_resolution=768, seed=3,
                            load_seconds=1.5, seconds=2.0, stage_seconds={"unet": 1.0}, notes=[],
                            models_loaded=1, models_in_memory=1, peak_memory_mb=900.0)
    output = protocol.Output("/in/a.npy", "/out/a_disparity.npy", protocol.KIND_DISPARITY, 40, 24)
    event = protocol.decode(protocol.encode(
        protocol.result_event("job-1", protocol.PredictResult([output], info))))
    assert event[protocol.EVENT] == protocol.EV_RESULT and event["id"] == "job-1"
    assert event["outputs"] == [{"input": "/in/a.npy", "path": "/out/a_disparity.npy",
                                 "kind": "disparity", "width": 40, "height": 24}]
    assert event["info"]["peak_memory_mb"] == 900.0 and "peak_vram_mb" not in event["info"]


@pytest.mark.parametrize("message, problem", [
    ({"task": "height", "inputs": ["a"], "output_dir": "o"}, "unknown task 'height'"),
    ({"task": "depth", "inputs": [], "output_dir": "o"}, "no input images given"),
    ({"task": "depth", "inputs": ["a"], "output_dir": ""}, "no output folder given"),
    ({"task": "depth", "inputs": ["a"], "output_dir": "o", "options": {"device": "tpu"}},
     "unknown device 'tpu'"),
    ({"task": "depth", "inputs": ["a"], "output_dir": "o",
      "options": {"processing_resolution": -8}}, "must be 0 (native) or positive"),
])
def test_a_request_the_worker_cannot_run_says_why(message, problem):
    with pytest.raises(protocol.ProtocolError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        protocol.PredictRequest.from_message(message)


def test_prediction_stage_names_only_what_there_is_more_than_one_of():
    assert protocol.prediction_stage(protocol.STEP_ENCODING) == "encoding"
    assert protocol.prediction_stage(protocol.STEP_DECODING, 2, 2) == "image 2/2: decoding"
    assert protocol.prediction_stage(protocol.STEP_PREDICTING, 3, 12, 2, 4) == \
        "image 3/12, tile 2/4: predicting"
    assert protocol.prediction_stage(protocol.STEP_PREDICTING, tile=1, tiles=5) == "tile 1/5: predicting"
