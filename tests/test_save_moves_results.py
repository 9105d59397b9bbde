"""Saving an unsaved .blend brings the maps out of the system temp folder, next to the .blend,
with relative paths that survive reopening; when they cannot be moved, the panel keeps warning.
Runs in a fresh Blender (the bpy module) so this session's .blend stays unsaved."""

import os

import numpy as np
import pytest

from tests import blender_child
from tests.blender_side import gradient

_SCRIPT = r'''
outputs = sys.modules[name + ".blender.outputs"]
panels = sys.modules[name + ".blender.panels"]
result = {"temp": outputs.temporary_output_folder()}


def warning():
    """What the panel's warning box says (None: no warning)."""
    texts = []
    layout = type("Layout", (), {})()
    class Box:
        alert = False
        def label(self, text="", icon='NONE'): texts.append(text)
        def column(self, align=False): return self
        def operator(self, *args, **kw): texts.append("[" + args[0] + "]")
    layout.box = lambda: Box()
    context = type("Context", (), {"preferences": bpy.context.preferences, "region": None})()
    panels.draw_output_warning(layout, context)
    return " ".join(texts) or None


def predict(photo):
    assert bpy.ops.lotus.predict_files(task='DEPTH', directory=str(work),
                                       files=[{"name": photo}]) == {'FINISHED'}
    return bpy.data.images[Path(photo).stem + "_depth"]


# 1. Saved where the maps can follow: moved next to it, relative once saved, and reopened whole.
depth = predict("photo.png")
result["before"] = {"path": bpy.path.abspath(depth.filepath), "warning": warning()}
bpy.ops.wm.save_as_mainfile(filepath=str(work / "shot.blend"))
result["after"] = {"filepath": depth.filepath, "path": bpy.path.abspath(depth.filepath),
                   "warning": warning(), "folder": sorted(os.listdir(work / "lotus"))}
bpy.ops.wm.open_mainfile(filepath=str(work / "shot.blend"))
depth = bpy.data.images["photo_depth"]
result["reopened"] = {"filepath": depth.filepath, "pixels": len(depth.pixels),
                      "has_data": bool(depth.has_data)}

# 2. A new unsaved file whose maps cannot be moved (a file named lotus where the folder goes).
bpy.ops.wm.read_homefile(use_empty=True)
depth = predict("photo2.png")
(work / "blocked").mkdir()
(work / "blocked" / "lotus").write_text("not a folder")
bpy.ops.wm.save_as_mainfile(filepath=str(work / "blocked" / "shot.blend"))
result["blocked"] = {"path": os.path.normpath(bpy.path.abspath(depth.filepath)),
                     "warning": warning()}
report(result)
'''''


@pytest.mark.blender
def test_saving_moves_results_out_of_the_temp_folder(tiny_checkpoints, tmp_path):
    from PIL import Image
    for name in ("photo.png", "photo2.png"):
        Image.fromarray(np.round(gradient()[..., :3] * 255).astype(np.uint8)).save(tmp_path / name)
    system_temp = tmp_path / "system-temp"  # the child's tempfile.gettempdir()
    system_temp.mkdir()
    result = blender_child.run(_SCRIPT, tmp_path, blender_child.checkpoint_args(tiny_checkpoints),
                               env={"TMPDIR": str(system_temp)})
    temp = result["temp"]
    assert temp.startswith(str(system_temp))
    # Unsaved: the map is in the temp folder and the panel says so, with Pack Results.
    assert result["before"]["path"].startswith(temp + os.sep)
    assert "Unsaved .blend" in result["before"]["warning"]
    assert "[lotus.pack_results]" in result["before"]["warning"]
    # Saved: moved next to the .blend (//lotus/ by default), relative, the temp copy gone.
    after = result["after"]
    assert after["filepath"] == "//lotus/photo_depth.exr", after
    assert after["path"] == str(tmp_path / "lotus" / "photo_depth.exr")
    assert "photo_depth.exr" in after["folder"] and after["warning"] is None
    assert not os.path.exists(result["before"]["path"])
    reopened = result["reopened"]
    assert reopened["filepath"] == "//lotus/photo_depth.exr" and reopened["pixels"] > 0
    # Cannot be moved: the map stays where it is, whole, and the warning stays.
    blocked = result["blocked"]
    assert blocked["path"].startswith(temp + os.sep) and os.path.isfile(blocked["path"])
    assert "Maps are still in a temp folder" in blocked["warning"]
