"""The Open Job Description job bundle (farm/openjd/lotus-predict/) checked and run by the real
tools from PyPI: `openjd check` and `openjd run` (openjd-cli) and Deadline Cloud's own reading of a
job bundle (the `deadline` client: `deadline bundle info`, and the functions its submitter uses
for parameter values and job attachments). tests/run.py installs them into .venv-openjd/ and names
its bin folder in LOTUS_TEST_OPENJD_BIN. The run goes through a stand-in `blender` that runs the
command line in a fresh Blender (tests/farm_node.py); its maps must equal a direct run's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.blender_side import PROCESSING_RESOLUTION
from tests.farm_node import make_blender, map_files, map_pixels
from tests.test_cli import PROGRESS, write_frames

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "farm" / "openjd" / "lotus-predict"
TEMPLATE = BUNDLE / "template.yaml"
TOOLS = os.environ.get("LOTUS_TEST_OPENJD_BIN", "")

pytestmark = pytest.mark.skipif(not TOOLS, reason="run through tests/run.py, which installs "
                                                  "openjd-cli and deadline into .venv-openjd/")


def tool(name: str, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(TOOLS, name), *args], capture_output=True, text=True,
                          timeout=kwargs.pop("timeout", 120), **kwargs)


def test_openjd_check():
    check = tool("openjd", "check", str(TEMPLATE))
    assert check.returncode == 0 and "passes validation checks" in check.stdout, check
    # The chunked frame ranges are the TASK_CHUNKING extension, which this openjd implements:
    # refusing the extension makes the same template fail.
    refused = tool("openjd", "check", "--extensions", "", str(TEMPLATE))
    assert refused.returncode != 0 and "TASK_CHUNKING" in refused.stdout + refused.stderr


@pytest.mark.parametrize("params, message", [
    ({"InputDir": "/plates", "OutputDir": "/maps"}, "Values missing for required job parameters: Frames"),
    ({"InputDir": "/plates", "Frames": "1-3"}, "Values missing for required job parameters: OutputDir"),
    ({"Task": "albedo"}, "Parameter Task value (albedo) not in allowedValues"),
    ({"ChunkSize": "0"}, "Value (0) for parameter ChunkSize must be at least 1"),
])
def test_openjd_refuses_missing_and_invalid_values(params, message):
    """Unlike Flamenco's Manager, an Open Job Description runner checks the parameters itself."""
    if "InputDir" not in params:  # a complete submission with one bad value
        params = {"InputDir": "/plates", "Frames": "1-3", "OutputDir": "/maps", **params}
    run = tool("openjd", "run", str(TEMPLATE),
               *[arg for name, value in params.items() for arg in ("-p", f"{name}={value}")])
    assert run.returncode != 0 and message in run.stdout + run.stderr, run.stdout + run.stderr


def test_deadline_cloud_reads_the_bundle(tmp_path):
    info = tool("deadline", "bundle", "info", str(BUNDLE), "--output", "json",
                env=dict(os.environ, HOME=str(tmp_path)))
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["steps"] == ["Predict"]
    assert {p["name"] for p in described["parameters"]} >= {"InputDir", "Frames", "OutputDir"}
    # What `deadline bundle submit -p ...` does with the bundle before calling CreateJob.
    probe = """
import json, sys
from deadline.client.job_bundle.parameters import apply_job_parameters, read_job_bundle_parameters
from deadline.client.job_bundle.submission import AssetReferences
bundle, values = sys.argv[1], json.loads(sys.argv[2])
parameters = read_job_bundle_parameters(bundle)
assets = AssetReferences()
apply_job_parameters(values, bundle, parameters, assets)
print(json.dumps({"values": {p["name"]: p.get("value", p.get("default")) for p in parameters},
                  "inputs": sorted(assets.input_directories),
                  "outputs": sorted(assets.output_directories)}))
"""
    values = [{"name": "InputDir", "value": "/plates"}, {"name": "Frames", "value": "1001-1100"},
              {"name": "OutputDir", "value": "/maps"}, {"name": "InputName",
                                                        "value": "shot_####.exr"}]
    read = tool("python", "-c", probe, str(BUNDLE), json.dumps(values),
                env=dict(os.environ, HOME=str(tmp_path)))
    assert read.returncode == 0, read.stderr
    bundle = json.loads(read.stdout)
    assert bundle["inputs"] == ["/plates"] and bundle["outputs"] == ["/maps"]  # job attachments
    assert bundle["values"]["deadline:priority"] == 50 and bundle["values"]["ChunkSize"] == 25


def test_openjd_run_equals_a_direct_run(tiny_checkpoints, tmp_path):
    """Chunks of 2 over frames 1-4, run by `openjd run`, against the same chunk commands run by
    hand (as Deadline 10 or OpenCue would run them). A whole-range run differs at the chunk starts
    by design: G models blend each frame's noise with the previous frame's latent, within a run."""
    node = make_blender(tmp_path / "node", tiny_checkpoints)
    plates = write_frames(tmp_path / "plates", "shot", range(1, 5))
    params = {"InputDir": str(plates), "InputName": "shot_####.png", "Frames": "1-4",
              "ChunkSize": "2", "OutputDir": str(tmp_path / "maps"), "Blender": str(node),
              "Task": "both", "Device": "cpu", "Precision": "fp32",
              "Resolution": str(PROCESSING_RESOLUTION)}
    run = tool("openjd", "run", str(TEMPLATE),
               *[arg for name, value in params.items() for arg in ("-p", f"{name}={value}")],
               timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "Chunks run: 2" in run.stdout
    chunks = [line.split("= ")[1] for line in run.stdout.splitlines()
              if "Frame(CHUNK[INT]) = " in line]
    assert chunks == ["1-2", "3-4"]
    statuses = [m.group(6) for line in run.stdout.splitlines()
                if (m := PROGRESS.match(line.split("\t", 1)[-1]))]
    assert statuses == ["computed"] * 8

    for chunk in chunks:
        direct = subprocess.run(
            [str(node), "-b", "-c", "lotus", "predict", str(plates / "shot_####.png"),
             "--frames", chunk, "--output", str(tmp_path / "direct"), "--task", "both",
             "--device", "cpu", "--precision", "fp32", "--resolution",
             str(PROCESSING_RESOLUTION)], capture_output=True, text=True, timeout=600)
        assert direct.returncode == 0, direct.stdout[-2000:] + direct.stderr[-2000:]
    names = map_files(tmp_path / "direct")
    assert len(names) == 12 and map_files(tmp_path / "maps") == names
    for name in names:
        # Equal up to the run-to-run noise of multithreaded float32 CPU math (two identical
        # direct runs differ by about 5e-7) and one step of a 16-bit PNG.
        np.testing.assert_allclose(map_pixels(tmp_path / "maps" / name),
                                   map_pixels(tmp_path / "direct" / name), rtol=0, atol=4e-5,
                                   err_msg=name)
