"""The "Lotus" sidebar tab in the 3D View and the Image Editor: sources, progress, tools.

Other features add sub-panels with ``bl_parent_id = "LOTUS_PT_view3d"``.
"""

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from . import jobs, outputs
from .operators import TASK_ITEMS
from .preferences import get_preferences


class LotusPanelSettings(bpy.types.PropertyGroup):
    """What the sidebar buttons pass to the operators (per window manager, not saved in files)."""
    task: EnumProperty(name="Task", items=TASK_ITEMS, default='DEPTH')
    render_pass: StringProperty(name="Pass", default="Combined",
                                description="Multilayer EXR images: the pass to use")
    frame_start: IntProperty(name="Start", default=0, min=0,
                             description="Sequences and movies: first frame (0: from the start)")
    frame_end: IntProperty(name="End", default=0, min=0,
                           description="Sequences and movies: last frame (0: to the end)")
    tiled: BoolProperty(name="Full Resolution (Tiled)", default=False,
                        description="Maps at the image's full resolution from overlapping, "
                                    "smoothly blended tiles (slower: one model pass per tile)")
    seamless: BoolProperty(name="Seamless", default=False,
                           description="Maps that tile without a seam, for repeating textures")
    stabilize: BoolProperty(name="Stabilize Depth", default=True,
                            description="Sequences and movies: align each frame's depth to the "
                                        "frames before it (removes flicker)")


def _settings(context):
    return context.window_manager.lotus_panel


def draw_progress(layout) -> None:
    """The running job as a real progress bar, with Cancel (ESC works too)."""
    job = jobs.manager.current
    if job is None and not jobs.manager.queue:
        return
    box = layout.box()
    if job is not None:
        box.progress(factor=job.fraction, type='BAR', text=job.status_text())
    if jobs.manager.queue:
        box.label(text=f"{len(jobs.manager.queue)} job(s) waiting", icon='SORTTIME')
    box.operator("lotus.cancel_jobs", icon='CANCEL')


def draw_last_error(layout) -> None:
    """The last failure in short; the full traceback is in the worker's log, one click away."""
    if jobs.manager.last_error:
        box = layout.box()
        box.alert = True
        box.label(text=jobs.manager.last_error, icon='ERROR')
        box.operator("lotus.open_log", icon='TEXT')


def draw_output_warning(layout) -> None:
    folder, temporary = outputs.resolve_output_folder(get_preferences().output_dir)
    if temporary and any("lotus_kind" in image and image.packed_file is None
                         for image in bpy.data.images):
        box = layout.box()
        box.alert = True
        box.label(text="Unsaved .blend: maps are in a temp folder", icon='ERROR')
        box.label(text=folder)
        box.operator("lotus.pack_results", icon='PACKAGE')


def draw_tools(layout) -> None:
    row = layout.row(align=True)
    row.operator("lotus.release_model", text="Release", icon='X')
    row.operator("lotus.open_log", text="Log", icon='TEXT')
    row.operator("lotus.open_model_folder", text="Models", icon='FILE_FOLDER')


def _image_button(layout, settings, text, icon, image_name=""):
    op = layout.operator("lotus.predict_image", text=text, icon=icon)
    op.task = settings.task
    op.image = image_name
    op.render_pass = settings.render_pass
    op.frame_start = settings.frame_start
    op.frame_end = settings.frame_end
    op.tiled = settings.tiled
    op.seamless = settings.seamless
    op.stabilize = settings.stabilize
    return op


class _LotusPanel:
    bl_region_type = 'UI'
    bl_category = "Lotus"
    bl_label = "Lotus"

    def draw(self, context):
        layout = self.layout
        settings = _settings(context)
        layout.prop(settings, "task", expand=True)
        col = layout.column(align=True)
        files = col.operator("lotus.predict_files", text="Image Files...", icon='FILE_IMAGE')
        files.task, files.tiled, files.seamless = settings.task, settings.tiled, settings.seamless
        if context.space_data is not None and context.space_data.type == 'IMAGE_EDITOR':
            _image_button(col, settings, "Active Image", 'IMAGE_DATA')
        else:
            _image_button(col, settings, "Selected Texture Nodes", 'NODE_TEXTURE')
        if "Render Result" in bpy.data.images:
            _image_button(col, settings, "Render Result", 'RENDER_RESULT', "Render Result")
        if "Viewer Node" in bpy.data.images:
            _image_button(col, settings, "Compositor Viewer", 'NODE_COMPOSITING', "Viewer Node")
        row = layout.row(align=True)
        row.prop(settings, "tiled", toggle=True)
        row.prop(settings, "seamless", toggle=True)
        sub = layout.column(heading="Multilayer / Frames")
        sub.prop(settings, "render_pass")
        row = sub.row(align=True)
        row.prop(settings, "frame_start")
        row.prop(settings, "frame_end")
        sub.prop(settings, "stabilize")
        draw_progress(layout)
        draw_last_error(layout)
        draw_output_warning(layout)
        draw_tools(layout)


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


def draw_status_bar(self, context):
    """Status bar: the running job's progress next to Blender's own."""
    job = jobs.manager.current
    if job is not None:
        self.layout.progress(factor=job.fraction, type='BAR', text=job.status_text())


_CLASSES = (LotusPanelSettings, LOTUS_PT_view3d, LOTUS_PT_image_editor)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.WindowManager.lotus_panel = PointerProperty(type=LotusPanelSettings)
    bpy.types.STATUSBAR_HT_header.append(draw_status_bar)


def unregister():
    bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    del bpy.types.WindowManager.lotus_panel
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
