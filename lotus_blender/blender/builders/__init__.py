"""Scene builders: 2.5D scene from a photo (and, appended by their authors, other builders).

SUBMODULES is a plain list of this package's modules that have register()/unregister()
(operators and sidebar sub-panels); append a name to add a builder.
"""

import importlib

SUBMODULES = [
    "scene25d_ui",
    "materials",
    "relight",
]


def _modules():
    return [importlib.import_module(f".{name}", __name__) for name in SUBMODULES]


def register():
    for module in _modules():
        module.register()


def unregister():
    for module in reversed(_modules()):
        module.unregister()
