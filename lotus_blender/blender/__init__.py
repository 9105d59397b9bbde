"""Blender side: everything that imports bpy. Never imports torch (the worker does that)."""

import importlib

# Submodules that register classes, in registration order. Each has register()/unregister().
_MODULE_NAMES = (
    "preferences",
    "jobs",
    "operators",
    "panels",
    "builders",
)


def _modules():
    return [importlib.import_module(f".{name}", __name__) for name in _MODULE_NAMES]


def register():
    for module in _modules():
        module.register()


def unregister():
    for module in reversed(_modules()):
        module.unregister()
