"""Scene builders: a photo's 2.5D scene, normal-mapped material and relighting setup.

Each builder is a feature module (scene25d, materials, relight: bpy data, no UI) and a *_ui module
(its operator, scene settings and sidebar panels); common.py holds what the builders share,
ui_common.py what their UI modules share (the panels' frame, the operators' settings pattern).

SUBMODULES is a plain list of this package's modules that have register()/unregister()
(operators and sidebar sub-panels); append a name to add a builder.
"""

from .. import registrar

SUBMODULES = [
    "scene25d_ui",
    "camera_move",
    "materials_ui",
    "relight_ui",
    "relight_preview",
]

register, unregister = registrar(__name__, SUBMODULES)
