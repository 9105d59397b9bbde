"""A fresh Blender (the bpy module) for a test that must not touch this session's: saving the .blend,
opening another, reloading scripts.

The test runs ``PREAMBLE + script`` with run(): the preamble installs the extension under
WORK/repo with the tiny checkpoints (install()) and leaves ``bpy``, ``blender_env``, ``name`` (the
add-on's module), ``work`` (a Path) and ``args`` (the JSON given to run) to the script, which ends with
``report(result)``: the one line ``RESULT <json>`` run() reads back, then an exit that skips bpy's
own shutdown (blender_env.exit_child).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import blender_env
from tests.blender_side import configure

PREAMBLE = r'''
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import bpy
from tests import blender_env
from tests.blender_child import install, report
work, args = Path(sys.argv[2]), json.loads(sys.argv[3])
name = install(work, args)
'''


def checkpoint_args(tiny_checkpoints: dict) -> dict:
    """The tiny G checkpoints as install() takes them."""
    return {"depth": str(tiny_checkpoints[("G", "disparity")]),
            "normal": str(tiny_checkpoints[("G", "normal")])}


def install(work: Path, args: dict) -> str:
    """In the child: the extension installed under work/repo, its preferences set as the tests set
    them (blender_side.configure) with args' "depth" and "normal" checkpoints; the output folder
    stays the default (//lotus/) unless args has "output"."""
    name = blender_env.install_extension(work / "repo")
    configure(name, {("G", "disparity"): args["depth"], ("G", "normal"): args["normal"]},
              args.get("output"))
    return name


def report(result) -> None:
    """In the child: hand result to the parent and exit."""
    print("RESULT " + json.dumps(result), flush=True)
    blender_env.exit_child()


def result_of(command: list, user_folder: Path, timeout: int = 300, env: dict | None = None,
              check_status: bool = True):
    """Run command (a child Blender) with its own user folder; the JSON of its last RESULT line.
    check_status: its exit status must be 0 as well."""
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user_folder), **(env or {}))
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines and (run.returncode == 0 or not check_status), \
        run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def run(script: str, work: Path, args: dict, timeout: int = 300, env: dict | None = None):
    """PREAMBLE + script in a fresh Blender working in work; what it reported."""
    return result_of([sys.executable, "-c", PREAMBLE + script, str(blender_env.REPO_ROOT),
                      str(work), json.dumps(args)], work / "user", timeout, env)
