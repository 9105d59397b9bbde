"""The package installs, registers and unregisters like a real Blender extension."""

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


def test_layers_import_one_way():
    """core: numpy only; worker: never bpy; Blender side: never torch (checked on the source)."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "lotus_blender"
    forbidden = {"core": {"bpy", "torch", "diffusers", "transformers", "mathutils"},
                 "worker": {"bpy", "mathutils", "bmesh"},
                 "blender": {"torch", "diffusers", "transformers", "huggingface_hub"}}
    shared = {"protocol.py": {"bpy", "torch", "numpy"}}
    problems = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        bad = forbidden.get(rel.parts[0], set()) if len(rel.parts) > 1 else shared.get(rel.name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in bad:
                    problems.append(f"{rel}: imports {name}")
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.split(".")[0] == "lotus_blender":
                problems.append(f"{rel}: absolute import of the package (use relative imports)")
    assert problems == []
