"""The "Lotus" sidebar tab in the 3D View and the Image Editor: sources, progress, tools.

Built for the sidebar's default width (about 290 px at 1920x1080): short labels, messages wrapped
by their measured width, options and builder settings in collapsed sub-panels, so that nothing is
cut and the three builders fit on a 1080p screen without scrolling.

Other features add sub-panels with ``bl_parent_id = "LOTUS_PT_view3d"`` (mixin LotusSubPanel).
"""

import contextlib

import blf
import bpy

from . import compat, job_queue, outputs, predict_options
from .predict_options import TASK_ITEMS

# Sidebar width without a region to ask (tests, scripts): Blender's default at UI scale 1.
DEFAULT_SIDEBAR_PX = 280
# What the sidebar takes from its width before a label's text starts, at UI scale 1: the
# category tabs and the panel's margins; a box's padding; an icon with its gap.
PANEL_INSET_PX = 64
BOX_INSET_PX = 14
ICON_PX = 24
# blf measures a little narrower than the UI draws (kerning, hinting): keep a margin.
MEASURE_MARGIN = 1.08
# Short names for the task buttons, in TASK_ITEMS order ("Depth & Normals" is cut at 290 px).
TASK_BUTTON_TEXT = {'DEPTH': "Depth", 'NORMAL': "Normals", 'BOTH': "Both"}


def _settings(context):
    """The scene's last-used Predict options: the sidebar edits them, the operators start
    from them (predict_options)."""
    return predict_options.settings(context)


# -- text that fits -----------------------------------------------------------------------------

def _preferences(context):
    return getattr(context, "preferences", None) or bpy.context.preferences


def ui_scale(context) -> float:
    """The UI's pixel scale (DPI and the Resolution Scale preference; the first is 0 without
    a window)."""
    preferences = _preferences(context)
    return preferences.system.ui_scale or preferences.view.ui_scale or 1.0


def text_measure(context):
    """A function giving a text's width in pixels in the panel's font."""
    size = _preferences(context).ui_styles[0].widget.points * ui_scale(context)

    def measure(text: str) -> float:
        blf.size(0, size)
        return blf.dimensions(0, text)[0] * MEASURE_MARGIN

    return measure


def text_width(context, inset_px: float) -> float:
    """Pixels a label's text has in the sidebar after ``inset_px`` (at UI scale 1)."""
    scale = ui_scale(context)
    region = getattr(context, "region", None)
    width = region.width if region is not None and region.width > 1 else DEFAULT_SIDEBAR_PX * scale
    return max(40.0 * scale, width - inset_px * scale)


def _fitting_prefix(word: str, width: float, measure) -> int:
    """How many characters of word fit in width (at least one); cut after a path separator
    or underscore when there is one."""
    cut = 1
    while cut < len(word) and measure(word[:cut + 1]) <= width:
        cut += 1
    breaks = [i + 1 for i, char in enumerate(word[:cut]) if char in "/\\_-"]
    if breaks and breaks[-1] < cut and breaks[-1] * 2 >= cut:
        return breaks[-1]
    return cut


def wrap_text(text: str, width: float, measure) -> list[str]:
    """Lines of text no wider than width (measured by ``measure``), breaking between words,
    and inside a word (a path) only when it is wider than a line."""
    lines = []
    for paragraph in (text or "").splitlines():
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if measure(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while len(word) > 1 and measure(word) > width:
                cut = _fitting_prefix(word, width, measure)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        if line:
            lines.append(line)
    return lines


def fit_text(candidates, width: float, measure) -> str:
    """The first candidate that fits in width, else the last (the shortest, by convention)."""
    for text in candidates:
        if measure(text) <= width:
            return text
    return candidates[-1]


def draw_wrapped(layout, context, text: str, icon: str = 'NONE', in_box: bool = False) -> None:
    """A label wrapped over as many lines as it needs; the icon on the first line, the
    others indented to match."""
    inset = PANEL_INSET_PX + (BOX_INSET_PX if in_box else 0) + (ICON_PX if icon != 'NONE' else 0)
    lines = wrap_text(text, text_width(context, inset), text_measure(context)) or [""]
    column = layout.column(align=True)
    for index, line in enumerate(lines):
        line_icon = icon if index == 0 else ('BLANK1' if icon != 'NONE' else 'NONE')
        column.label(text=line, icon=line_icon)


# -- the panel's parts ----------------------------------------------------------------------------

# A render's pixels live in Blender's render engine, not in the Render Result image (its has_data
# stays False), and a file may bring a Viewer image that was never composited here (Blender 5.2
# makes a black 256x256 one): remember what the artist rendered or composited in this session.
# The add-on's own renders (Preview Relight's bands, its temporary scenes) do not count, and they
# replace what Render Result held.
_render_state = {"render": False, "viewer": False, "own": 0}
TEMPORARY_SCENE_PREFIX = "lotus_"  # inputs._TemporaryScene names


@contextlib.contextmanager
def own_renders():
    """Renders the add-on makes itself: not the artist's render, and Render Result no longer
    holds the artist's pixels afterwards."""
    _render_state["own"] += 1
    try:
        yield
    finally:
        _render_state["own"] -= 1
        _render_state["render"] = False


def _is_artists(scene) -> bool:
    if _render_state["own"] or scene is None:
        return False
    return not scene.name.startswith(TEMPORARY_SCENE_PREFIX)


def _has_viewer_node(scene) -> bool:
    return any(node.type == 'VIEWER' for tree in compat.compositor_trees(scene)
               for node in tree.nodes)


@bpy.app.handlers.persistent
def _render_finished(scene=None, *_args):
    if _is_artists(scene):
        _render_state["render"] = True
        if scene.render.use_compositing and _has_viewer_node(scene):
            _render_state["viewer"] = True
    elif scene is not None and scene.name.startswith(TEMPORARY_SCENE_PREFIX):
        _render_state["render"] = False  # Render Result now holds the add-on's temporary render


@bpy.app.handlers.persistent
def _composited(scene=None, *_args):
    if _is_artists(scene) and _has_viewer_node(scene):
        _render_state["viewer"] = True


@bpy.app.handlers.persistent
def _file_loaded(*_args):
    _render_state["render"] = _render_state["viewer"] = False


def has_pixels(image) -> bool:
    """Whether a Render Result or Viewer image holds pixels rendered or composited in this
    session (by the artist, not by the add-on)."""
    if image is None:
        return False
    if image.type == 'RENDER_RESULT':
        return _render_state["render"]
    return _render_state["viewer"] and bool(image.has_data)


def draw_progress(layout, context) -> None:
    """The running run as one progress bar (percentage first, so it is never cut), with
    Cancel (ESC works too); "Cancelling..." until the worker has stopped."""
    job = job_queue.manager.current
    waiting = job_queue.manager.waiting_runs()
    if job is None and not waiting:
        return
    box = layout.box()
    if job is not None:
        measure = text_measure(context)
        width = text_width(context, PANEL_INSET_PX + BOX_INSET_PX + ICON_PX)
        box.label(text=fit_text([job.run_label, job.run_label.split(" (")[0], job.task.title()],
                                width, measure), icon='SORTTIME' if job.state == job_queue.QUEUED
                  else 'TIME')
        if job.cancelling:
            box.progress(factor=job.run_fraction, type='BAR', text="Cancelling...")
        else:
            stage = job.stage
            part = f"{job.task}: " if job.run_parts > 1 else ""
            percent = f"{job.percent}%"
            bar_width = text_width(context, PANEL_INSET_PX + BOX_INSET_PX + 8)
            text = fit_text([f"{percent}  {part}{stage}", f"{percent}  {stage}",
                             f"{percent}  {stage.split(': ')[-1]}", percent], bar_width, measure)
            box.progress(factor=job.run_fraction, type='BAR', text=text)
    if waiting:
        box.label(text=f"{waiting} more waiting", icon='SORTTIME')
    row = box.row()
    row.enabled = job is None or not job.cancelling
    row.operator("lotus.cancel_jobs", icon='CANCEL')


def draw_last_error(layout, context) -> None:
    """The last failure, wrapped to the sidebar; the full traceback is one click away."""
    if job_queue.manager.last_error:
        box = layout.box()
        box.alert = True
        draw_wrapped(box, context, job_queue.manager.last_error, icon='ERROR', in_box=True)
        box.operator("lotus.open_log", icon='TEXT')


def draw_output_warning(layout, context) -> None:
    """While maps live in the temporary folder (the system cleans it): saving the .blend moves
    them next to it; until then, or when that failed, say so and offer Pack Results."""
    if outputs.results_in_temporary_folder():
        box = layout.box()
        box.alert = True
        text = ("Maps are still in a temp folder" if bpy.data.filepath else
                "Unsaved .blend: maps are in a temp folder")
        draw_wrapped(box, context, text, icon='ERROR', in_box=True)
        draw_wrapped(box, context, outputs.temporary_output_folder(), in_box=True)
        box.operator("lotus.pack_results", icon='PACKAGE')


def draw_tools(layout) -> None:
    row = layout.row(align=True)
    row.operator("lotus.release_model", text="Release", icon='X')
    row.operator("lotus.open_log", text="Log", icon='TEXT')
    row.operator("lotus.open_model_folder", text="Models", icon='FILE_FOLDER')


def draw_render_sources(layout, context) -> None:
    """Render Result and Compositor Viewer, only when they hold the artist's pixels, in one row
    that is always there (a hint while there is nothing): the buttons below never move."""
    row = layout.row(align=True)
    sources = [(("Render Result", "Render"), 'RENDER_RESULT', "Render Result"),
               (("Compositor Viewer", "Viewer"), 'NODE_COMPOSITING', "Viewer Node")]
    shown = [source for source in sources if has_pixels(bpy.data.images.get(source[2]))]
    measure = text_measure(context)
    width = text_width(context, PANEL_INSET_PX) / max(1, len(shown)) - ICON_PX * ui_scale(context)
    for texts, icon, image_name in shown:
        _image_button(row, fit_text(texts, width, measure), icon, image_name)
    if not shown:
        row.enabled = False
        row.label(text=fit_text(["Render Result: after a render (F12)", "Render first (F12)"],
                                 width, measure), icon='RENDER_RESULT')


def _image_button(layout, text, icon, image_name=""):
    """The button passes the image only: the operator's invoke takes the options from the
    scene's last-used values, which the sidebar edits."""
    op = layout.operator("lotus.predict_image", text=text, icon=icon)
    op.image = image_name
    return op


class _LotusPanel:
    bl_region_type = 'UI'
    bl_category = "Lotus"
    bl_label = "Lotus"

    def draw(self, context):
        layout = self.layout
        settings = _settings(context)
        row = layout.row(align=True)
        for key, _name, _description in TASK_ITEMS:
            row.prop_enum(settings, "task", key, text=TASK_BUTTON_TEXT[key])
        col = layout.column(align=True)
        col.operator("lotus.predict_files", text="Image Files...", icon='FILE_IMAGE')
        if context.space_data is not None and context.space_data.type == 'IMAGE_EDITOR':
            _image_button(col, "Active Image", 'IMAGE_DATA')
        else:
            _image_button(col, "Selected Texture Nodes", 'NODE_TEXTURE')
        draw_render_sources(col, context)
        # The tools above what comes and goes (progress, errors): a click never lands on them
        # because a box above them vanished.
        draw_tools(layout)
        draw_progress(layout, context)
        draw_last_error(layout, context)
        draw_output_warning(layout, context)


class _LotusOptionsPanel:
    """Tiling, seamless, multilayer pass and frame range: collapsed, what is on shows in the
    header."""
    bl_region_type = 'UI'
    bl_category = "Lotus"
    bl_label = "Options"
    bl_options = {'DEFAULT_CLOSED'}

    def draw_header_preset(self, context):
        settings = _settings(context)
        on = [name for name, enabled in (("Tiled", settings.tiled),
                                         ("Seamless", settings.seamless)) if enabled]
        if on:
            self.layout.label(text=", ".join(on))

    def draw(self, context):
        layout = self.layout
        settings = _settings(context)
        col = layout.column(align=True)
        col.prop(settings, "tiled")
        col.prop(settings, "seamless")
        layout.prop(settings, "render_pass")
        row = layout.row(align=True)
        row.prop(settings, "frame_start")
        row.prop(settings, "frame_end")
        layout.prop(settings, "stabilize")


class LotusSubPanel:
    """Mixin for feature sub-panels under the 3D View's Lotus tab (closed until opened)."""
    bl_parent_id = "LOTUS_PT_view3d"
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Lotus"
    bl_options = {'DEFAULT_CLOSED'}


class LOTUS_PT_view3d(_LotusPanel, bpy.types.Panel):
    bl_space_type = 'VIEW_3D'
    bl_idname = "LOTUS_PT_view3d"


class LOTUS_PT_image_editor(_LotusPanel, bpy.types.Panel):
    bl_space_type = 'IMAGE_EDITOR'
    bl_idname = "LOTUS_PT_image_editor"


class LOTUS_PT_view3d_options(_LotusOptionsPanel, bpy.types.Panel):
    bl_space_type = 'VIEW_3D'
    bl_idname = "LOTUS_PT_view3d_options"
    bl_parent_id = "LOTUS_PT_view3d"


class LOTUS_PT_image_editor_options(_LotusOptionsPanel, bpy.types.Panel):
    bl_space_type = 'IMAGE_EDITOR'
    bl_idname = "LOTUS_PT_image_editor_options"
    bl_parent_id = "LOTUS_PT_image_editor"


STATUS_BAR_UNITS = 8


def draw_status_bar(self, context):
    """Status bar: the running run's progress next to Blender's own. The details are in the
    status text on the left (the operator sets it); the short bar keeps its percentage."""
    job = job_queue.manager.current
    if job is not None:
        row = self.layout.row()
        row.ui_units_x = STATUS_BAR_UNITS
        text = "Lotus: Cancelling..." if job.cancelling else f"Lotus {job.percent}%"
        row.progress(factor=job.run_fraction, type='BAR', text=text)


_CLASSES = (LOTUS_PT_view3d, LOTUS_PT_image_editor, LOTUS_PT_view3d_options,
            LOTUS_PT_image_editor_options)
_HANDLERS = ((bpy.app.handlers.render_complete, _render_finished),
             (bpy.app.handlers.render_cancel, _render_finished),  # a cancelled render keeps its tiles
             (bpy.app.handlers.composite_post, _composited),
             (bpy.app.handlers.load_post, _file_loaded))


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)
    for handlers, function in _HANDLERS:
        handlers.append(function)


def unregister():
    for handlers, function in _HANDLERS:
        if function in handlers:
            handlers.remove(function)
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
