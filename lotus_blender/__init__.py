"""Lotus for Blender: monocular depth and surface normals (Lotus, arXiv 2409.18124) in the 3D View.

Layers, imports flowing one way:
  core/      numpy only: map conversions, geometry, tiling (no bpy, no torch)
  worker/    torch + diffusers, runs in a background subprocess (never imports bpy)
  blender/   bpy: preferences, operators, panels, scene builders (never imports torch)
  protocol   stdlib only, shared by worker and Blender side

The worker subprocess imports this package too (``python -m <package>.worker``), so nothing at
module level here may import bpy: the Blender side is imported inside register().
"""

import sys


def register():
    from . import blender
    blender.register()


def unregister():
    from . import blender
    blender.unregister()
    # Drop our submodules so that enabling again (or Reload Scripts) runs fresh code.
    prefix = __name__ + "."
    for name in [n for n in sys.modules if n.startswith(prefix)]:
        del sys.modules[name]
