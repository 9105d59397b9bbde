"""The Predict options, declared once (as Import Images as Planes declares its options in mixins).

The mixins are the properties of the predict operators (so the redo panel and operator presets
show them) and of the scene's last-used values (``Scene.lotus_predict``, saved with the .blend):
the sidebar edits the scene's values, an operator run from the UI starts from them (``invoke``:
only what its caller did not set) and leaves what it used there. ``choices()`` turns them into
the one object that travels to the jobs and the worker (worker_session.PredictionChoices), so a
new option is declared here and read where it is used.
"""

from __future__ import annotations

from dataclasses import fields

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from . import last_used
from .worker_session import PredictionChoices

TASK_ITEMS = [('DEPTH', "Depth", "Depth (or disparity) map"),
              ('NORMAL', "Normals", "Surface normal map"),
              ('BOTH', "Depth & Normals", "Both maps, one after the other")]


class PredictOptions:
    """What every predict operator takes: the maps to make and how."""
    task: EnumProperty(name="Task", items=TASK_ITEMS, default='DEPTH')
    tiled: BoolProperty(name="Full Resolution (Tiled)", default=False,
                        description="Maps at the image's full resolution from overlapping, "
                                    "smoothly blended tiles (slower: one model pass per tile)")
    seamless: BoolProperty(name="Seamless", default=False,
                           description="Maps that tile without a seam, for repeating textures")


class ClipOptions:
    """Image sequences and movies only (Lotus: Image)."""
    frame_start: IntProperty(name="Start", default=0, min=0,
                             description="Sequences and movies: first frame (0: from the start)")
    frame_end: IntProperty(name="End", default=0, min=0,
                           description="Sequences and movies: last frame (0: to the end)")
    stabilize: BoolProperty(name="Stabilize Depth", default=True,
                            description="Sequences and movies: align each frame's depth to the "
                                        "frames before it (removes flicker)")


class MultilayerOptions:
    """Multilayer EXR images only (Lotus: Image; its view layer is a choice per image, not an
    option to remember)."""
    render_pass: StringProperty(name="Pass", default="Combined",
                                description="Multilayer EXR images: the pass to use")


OPTION_MIXINS = (PredictOptions, ClipOptions, MultilayerOptions)


def option_names(owner) -> list[str]:
    """The option properties ``owner`` (an operator or the scene's settings) has, in order."""
    return [name for mixin in OPTION_MIXINS if isinstance(owner, mixin)
            for name in mixin.__annotations__]


def choices(owner) -> PredictionChoices:
    """The options that reach the jobs and the worker, taken by name; those ``owner`` has not
    (Image Files has no Stabilize) keep the dataclass' default."""
    names = set(option_names(owner))
    return PredictionChoices(**{field.name: getattr(owner, field.name)
                                for field in fields(PredictionChoices) if field.name in names})


class LotusPredictSettings(PredictOptions, ClipOptions, MultilayerOptions,
                           bpy.types.PropertyGroup):
    """The last-used Predict options of a scene: what the sidebar shows and edits, what the
    operators start from. Per scene and saved in the .blend, like the builders' settings."""


def settings(context) -> LotusPredictSettings:
    return context.scene.lotus_predict


def fill_from_last_used(operator, context) -> None:
    """An operator run from the UI: the options its caller did not set come from the scene
    (the sidebar passes only the image; see last_used.fill)."""
    last_used.fill(operator, settings(context), option_names(operator))


def remember(operator, context) -> None:
    """What a run used becomes the scene's last-used values (the sidebar shows them)."""
    scene_settings = getattr(context.scene, "lotus_predict", None)
    if scene_settings is not None:
        last_used.remember(operator, scene_settings, option_names(operator))


def register():
    bpy.utils.register_class(LotusPredictSettings)
    bpy.types.Scene.lotus_predict = PointerProperty(type=LotusPredictSettings)


def unregister():
    del bpy.types.Scene.lotus_predict
    bpy.utils.unregister_class(LotusPredictSettings)
