"""Install check: runs inside a distro Blender (see tests/gui/install_check.sh).

    blender -b --factory-startup --python tests/gui/install_check.py -- ZIP

Installs ZIP with Blender's own Install from Disk operator (this Blender's real version and
Python decide), enables it, and prints one line "INSTALL <json>": the Blender and Python, whether
the add-on is enabled and loaded, the error Blender gave, and the installed wheels' compiled
modules (which must all be for this Python or the stable ABI).
"""

import glob
import json
import os
import sys

import addon_utils
import bpy

zip_path = sys.argv[sys.argv.index("--") + 1]
name = "bl_ext.user_default.lotus_blender"
report = {"zip": os.path.basename(zip_path), "blender": bpy.app.version_string,
          "python": "%d.%d.%d" % sys.version_info[:3]}
try:
    report["status"] = sorted(bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True))
except RuntimeError as ex:
    report["error"] = str(ex).strip()
report["enabled"] = name in bpy.context.preferences.addons
report["loaded"] = bool(addon_utils.check(name)[1])
report["operators"] = hasattr(bpy.types, "LOTUS_OT_predict_files")
site = glob.glob(os.path.join(bpy.utils.user_resource('EXTENSIONS', path=".local"),
                              "lib", "python3*", "site-packages"))
report["site_packages"] = site[0] if site else None
report["extension_modules"] = sorted(
    os.path.basename(path) for path in glob.glob(os.path.join(site[0], "**", "*.so"), recursive=True)
    if ".libs" + os.sep not in path) if site else []
if report["enabled"]:
    # The worker's packages import in this Blender's Python (the worker itself needs torch too).
    import importlib
    report["imports"] = {}
    for module in ("diffusers", "transformers", "safetensors", "tokenizers", "PIL.Image", "yaml"):
        try:
            importlib.import_module(module)
            report["imports"][module] = "ok"
        except Exception as ex:  # noqa: BLE001 - reported
            report["imports"][module] = f"{type(ex).__name__}: {ex}"
print("INSTALL " + json.dumps(report), flush=True)
sys.stdout.flush()
os._exit(0)
