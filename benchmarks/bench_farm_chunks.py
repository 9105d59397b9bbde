"""How much a farm's chunking changes the maps: the command line (`blender -b -c lotus predict`) in
fresh Blender processes on a stand-in node (tests/farm_node.py) with tiny random-weight G models,
on a 6-frame sequence:
  - run to run: the same command twice (multithreaded float32 CPU math is not bit-exact);
  - chunked against whole: chunks of 2 (as a farm runs them), one after another into one folder,
    against one run over 1-6. A G model's noise depends on the seed alone, so the raw maps match;
    stabilization aligns to the frames before, which a later chunk reads back from disk.
Prints JSON: the largest absolute difference per depth frame (maps in [0, 1]).

    .venv/bin/python benchmarks/bench_farm_chunks.py > benchmarks/results/bench_farm_chunks.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
work = Path(tempfile.mkdtemp(prefix="lotus-bench-farm-"))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(work / "user"))

import numpy as np  # noqa: E402

from tests.farm_node import make_blender, map_pixels  # noqa: E402
from tests.test_cli import write_frames  # noqa: E402
from tests.tiny_lotus import make_tiny_checkpoints  # noqa: E402

FRAMES = range(1, 7)


def main() -> None:
    checkpoints = make_tiny_checkpoints(work / "models", [("G", "disparity"), ("G", "normal")])
    node = make_blender(work / "node", checkpoints)
    plates = write_frames(work / "plates", "shot", FRAMES)

    def run(out: str, frames: str) -> None:
        subprocess.run([str(node), "-b", "-c", "lotus", "predict", str(plates / "shot_####.png"),
                        "--frames", frames, "--output", str(work / out), "--device", "cpu",
                        "--precision", "fp32", "--resolution", "64"],
                       check=True, capture_output=True, text=True)

    run("whole", "1-6")
    run("again", "1-6")
    for chunk in ("1-2", "3-4", "5-6"):
        run("chunked", chunk)

    def difference(a: str, b: str) -> dict:
        return {frame: float(np.abs(map_pixels(work / a / f"shot_depth_{frame:04d}.exr")
                                    - map_pixels(work / b / f"shot_depth_{frame:04d}.exr")).max())
                for frame in FRAMES}

    print(json.dumps({"frames": list(FRAMES), "chunks": ["1-2", "3-4", "5-6"],
                      "run_to_run_max_abs": difference("whole", "again"),
                      "chunked_vs_whole_max_abs": difference("chunked", "whole")}, indent=1))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # PyPI bpy can crash in its own shutdown
