"""The Flamenco job type (farm/flamenco/lotus-predict.js) compiled under Node by a harness that
implements Flamenco's job-authoring API (tests/flamenco_harness.js), then every compiled task's
command line run for real through the command-line function, as a Flamenco Worker would."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_cli import progress_lines, write_frames

ROOT = Path(__file__).resolve().parent.parent
JOB_TYPE = ROOT / "farm" / "flamenco" / "lotus-predict.js"
HARNESS = ROOT / "tests" / "flamenco_harness.js"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def compile_job(tmp_path, settings: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    return subprocess.run(["node", str(HARNESS), str(JOB_TYPE), str(path)], capture_output=True,
                          text=True, timeout=60)


def test_chunks_and_options(tmp_path):
    run = compile_job(tmp_path, {"input": "/plates/shot_####.exr", "frames": "1001-1060,1070",
                                 "output": "/maps", "task": "both", "depth_model": "/models/d",
                                 "resolution": 512, "stabilize": False, "chain_chunks": True,
                                 "extra_args": "--seed 3"})
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)
    assert [t["name"] for t in job["tasks"]] == ["lotus-1001-1025", "lotus-1026-1050",
                                                 "lotus-1051-1060", "lotus-1070-1070"]
    assert [t["dependencies"] for t in job["tasks"]] == [[], ["lotus-1001-1025"],
                                                         ["lotus-1026-1050"], ["lotus-1051-1060"]]
    command = job["tasks"][1]["commands"][0]
    assert command["name"] == "exec" and command["parameters"]["exe"] == "{blender}"
    assert command["parameters"]["args"] == [
        "-b", "-c", "lotus", "predict", "/plates/shot_####.exr", "--frames", "1026-1050",
        "--output", "/maps", "--task", "both", "--device", "auto", "--precision", "auto",
        "--depth-model", "/models/d", "--resolution", "512", "--no-stabilize", "--seed", "3"]
    # Parallel chunks by default; the Manager's own checks reject bad submissions.
    run = compile_job(tmp_path, {"input": "/p/a_####.png", "frames": "1-10", "output": "/o"})
    assert all(not t["dependencies"] for t in json.loads(run.stdout)["tasks"])
    for bad, message in (({"frames": "9-3"}, "ends before it starts"),
                         ({"task": "albedo"}, "not one of"),
                         ({"chunk_size": "5"}, "is not a int32")):
        settings = dict({"input": "/p/a_####.png", "frames": "1-10", "output": "/o"}, **bad)
        run = compile_job(tmp_path, settings)
        assert run.returncode != 0 and message in run.stderr
    run = compile_job(tmp_path, {"input": "/p/a_####.png", "frames": "1-10"})
    assert run.returncode != 0 and "required setting output" in run.stderr


def test_compiled_tasks_run_through_the_command(lotus, tmp_path, capsys):
    cli = importlib.import_module(f"{lotus.name}.blender.cli")
    plates = write_frames(tmp_path / "plates", "shot", range(1, 8))
    out = tmp_path / "maps"
    run = compile_job(tmp_path, {"input": str(plates / "shot_####.png"), "frames": "1-7",
                                 "chunk_size": 3, "output": str(out), "task": "both",
                                 "device": "cpu", "precision": "fp32"})
    assert run.returncode == 0, run.stderr
    tasks = json.loads(run.stdout)["tasks"]
    assert [t["name"] for t in tasks] == ["lotus-1-3", "lotus-4-6", "lotus-7-7"]
    for task in tasks:  # what a Worker does with each exec command
        args = task["commands"][0]["parameters"]["args"]
        assert args[:3] == ["-b", "-c", "lotus"]
        assert cli.main(args[3:]) == 0, task["name"]
    frames = [(line[3], int(line[4])) for line in progress_lines(capsys.readouterr().out)]
    assert sorted(frames) == sorted((task, f) for task in ("depth", "normal") for f in range(1, 8))
    names = set(os.listdir(out))
    for frame in range(1, 8):
        for name in (f"shot_depth_{frame:04d}.exr", f"shot_normal_{frame:04d}.exr",
                     f"shot_normal_opengl_{frame:04d}.png"):
            assert name in names
    # Requeueing a task (a Worker that died) recomputes nothing that is finished.
    assert cli.main(tasks[1]["commands"][0]["parameters"]["args"][3:]) == 0
    assert {line[5] for line in progress_lines(capsys.readouterr().out)} == {"skipped"}
