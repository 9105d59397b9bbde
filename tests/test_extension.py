"""The package installs, registers and unregisters like a real Blender extension."""

import ast
import importlib.util
import sys

import pytest


def test_installed_as_extension(blender_addon):
    import bpy
    assert blender_addon == "bl_ext.lotus_test.lotus_blender"
    assert blender_addon in bpy.context.preferences.addons
    prefs = bpy.context.preferences.addons[blender_addon].preferences
    assert prefs.bl_rna.identifier == "LotusPreferences"
    # Defaults an artist starts with (other tests change the live values).
    defaults = {name: prop.default for name, prop in prefs.bl_rna.properties.items()
                if hasattr(prop, "default") and not getattr(prop, "is_array", False)}
    assert defaults["processing_resolution"] == 768
    assert defaults["device"] == 'AUTO' and defaults["precision"] == 'AUTO'
    assert defaults["output_dir"] == "//lotus/" and defaults["normal_convention"] == 'OPENGL'
    assert defaults["python_path"] == ""


def test_sidebar_panels(blender_addon):
    import bpy
    for name, space in (("LOTUS_PT_view3d", 'VIEW_3D'), ("LOTUS_PT_image_editor", 'IMAGE_EDITOR')):
        panel = getattr(bpy.types, name)
        assert panel.bl_space_type == space
        assert panel.bl_region_type == 'UI'
        assert panel.bl_category == "Lotus"


# Enable/disable cycles and Reload Scripts run in a fresh Blender process: reloading re-imports
# every add-on, which must not pull modules from under the other tests of this session.
CYCLES_SCRIPT = r"""
import json, os, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import bpy
import addon_utils
from tests import blender_env

def registered():
    names = {n for n in ("LOTUS_PT_view3d", "LOTUS_PT_image_editor") if hasattr(bpy.types, n)}
    if any(c.__name__ == "LotusPreferences" and c.is_registered
           for c in bpy.types.AddonPreferences.__subclasses__()):
        names.add("LotusPreferences")
    return sorted(names)

def snapshot(name):
    return {"registered": registered(), "enabled": name in bpy.context.preferences.addons,
            "submodules": sorted(m for m in sys.modules if m.startswith(name + ".")),
            "workers": blender_env.worker_processes()}

name = blender_env.install_extension(Path(tempfile.mkdtemp()))
report = {"cycles": []}
for _ in range(3):
    blender_env.disable_extension(name)
    off = snapshot(name)
    addon_utils.enable(name, default_set=True, handle_error=blender_env._raise)
    report["cycles"].append({"off": off, "on": snapshot(name)})
old_panel = bpy.types.LOTUS_PT_view3d
# What Reload Scripts runs (the operator itself does nothing in background mode).
bpy.utils.load_scripts(reload_scripts=True)
report["reload"] = dict(snapshot(name), fresh=bpy.types.LOTUS_PT_view3d is not old_panel,
                        old_unregistered=not old_panel.is_registered)
blender_env.disable_extension(name)
report["final_off"] = snapshot(name)
print("REPORT " + json.dumps(report))
blender_env.exit_child()
"""

ALL = ["LOTUS_PT_image_editor", "LOTUS_PT_view3d", "LotusPreferences"]


def _cycles_report(tmp_path):
    import json
    import os
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    proc = subprocess.run([sys.executable, "-c", CYCLES_SCRIPT, str(root)], capture_output=True,
                          text=True, env=env, timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[0][len("REPORT "):])


@pytest.fixture(scope="module")
def cycles_report(tmp_path_factory):
    return _cycles_report(tmp_path_factory.mktemp("cycles"))


@pytest.mark.blender
def test_disable_enable_cycles_leave_nothing_behind(cycles_report):
    assert len(cycles_report["cycles"]) == 3
    for cycle in cycles_report["cycles"]:
        assert cycle["off"] == {"registered": [], "enabled": False, "submodules": [], "workers": []}
        assert cycle["on"]["registered"] == ALL and cycle["on"]["enabled"]
    assert cycles_report["final_off"]["registered"] == []
    assert cycles_report["final_off"]["workers"] == []


@pytest.mark.blender
def test_reload_scripts_registers_fresh_code_once(cycles_report):
    reload = cycles_report["reload"]
    assert reload["registered"] == ALL and reload["enabled"]
    assert reload["fresh"] and reload["old_unregistered"]
    assert reload["workers"] == []


# What each layer of the package may import. core: numpy only; worker: never bpy; Blender side:
# never torch; protocol.py: the standard library only. Inside the package, imports run one way:
# worker and Blender side use core and protocol, core uses core alone; the Blender side reads
# checkpoints with worker.checkpoint (standard library only), never anything else of the worker.
_FORBIDDEN = {"core": {"bpy", "torch", "diffusers", "transformers", "mathutils"},
              "worker": {"bpy", "mathutils", "bmesh"},
              "blender": {"torch", "diffusers", "transformers", "huggingface_hub"},
              "protocol": {"bpy", "torch", "numpy"}}
_PACKAGE = "lotus_blender"
_MAY_USE = {"core": ("core",), "worker": ("worker", "core", "protocol"),
            "blender": ("blender", "core", "protocol", "worker.checkpoint"), "protocol": ()}


def _module_name(rel) -> tuple[str, bool]:
    """(dotted module name, is a package) of a file at rel (a PurePath inside the package)."""
    parts = [_PACKAGE, *rel.with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imported_modules(tree, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(absolute name, line) of everything a parsed module imports, relative imports resolved as
    Python does: ``from ..blender import inputs`` in lotus_blender/worker/x.py gives
    lotus_blender.blender.inputs (a name taken from a module counts as that module's part)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module
            found += [(base if alias.name == "*" else f"{base}.{alias.name}", node.lineno)
                      for alias in node.names]
    return found


def layer_problems(rel, source: str) -> list[str]:
    """What breaks the layering in one file of the package (rel: its PurePath inside it)."""
    layer = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    if layer not in _MAY_USE:
        return []  # the package's __init__.py: the extension's entry, which registers the Blender side
    module, is_package = _module_name(rel)
    tree = ast.parse(source)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == _PACKAGE:
            problems.append(f"{rel}:{node.lineno}: absolute import of the package (use relative imports)")
    try:
        imported = imported_modules(tree, module, is_package)
    except ImportError as ex:  # a relative import above the package
        return problems + [f"{rel}: {ex}"]
    for name, line in imported:
        top, _, rest = name.partition(".")
        if top in _FORBIDDEN[layer]:
            problems.append(f"{rel}:{line}: imports {name}")
        elif top == _PACKAGE and rest and not any(
                rest == allowed or rest.startswith(allowed + ".") for allowed in _MAY_USE[layer]):
            problems.append(f"{rel}:{line}: {layer} imports {name}")
    return problems


def test_layers_import_one_way():
    """Every file of the package keeps to its layer's imports (checked on the source)."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / _PACKAGE
    problems = []
    for path in sorted(root.rglob("*.py")):
        problems += layer_problems(path.relative_to(root), path.read_text())
    assert problems == []


@pytest.mark.parametrize("rel, source, problem", [
    ("worker/engine.py", "from ..blender import inputs\n", "worker imports lotus_blender.blender.inputs"),
    ("worker/engine.py", "from .. import blender\n", "worker imports lotus_blender.blender"),
    ("worker/engine.py", "def f():\n    from ..blender.naming import stem\n",
     "worker imports lotus_blender.blender.naming"),
    ("core/maps.py", "from .. import protocol\n", "core imports lotus_blender.protocol"),
    ("core/maps.py", "from ..worker import engine\n", "core imports lotus_blender.worker"),
    ("blender/builders/relight.py", "from ...worker import engine\n",
     "blender imports lotus_blender.worker.engine"),
    ("blender/job_queue.py", "import torch\n", "imports torch"),
    ("blender/job_runner.py", "from lotus_blender.core import maps\n", "absolute import of the package"),
    ("protocol.py", "import numpy as np\n", "imports numpy"),
    ("protocol.py", "from .core import maps\n", "protocol imports lotus_blender.core"),
    ("worker/engine.py", "from ... import os\n", "beyond top-level package"),
])
def test_layer_check_catches_imports_that_run_back(rel, source, problem):
    from pathlib import PurePosixPath
    problems = layer_problems(PurePosixPath(rel), source)
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("rel, source", [
    ("blender/builders/relight.py", "from ...core import maps\nfrom .. import compat\n"),
    ("blender/models.py", "from ..worker import checkpoint\n"),
    ("worker/engine.py", "from .. import protocol\nfrom ..core import tiling\nfrom . import model\n"),
    ("core/__init__.py", "from . import maps\n"),
    ("__init__.py", "from .blender import preferences\n"),
])
def test_layer_check_accepts_imports_within_the_layers(rel, source):
    from pathlib import PurePosixPath
    assert layer_problems(PurePosixPath(rel), source) == []
