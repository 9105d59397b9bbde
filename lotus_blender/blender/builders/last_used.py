"""The builder operators' settings, kept the way Import Images as Planes keeps its own.

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


def option_names(options_mixin) -> tuple:
    """The option properties an options mixin declares (its own and its bases'), in order."""
    names = []
    for cls in reversed(options_mixin.__mro__):
        names += [name for name in inspect.get_annotations(cls) if name not in names]
    return tuple(names)


class LastUsedOptions:
    """Operator mixin: OPTIONS is the options mixin, SETTINGS the Scene attribute holding the
    last-used values (a property group that inherits the same mixin)."""
    OPTIONS = None
    SETTINGS = ""

    def _settings(self, context):
        return getattr(context.scene, self.SETTINGS)

    def fill_from_last_used(self, context):
        """Every option the caller did not set takes the scene's last-used value."""
        settings = self._settings(context)
        for name in option_names(self.OPTIONS):
            if not self.properties.is_property_set(name):
                setattr(self, name, getattr(settings, name))

    def remember_options(self, context):
        """Store the options this run used as the scene's last-used values (the panel shows them)."""
        settings = self._settings(context)
        for name in option_names(self.OPTIONS):
            if getattr(settings, name) != getattr(self, name):
                setattr(settings, name, getattr(self, name))


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
