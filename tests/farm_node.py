"""A farm node for the farm tests: a stand-in ``blender`` executable that runs
``blender -b -c lotus ARGS`` the way tests/cli_child.py does (a fresh Blender, the bpy module of
the running line, with the extension installed and the tiny checkpoints as its preferences).
Flamenco's Worker and ``openjd run`` start it as they would start Blender."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CHILD = Path(__file__).resolve().parent / "cli_child.py"

_STANDIN = '''
import os, sys
if sys.argv[1:4] != ["-b", "-c", "lotus"]:
    sys.exit("stand-in blender: only 'blender -b -c lotus ...' is emulated, got %r" % sys.argv[1:])
os.environ["BLENDER_USER_RESOURCES"] = {user!r}
os.environ["PYTHONUNBUFFERED"] = "1"
os.chdir({cwd!r})  # cli_child imports the tests package from the repository
os.execv({python!r}, [{python!r}, {child!r}, {config!r}] + sys.argv[4:])
'''


def make_blender(folder: Path, tiny_checkpoints) -> Path:
    """An executable ``folder/blender``; the node's user folders live beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"repo": str(folder / "repo"), "output": str(folder / "unused"),
              "depth": str(tiny_checkpoints[("G", "disparity")]),
              "normal": str(tiny_checkpoints[("G", "normal")])}
    script = folder / "blender"
    script.write_text(f"#!{sys.executable}\n" + _STANDIN.format(
        user=str(folder / "user"), cwd=str(CHILD.parent.parent), python=sys.executable,
        child=str(CHILD), config=json.dumps(config)))
    script.chmod(0o755)
    return script


def map_files(folder: Path) -> list[str]:
    """The finished maps in a folder (hidden claim/partial files excluded)."""
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def map_pixels(path: Path):
    """A map's pixels as Blender reads them (float RGBA), through the running line's bpy."""
    import bpy
    import numpy as np
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        pixels = np.empty(image.size[0] * image.size[1] * image.channels, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        return pixels
    finally:
        bpy.data.images.remove(image)
