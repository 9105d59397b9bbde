"""Scene builders: 2.5D scene from a photo (and, appended by their authors, other builders).

SUBMODULES is a plain list of this package's modules that have register()/unregister()
(operators and sidebar sub-panels); append a name to add a builder.
"""

from .. import registrar

SUBMODULES = [
    "scene25d_ui",
    "camera_move",
    "materials",
    "relight",
    "relight_preview",
]

register, unregister = registrar(__name__, SUBMODULES)
