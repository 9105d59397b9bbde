"""The scene's last-used operator options, the way Import Images as Planes keeps its own: one
mechanism for the Predict operators (predict_options) and the builders (builders/ui_common).

An operator's options and a scene property group share an options mixin; a run from the UI
(invoke) takes every option its caller did not set from the scene, and what it used goes back.
"""


def fill(operator, settings, names) -> None:
    """Each option in ``names`` the caller did not set takes the scene's value. Blender's own
    remembered values ("ghosts" of the last run) count as not set, so the scene, which the panel
    shows and the .blend saves, wins: is_property_set's default ghost=True reports a ghost as not
    set (ghost=False asks whether any value is stored, a remembered one too: RNA_property_is_set_ex)."""
    for name in names:
        if not operator.properties.is_property_set(name):
            setattr(operator, name, getattr(settings, name))


def remember(operator, settings, names) -> None:
    """What a run used becomes the scene's last-used values (written only where they changed)."""
    for name in names:
        value = getattr(operator, name)
        if getattr(settings, name) != value:
            setattr(settings, name, value)
