"""What the builders' UI modules share: their panels' frame, and their operators' settings, kept
the way Import Images as Planes keeps its own.

Each builder declares its options once, in an options mixin (annotations only) that both its
operator and its scene property group inherit:

- on the operator they are operator properties, so the redo panel (Adjust Last Operation, F9)
  changes them and rebuilds, and operator presets store and restore them ('PRESET');
- on the scene they are the panel's fields and the last-used values: invoke (a panel button, the
  F3 search, a menu) fills every option its caller did not set from them, and execute, which uses
  only the operator's own properties, stores what it used back there.

Scripts calling the operator (``bpy.ops.lotus.build_photo_scene(...)``) run execute alone: they
get the operator's defaults and the values they pass, whatever the panel shows.
"""

import inspect

import bpy

from .. import last_used, naming
from ..panels import LotusSubPanel


def option_names(options_mixin) -> tuple:
    """The option properties an options mixin declares (its own and its bases'), in order."""
    names = []
    for cls in reversed(options_mixin.__mro__):
        names += [name for name in inspect.get_annotations(cls) if name not in names]
    return tuple(names)


class LastUsedOptions:
    """Operator mixin: OPTIONS is the options mixin, SETTINGS the Scene attribute holding the
    last-used values (a property group that inherits the same mixin), IMAGES the operator's image
    name properties that the scene's image fields of the same name fill, SHOWN the properties the
    redo panel shows below the images."""
    OPTIONS = None
    SETTINGS = ""
    IMAGES = ("photo",)
    SHOWN = ()

    def _settings(self, context):
        return getattr(context.scene, self.SETTINGS)

    def fill_from_last_used(self, context):
        """Every image and option the caller did not set takes the scene's (the panel's) value."""
        settings = self._settings(context)
        for name in self.IMAGES:
            if not getattr(self, name) and getattr(settings, name) is not None:
                setattr(self, name, getattr(settings, name).name)
        last_used.fill(self, settings, option_names(self.OPTIONS))

    def remember_options(self, context):
        """Store the options this run used as the scene's last-used values (the panel shows them)."""
        last_used.remember(self, self._settings(context), option_names(self.OPTIONS))

    def chosen_photo(self):
        """The photo the photo property names (a result named instead stands for its photo), or
        None once the error is reported."""
        photo = bpy.data.images.get(self.photo)
        if photo is None:
            self.report({'ERROR'}, "Choose a photo first")
            return None
        return naming.source_photo(photo)

    def invoke(self, context, _event):
        self.fill_from_last_used(context)
        return self.execute(context)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        for name in self.IMAGES:
            layout.prop_search(self, name, bpy.data, "images")
        for name in self.SHOWN:
            layout.prop(self, name)


class BuilderPanel(LotusSubPanel):
    """A builder's sidebar panel: open (it is short, its settings are in the collapsed Options)."""
    bl_options = set()


class BuilderOptionsPanel(LotusSubPanel):
    """A builder's collapsed Options."""
    bl_label = "Options"


# The panels' draw functions use nothing of the panel but its layout (Blender's own panels, and
# the tests' stand-ins for them, provide that).

def photo_first_draw(settings_attribute, draw_rest):
    """A builder panel's draw: the scene settings' photo field, then draw_rest(layout, context,
    settings, photo)."""
    def draw(self, context):
        settings = getattr(context.scene, settings_attribute)
        self.layout.prop(settings, "photo")
        draw_rest(self.layout, context, settings, settings.photo)
    return draw


def options_draw(settings_attribute, names):
    """An Options panel's draw: the scene settings' (last-used) options named."""
    def draw(self, context):
        settings = getattr(context.scene, settings_attribute)
        for name in names:
            self.layout.prop(settings, name)
    return draw


def scene_settings_registrar(classes, attribute, settings_class):
    """register() and unregister() for a builder's classes and its Scene settings property."""
    def register():
        for cls in classes:
            bpy.utils.register_class(cls)
        setattr(bpy.types.Scene, attribute, bpy.props.PointerProperty(type=settings_class))

    def unregister():
        delattr(bpy.types.Scene, attribute)
        for cls in reversed(classes):
            bpy.utils.unregister_class(cls)

    return register, unregister
