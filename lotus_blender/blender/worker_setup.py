"""What to tell the artist when the worker's Python cannot run Lotus (no torch, ...).

The worker names the modules it lacks; only the Blender side knows how that Python was chosen
(Blender's own or the Worker Python preference) and whether this build bundles torch, so the
advice is worded here: one line, with the fix.
"""

from __future__ import annotations

import glob
import os

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFERENCE = "Worker Python (Lotus add-on preferences)"


def bundles_torch() -> bool:
    """Whether this installed build ships torch (the full build) or not (the light build)."""
    return bool(glob.glob(os.path.join(PACKAGE_DIR, "wheels", "torch-*.whl")))


def missing_packages_message(missing: list[str], custom_python: str = "") -> str:
    """One line: what is missing and how to fix it.

    ``custom_python`` is the Worker Python preference when set, "" for Blender's own Python.
    """
    full_build = bundles_torch()
    if "torch" not in missing:
        others = ", ".join(missing)
        if not custom_python:
            # Blender's own Python gets them from the extension's wheels, installed on enable.
            return (f"The packages bundled with Lotus ({others}) are not installed in Blender's "
                    f"Python: disable and enable Lotus in Preferences > Add-ons to install them")
        return (f"Worker Python {custom_python} has PyTorch but lacks {others}: install them into "
                f"it (pip install {' '.join(m.replace('_', '-') for m in missing)}), or use a "
                f"Python of Blender's version, which gets the bundled packages")
    if custom_python:
        fallback = ("or clear it to use the PyTorch bundled with Lotus" if full_build else
                    "or clear it and install the full Lotus build")
        return (f"PyTorch is not installed in the Worker Python {custom_python}: set "
                f"{PREFERENCE} to a Python with torch, {fallback}")
    if full_build:
        # The wheels are there but Blender did not install them (a failed or interrupted enable).
        return ("The PyTorch bundled with Lotus is not installed in Blender's Python: disable and "
                f"enable Lotus in Preferences > Add-ons to install it, or set {PREFERENCE} to a "
                "Python with torch")
    return ("PyTorch is not installed: this is the light build of Lotus. Install the full build "
            f"for your Blender, or set {PREFERENCE} to a Python with torch")
