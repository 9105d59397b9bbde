"""The Flamenco job type (farm/flamenco/lotus-predict.js) under an emulation of Flamenco written
from Flamenco's source (tests/flamenco_emulation.js: the Manager stores the settings as submitted,
with no defaults and no checks; the Worker turns a missing value into "<nil>"; variables such as
{blender} are replaced; a cancelled task is killed with SIGKILL), with the submissions Blender's
Flamenco add-on makes and with minimal API submissions. Each compiled task's command then runs for
real on a stand-in node (tests/farm_node.py), as a Flamenco Worker runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.farm_node import make_blender, map_files
from tests.test_cli import PROGRESS, write_frames

ROOT = Path(__file__).resolve().parent.parent
JOB_TYPE = ROOT / "farm" / "flamenco" / "lotus-predict.js"
EMULATION = ROOT / "tests" / "flamenco_emulation.js"
BLENDER = "/opt/blender/blender"
PLACEHOLDERS = ("<nil>", "undefined", "null", "None", "")

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def submit(tmp_path, settings: dict, script: Path = JOB_TYPE, **submission) -> dict:
    """What the Manager answers a job submission: status 200 with the stored settings and the
    tasks (each command's argv as the Worker runs it), or 400 with the error text."""
    path = tmp_path / "submission.json"
    submission.setdefault("variables", {"blender": BLENDER})
    path.write_text(json.dumps({"settings": settings, **submission}))
    run = subprocess.run(["node", str(EMULATION), "submit", str(script), str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def job_type() -> dict:
    run = subprocess.run(["node", str(EMULATION), "job-type", str(JOB_TYPE)], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(run.stdout)


def addon_settings(**chosen) -> dict:
    """The settings Blender's Flamenco add-on submits (addon/flamenco/job_types_propgroup.py:
    as_jobsettings sends every setting; each property starts at the setting's default coerced to
    its type, else at Blender's default for the property: "", 0, 0.0, False, an enum's first
    choice), with the values the artist chose."""
    zero = {"string": "", "int32": 0, "float": 0.0, "bool": False}
    coerce = {"string": str, "int32": int, "float": float, "bool": bool}
    values = {}
    for setting in job_type()["settings"]:
        if "default" in setting:
            values[setting["key"]] = coerce[setting["type"]](setting["default"])
        elif "choices" in setting:
            values[setting["key"]] = setting["choices"][0]
        else:
            values[setting["key"]] = zero[setting["type"]]
    assert set(chosen) <= set(values)
    return {**values, **chosen}


def argvs(result: dict) -> list[list[str]]:
    assert result["status"] == 200, result
    return [command["argv"] for task in result["tasks"] for command in task["commands"]]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_job_type_is_what_the_manager_and_addon_read():
    """JOB_TYPE within the OpenAPI schema of job settings (pkg/api/flamenco-openapi.yaml:
    AvailableJobSetting), defaults of their own type and among their choices."""
    settings = job_type()["settings"]
    assert len({s["key"] for s in settings}) == len(settings)
    python_type = {"string": str, "int32": int, "float": float, "bool": bool}
    for setting in settings:
        assert setting["type"] in python_type
        assert setting.get("subtype", "file_path") in ("file_path", "dir_path", "file_name",
                                                        "hashed_file_path")
        if "choices" in setting:
            assert setting["type"] == "string" and setting.get("default") in setting["choices"]
        if "default" in setting:
            assert type(setting["default"]) is python_type[setting["type"]], setting
    # Every still-image extension Blender reads is known to the picked-frame rule, no movie is.
    bpy = pytest.importorskip("bpy")
    source = JOB_TYPE.read_text()
    listed = set(re.findall(r'"(\.[a-z0-9]+)"', source.split("LOTUS_IMAGE_EXTENSIONS = [")[1]
                            .split("]")[0]))
    assert set(bpy.path.extensions_image) <= listed
    assert not listed & set(bpy.path.extensions_movie)


def test_addon_submission(tmp_path):
    """All settings as the add-on sends them, a frame picked in the file browser as input."""
    result = submit(tmp_path, addon_settings(input="/plates/shot_1001.exr",
                                             frames="1001-1060,1070", output="/maps",
                                             task="both", resolution=512, stabilize=False))
    assert result["settings"]["input"] == "/plates/shot_####.exr"  # what the job page shows
    tasks = result["tasks"]
    assert [t["name"] for t in tasks] == ["lotus-1001-1025", "lotus-1026-1050",
                                          "lotus-1051-1060,1070"]
    assert all(not t["dependencies"] and t["steps_total"] == 1 for t in tasks)
    assert tasks[2]["commands"][0]["argv"] == [
        BLENDER, "-b", "-c", "lotus", "predict", "/plates/shot_####.exr",
        "--frames", "1051-1060,1070", "--output", "/maps", "--task", "both", "--device", "auto",
        "--precision", "auto", "--resolution", "512", "--no-stabilize"]
    # Chained chunks wait for each other; extra arguments are split like a shell does.
    result = submit(tmp_path, addon_settings(
        input="/plates/shot_####.exr", frames="1-50", output="/maps", chain_chunks=True,
        extra_args="--seed 3 --python '/opt/my python/bin/python3'  # site default"))
    assert [t["dependencies"] for t in result["tasks"]] == [[], ["lotus-1-25"]]
    assert argvs(result)[0][-5:] == ["--stabilize", "--seed", "3", "--python",
                                     "/opt/my python/bin/python3"]
    # The add-on's Output field left empty.
    result = submit(tmp_path, addon_settings(input="/plates/shot_####.exr", frames="1-50"))
    assert result["status"] == 400 and 'the "output" setting is empty' in result["error"]


def test_minimal_api_submission(tmp_path):
    """Input, frames and output only (the API, a script, a newer add-on): the job type's own
    defaults, never a placeholder."""
    result = submit(tmp_path, {"input": "/plates/shot_####.exr", "frames": "1-60",
                               "output": "/maps"})
    commands = argvs(result)
    assert len(commands) == 3  # chunks of 25, one model load each
    for argv in commands:
        assert not set(argv) & set(PLACEHOLDERS), argv
        assert [option(argv, o) for o in ("--task", "--device", "--precision")] == \
            ["depth", "auto", "auto"]
        assert "--stabilize" in argv and "--tiled" not in argv and "--resolution" not in argv
    assert result["settings"]["chunk_size"] == 25 and result["settings"]["stabilize"] is True


def test_the_emulation_is_as_lenient_as_the_manager(tmp_path):
    """A job type that trusts the settings gets what the issue saw on a real Manager."""
    naive = tmp_path / "naive.js"
    naive.write_text("""
const JOB_TYPE = {label: "naive", settings: [
  {key: "task", type: "string", choices: ["depth", "normal"], default: "depth", required: true},
  {key: "resolution", type: "int32", default: 0}]};
function compileJob(job) {
  const s = job.settings;
  const task = author.Task("naive", "blender");
  task.addCommand(author.Command("exec", {exe: "{blender}",
    args: ["--task", s.task, "--output", s.output, "--resolution", s.resolution, s.flag]}));
  job.addTask(task);
}""")
    argv = argvs(submit(tmp_path, {"resolution": 1000000, "flag": True}, script=naive))[0]
    assert argv == [BLENDER, "--task", "<nil>", "--output", "<nil>", "--resolution", "1e+06",
                    "true"]
    assert argvs(submit(tmp_path, {"task": "albedo"}, script=naive))[0][2] == "albedo"


@pytest.mark.parametrize("bad, message", [
    ({"input": None}, 'the "input" setting is missing'),
    ({"output": ""}, 'the "output" setting is empty'),
    ({"output": "<nil>"}, 'placeholder "<nil>"'),
    ({"output": "maps"}, '"output" must be an absolute path'),
    ({"input": "//plates/shot_####.exr"}, "relative to the blend file"),
    ({"input": "/plates/photo.jpg"}, "is a single image, not a sequence"),
    ({"frames": "9-3"}, '"frames" is not a frame range'),
    ({"frames": "1-x"}, '"frames" is not a frame range'),
    ({"task": "albedo"}, '"task" must be one of depth, normal, both, not "albedo"'),
    ({"chunk_size": "5"}, '"chunk size" must be a int32'),
    ({"chunk_size": 2.5}, '"chunk size" must be a int32'),
    ({"chunk_size": 0}, '"chunk size" must be at least 1'),
    ({"stabilize": "yes"}, '"stabilize" must be a bool'),
    ({"extra_args": "--seed '3"}, '"extra args" cannot be split'),
    ({"chunksize": 5}, 'unknown setting "chunksize"'),
])
def test_refused_submissions(tmp_path, bad, message):
    settings = {"input": "/plates/shot_####.exr", "frames": "1-10", "output": "/maps", **bad}
    result = submit(tmp_path, {k: v for k, v in settings.items() if v is not None})
    assert result["status"] == 400 and message in result["error"], result


def test_flamenco_versions(tmp_path):
    """`exec` is a Worker command from 3.3, shellSplit from 3.6, step counts from 3.8."""
    minimal = {"input": "/plates/shot_####.exr", "frames": "1-10", "output": "/maps"}
    old = submit(tmp_path, minimal, version="3.2")
    assert old["tasks"][0]["commands"][0]["error"] == 'unknown command: "exec"'
    result = submit(tmp_path, minimal, version="3.3")
    assert argvs(result) and "steps_total" not in result["tasks"][0]
    result = submit(tmp_path, {**minimal, "extra_args": "--seed 3"}, version="3.3")
    assert result["status"] == 400 and "needs Flamenco 3.6 or newer" in result["error"]
    assert argvs(submit(tmp_path, {**minimal, "extra_args": "--seed 3"}, version="3.6"))[0][-2:] \
        == ["--seed", "3"]


def test_two_way_variables(tmp_path):
    """The Manager stores shared paths as {variable}/... and gives each Worker its own value."""
    result = submit(tmp_path, {"input": "/shared/plates/shot_1001.exr", "frames": "1001-1002",
                               "output": "/shared/maps"},
                    two_way_variables={"storage": "/shared"})
    assert result["settings"]["input"] == "{storage}/plates/shot_####.exr"
    argv = argvs(result)[0]
    assert argv[5] == "/shared/plates/shot_####.exr" and option(argv, "--output") == "/shared/maps"


def run_task(task: dict, kill_after_frames: int = 0) -> tuple[int, str, int]:
    """What a Flamenco Worker does with a task: each command in turn, stdout and stderr as one log
    (cli_runner.RunWithTextOutput), stopping at the first failure; steps_completed grows by one
    per finished command without a step count of its own (task_executor.reportCommandCompletion).
    kill_after_frames: cancel the task, as the Manager does, once that many frames are computed:
    the Worker's exec.CommandContext kills the process with SIGKILL."""
    log, steps = [], 0
    for command in task["commands"]:
        assert "argv" in command, command
        process = subprocess.Popen(command["argv"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        computed = 0
        for line in process.stdout:
            log.append(line)
            match = PROGRESS.match(line)
            if kill_after_frames and match and match.group(6) == "computed":
                computed += 1
                if computed == kill_after_frames:
                    process.send_signal(signal.SIGKILL)
                    break
        process.wait(timeout=600)
        if process.returncode != 0:
            return process.returncode, "".join(log), steps
        steps += command["total_step_count"] == 0
    return 0, "".join(log), steps


def expected_maps(name: str, frames, tasks=("depth", "normal")) -> list[str]:
    names = {"depth": ["{n}_depth_{f:04d}.exr"],
             "normal": ["{n}_normal_{f:04d}.exr", "{n}_normal_opengl_{f:04d}.png"]}
    return sorted(p.format(n=name, f=f) for t in tasks for p in names[t] for f in frames)


@pytest.mark.blender
def test_tasks_run_on_a_worker(tiny_checkpoints, tmp_path):
    node = make_blender(tmp_path / "node", tiny_checkpoints)
    plates = write_frames(tmp_path / "plates", "shot", range(1, 6))
    out = tmp_path / "maps"
    # The add-on's submission, a frame picked in the file browser.
    result = submit(tmp_path, addon_settings(input=str(plates / "shot_0003.png"), frames="1-5",
                                             chunk_size=2, output=str(out), task="both",
                                             device="cpu", precision="fp32"),
                    variables={"blender": str(node)})
    tasks = result["tasks"]
    assert [t["name"] for t in tasks] == ["lotus-1,2", "lotus-3,4", "lotus-5"]
    for task in tasks:
        code, log, steps = run_task(task)
        assert code == 0 and steps == task["steps_total"] == 1, log[-3000:]
    assert map_files(out) == expected_maps("shot", range(1, 6))
    # A minimal API submission: one task (chunks of 25), depth maps, the node's preferences.
    out_minimal = tmp_path / "maps-minimal"
    result = submit(tmp_path, {"input": str(plates / "shot_####.png"), "frames": "1-5",
                               "output": str(out_minimal)}, variables={"blender": str(node)})
    assert len(result["tasks"]) == 1
    code, log, _ = run_task(result["tasks"][0])
    assert code == 0, log[-3000:]
    assert map_files(out_minimal) == expected_maps("shot", range(1, 6), ("depth",))


def test_cancelled_task_is_requeued(tiny_checkpoints, tmp_path):
    """Cancel (SIGKILL) mid-chunk, requeue on the same node: finished frames stay, the rest run."""
    node = make_blender(tmp_path / "node", tiny_checkpoints)
    plates = write_frames(tmp_path / "plates", "shot", range(1, 5))
    out = tmp_path / "maps"
    task = submit(tmp_path, {"input": str(plates / "shot_####.png"), "frames": "1-4",
                             "output": str(out)}, variables={"blender": str(node)})["tasks"][0]
    code, log, _ = run_task(task, kill_after_frames=1)
    assert code == -signal.SIGKILL, log[-3000:]
    finished = {name: os.stat(out / name).st_mtime_ns for name in map_files(out)}
    assert len(finished) >= 1
    code, log, steps = run_task(task)
    assert code == 0 and steps == 1, log[-3000:]
    statuses = [m.group(6) for m in map(PROGRESS.match, log.splitlines()) if m]
    assert statuses.count("skipped") == len(finished) and len(statuses) == 4
    assert map_files(out) == expected_maps("shot", range(1, 5), ("depth",))
    assert all(os.stat(out / name).st_mtime_ns == stamp for name, stamp in finished.items())
