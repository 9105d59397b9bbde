"""Blender side: everything that imports bpy. Never imports torch (the worker does that)."""

import importlib

# Submodules that register classes, in registration order. Each has register()/unregister().
_MODULE_NAMES = (
    "preferences",
    "job_queue",
    "predict_options",
    "operators",
    "panels",
    "builders",
    "cli",
)


def registrar(package: str, names) -> tuple:
    """register()/unregister() for a package whose submodules each register their own classes."""
    def modules():
        return [importlib.import_module(f".{name}", package) for name in names]

    def register():
        for module in modules():
            module.register()

    def unregister():
        for module in reversed(modules()):
            module.unregister()

    return register, unregister


register, unregister = registrar(__name__, _MODULE_NAMES)
