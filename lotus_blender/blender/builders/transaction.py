"""All-or-nothing builders: a build that fails leaves the file as it found it.

    with all_or_nothing(context.scene):
        ...create objects, cameras, materials, node groups, change the scene...

On an exception every datablock created inside the block is removed (objects first, so nothing
is left half-linked), the scene settings a builder touches (camera, world, render size, engine,
view transform, samples) are put back, and the exception propagates. Blocks nest: an inner
failure cleans up its own part, the outer one the rest. Files a builder wrote stay on disk.
"""

from __future__ import annotations

import contextlib
import functools
import traceback

import bpy

# Datablock kinds a builder may create, in removal order (users before what they use).
_KINDS = ("objects", "collections", "meshes", "cameras", "lights", "materials", "textures",
          "node_groups", "worlds", "images")

# (owner path from the scene, attribute): the scene settings builders change.
_SCENE_SETTINGS = (
    ("", "camera"), ("", "world"),
    ("render", "resolution_x"), ("render", "resolution_y"), ("render", "resolution_percentage"),
    ("render", "pixel_aspect_x"), ("render", "pixel_aspect_y"), ("render", "engine"),
    ("render", "film_transparent"),
    ("view_settings", "view_transform"), ("view_settings", "look"),
    ("cycles", "samples"), ("cycles", "preview_samples"), ("cycles", "use_denoising"),
)


def _owner(scene, path):
    return scene if not path else getattr(scene, path, None)


def _scene_state(scene) -> list:
    state = []
    for path, attribute in _SCENE_SETTINGS:
        owner = _owner(scene, path)
        if owner is not None and hasattr(owner, attribute):
            state.append((path, attribute, getattr(owner, attribute)))
    return state


def _restore_scene(scene, state) -> None:
    for path, attribute, value in state:
        try:
            setattr(_owner(scene, path), attribute, value)
        except (ReferenceError, AttributeError, TypeError, ValueError):
            pass  # e.g. a world that was itself removed: the rest is still restored


@contextlib.contextmanager
def all_or_nothing(scene):
    before = {kind: set(getattr(bpy.data, kind)) for kind in _KINDS}
    state = _scene_state(scene)
    try:
        yield
    except BaseException:
        created = []
        for kind in _KINDS:
            created += [block for block in getattr(bpy.data, kind) if block not in before[kind]]
        _restore_scene(scene, state)
        if created:
            bpy.data.batch_remove(created)
        raise


def atomic_builder(function):
    """Run a builder ``function(context, ...)`` inside all_or_nothing(context.scene)."""
    @functools.wraps(function)
    def wrapper(context, *args, **kwargs):
        # Builders place what they make from objects' matrix_world (the scene camera's, a 2.5D
        # mesh's). Right after an undo (the redo panel undoes, then runs the operator again) the
        # restored objects' matrices are not evaluated yet, all identity: evaluate first.
        view_layer = getattr(context, "view_layer", None)
        if view_layer is not None:
            view_layer.update()
        with all_or_nothing(context.scene):
            return function(context, *args, **kwargs)
    return wrapper


def report_failure(operator, what: str, error: Exception) -> set:
    """One readable line in Blender's UI for a failed build; the traceback goes to the console.

    A ValueError is the builder's own message for the artist (missing result, bad setting); any
    other exception is a fault, named as such. Returns the operator result."""
    if isinstance(error, ValueError):
        operator.report({'ERROR'}, str(error))
    else:
        traceback.print_exception(error)
        operator.report({'ERROR'}, f"{what} failed, nothing was changed: "
                                   f"{type(error).__name__}: {error}")
    return {'CANCELLED'}
