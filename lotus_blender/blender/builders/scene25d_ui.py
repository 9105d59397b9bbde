"""Operator and sidebar sub-panel for the photo -> 2.5D scene builder."""

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from ...core.fill import band_width
from .. import compat
from . import common, geonodes, scene25d, scene25d_behind, scene25d_camera
from .ui_common import LastUsedOptions, scene_settings_registrar
from .transaction import report_failure
from ..panels import LotusSubPanel, draw_wrapped

_MODE_ITEMS = [
    ('GEONODES', "Geometry Nodes", "Live mesh: change near, depth range, resolution and tearing afterwards"),
    ('DISPLACE', "Displace Modifier", "A subdivided plane with a Displace modifier, aligned to the camera"),
]
_MATERIAL_ITEMS = [
    ('EMISSION', "Emission", "Shows the photo exactly as it is, ignores lights"),
    ('SHADED', "Shaded", "Principled BSDF with the photo as base colour, reacts to lights"),
]
# Live controls shown in the panel for the active 2.5D object (geometry-nodes inputs).
_LIVE_INPUTS = ("Near", "Depth Range", "Max Vertices", "Tear", "Tear Threshold", "Use Normals", "Fill Behind",
                "Move Range")


class Scene25DOptions:
    """The build's options: on the operator (redo panel, presets) and the scene (last used)."""
    mode: EnumProperty(name="Mode", items=_MODE_ITEMS, default='GEONODES')
    material: EnumProperty(name="Material", items=_MATERIAL_ITEMS, default='EMISSION')
    near: FloatProperty(name="Near", default=scene25d.DEFAULT_NEAR, min=0.001, soft_max=100.0, unit='LENGTH',
                        description="Distance from the camera to the nearest point")
    auto_depth_range: BoolProperty(name="Automatic Depth Range", default=True,
                                   description="Depth range from the shift estimated with the normal map "
                                               "(off, or without normals: the Depth Range field)")
    depth_range: FloatProperty(name="Depth Range", default=scene25d.DEFAULT_DEPTH_RANGE, min=0.0, soft_max=1000.0,
                               unit='LENGTH', description="Distance from the nearest to the farthest point")
    refine: BoolProperty(name="Refine with Normals", default=True,
                         description="Take the fine detail of the mesh from the normal map (when there is one)")
    focal_source: EnumProperty(name="Focal Source", items=scene25d_camera.FOCAL_SOURCE_ITEMS, default='AUTO',
                               description="Where the camera's focal length comes from")
    max_vertices: IntProperty(name="Max Vertices", default=scene25d.DEFAULT_MAX_VERTICES, min=4,
                              soft_max=4096 * 4096, description="Grid resolution (never above one per pixel)")
    tear_threshold: FloatProperty(name="Tear Threshold", default=scene25d.DEFAULT_TEAR_THRESHOLD, min=0.0,
                                  soft_max=1.0, description="Cut where the relative depth jump is larger "
                                                            "(0 = never cut)")
    focal_35mm: FloatProperty(name="Focal (35 mm)", default=50.0, min=1.0, soft_max=300.0,
                              description="35 mm-equivalent focal length (Focal Source: Manual)")
    fill_behind: BoolProperty(name="Fill Behind", default=True,
                              description="Fill the background a camera move can reveal behind every tear "
                                          "(with Tear Threshold above 0)")
    move_range: FloatProperty(name="Move Range", default=scene25d.DEFAULT_MOVE_RANGE, min=0.0, max=1.0,
                              subtype='FACTOR', description="How far the camera may move, as a fraction of "
                                                            "the subject distance: the filled band follows from it")


def draw_options(layout, context, owner):
    """The build options of owner (the scene's settings in the Options panel, the operator in the
    redo panel), laid out the same in both."""
    layout.use_property_split = True
    layout.use_property_decorate = False
    col = layout.column()
    col.prop(owner, "mode")
    col.prop(owner, "material")
    col.prop(owner, "focal_source")
    row = col.row()
    row.active = owner.focal_source == 'MANUAL'
    row.prop(owner, "focal_35mm")
    col.prop(owner, "near")
    # "Automatic Depth Range" is cut beside its checkbox at the default width: a heading.
    sub = col.column(heading="Depth Range")
    sub.prop(owner, "auto_depth_range", text="Automatic")
    row = sub.row()
    row.active = not owner.auto_depth_range
    row.prop(owner, "depth_range", text="")
    col.prop(owner, "refine")
    col.prop(owner, "max_vertices")
    col.prop(owner, "tear_threshold")
    row = col.row()
    row.active = owner.tear_threshold > 0 and owner.mode == 'GEONODES'
    row.prop(owner, "fill_behind")
    row = col.row()
    row.active = owner.fill_behind and owner.tear_threshold > 0
    row.prop(owner, "move_range")


class LotusScene25DSettings(Scene25DOptions, bpy.types.PropertyGroup):
    photo: PointerProperty(name="Photo", type=bpy.types.Image, poll=common.is_photo,
                           description="The photo; its Lotus depth and normal results are found by name")
    depth: PointerProperty(name="Depth", type=bpy.types.Image,
                           description="Depth or disparity image (empty: the photo's Lotus depth result)")
    normal: PointerProperty(name="Normal", type=bpy.types.Image,
                            description="Normal image for custom normals (empty: the photo's Lotus normal result)")


class LOTUS_OT_build_photo_scene(LastUsedOptions, Scene25DOptions, bpy.types.Operator):
    """Build a 2.5D mesh from the photo's depth, seen through a matching camera"""
    bl_idname = "lotus.build_photo_scene"
    bl_label = "Build 2.5D Scene"
    bl_options = {'REGISTER', 'UNDO', 'PRESET'}
    OPTIONS = Scene25DOptions
    SETTINGS = "lotus_scene25d"
    IMAGES = ("photo", "depth", "normal")  # empty: the panel's; the photo's results when that is empty too

    photo: StringProperty(name="Photo", description="Image name", options={'SKIP_PRESET'})
    depth: StringProperty(name="Depth", description="Image name (empty: the photo's result)",
                          options={'SKIP_PRESET'})
    normal: StringProperty(name="Normal", description="Image name (empty: the photo's result)",
                           options={'SKIP_PRESET'})

    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.collection is not None

    def draw(self, context):
        for name in self.IMAGES:
            self.layout.prop_search(self, name, bpy.data, "images")
        draw_options(self.layout, context, self)

    @staticmethod
    def _image(name):
        if not name:
            return None
        image = bpy.data.images.get(name)
        if image is None:
            raise LookupError(f"no image named {name!r}")
        return image

    def execute(self, context):
        """The whole build in one go (scripts, the command line, redo: a redo of a modal run takes
        its frames' files when its options give the same fill, as Material or Max Vertices do)."""
        return self._build(context, behind_fill=FILL_RUN.last)

    def invoke(self, context, event):
        """From the UI: a sequence's layer behind the tears is filled frame by frame in a modal
        run (see modal), the build itself in one step at its end; anything else builds at once."""
        self.fill_from_last_used(context)
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if FILL_RUN.fill is not None:
            self.report({'ERROR'}, "A 2.5D build is filling its frames: wait for it, or cancel it")
            return {'CANCELLED'}
        self._frame = context.scene.frame_current   # the camera's frame, whatever is shown meanwhile
        try:
            return self._build(context, behind_fill=scene25d_behind.DEFER_FILL)
        except scene25d_behind.FillFramesFirst as pending:
            self._fill = pending.fill
        window_manager = context.window_manager
        self._timer = window_manager.event_timer_add(FILL_TICK_S, window=context.window)
        window_manager.modal_handler_add(self)
        FILL_RUN.start(self._fill)
        self._show_progress(context)
        return {'RUNNING_MODAL'}

    def modal(self, context, event):
        """One frame's layer behind the tears at a time (its core.fill in a background thread),
        the artist working on meanwhile; ESC or the panel's Cancel stops it, and the files it
        wrote go: nothing was built. Once every frame is filled, the build in one step (one undo
        step, like execute's)."""
        fill = self._fill
        if fill.cancelled:      # a file was loaded meanwhile (_file_loading)
            self._stop(context)
            return {'CANCELLED'}
        if (event.type == 'ESC' and event.value == 'PRESS') or FILL_RUN.cancel_requested:
            done = fill.done
            fill.cancel()
            self._stop(context)
            self.report({'WARNING'}, f"Build 2.5D Scene cancelled after {done} of {fill.total} frames: "
                                     f"nothing built, the frames' files removed")
            return {'CANCELLED'}
        if event.type != 'TIMER':
            return {'PASS_THROUGH'}
        if not fill.finished:
            done = fill.done
            try:
                fill.step(wait=False)
            except Exception as error:  # noqa: BLE001 - one line for the artist; its files removed
                self._stop(context)
                return report_failure(self, "Build 2.5D Scene", error)
            if fill.done != done:
                self._show_progress(context)
            return {'RUNNING_MODAL'}
        self._stop(context)
        result = self._build(context, behind_fill=fill, frame=self._frame)
        if 'FINISHED' in result and fill.used:
            FILL_RUN.last = fill    # for the redo panel
        else:
            fill.cancel()       # nothing was built, or built from frames filled again: these files go
            if 'FINISHED' in result:
                self.report({'WARNING'}, "The 2.5D build's inputs changed while the frames were filled: "
                                         "they were filled again")
        return result

    def cancel(self, context):
        """Blender ends the run (a file loaded, the window closed): as if cancelled."""
        self._fill.cancel()
        self._stop(context)

    def _stop(self, context):
        context.window_manager.event_timer_remove(self._timer)
        FILL_RUN.stop()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _redraw_sidebars(context)

    def _show_progress(self, context):
        if context.workspace is not None:
            context.workspace.status_text_set(f"{FILL_RUN.text()} (Esc to cancel)")
        _redraw_sidebars(context)

    def _build(self, context, behind_fill=None, frame=None):
        try:
            photo, depth, normal = (self._image(name) for name in (self.photo, self.depth, self.normal))
        except LookupError as error:
            self.report({'ERROR'}, str(error))
            return {'CANCELLED'}
        if photo is not None:
            depth = depth or common.find_result(photo, common.DEPTH_KINDS)
            normal = normal or common.find_result(photo, "normal")
        if depth is None:
            self.report({'ERROR'}, "Pick a photo that has a Lotus depth result, or a depth image")
            return {'CANCELLED'}
        try:
            obj, camera = scene25d.build_photo_scene(
                context, photo, depth, normal, mode=self.mode, near=self.near,
                depth_range=None if self.auto_depth_range else self.depth_range,
                focal_35mm=self.focal_35mm, focal_source=self.focal_source, refine=self.refine,
                max_vertices=self.max_vertices, tear_threshold=self.tear_threshold,
                material=self.material, fill_behind=self.fill_behind and self.tear_threshold > 0,
                move_range=self.move_range, frame=frame, behind_fill=behind_fill)
        except scene25d_behind.FillFramesFirst:
            raise
        except Exception as error:  # noqa: BLE001 - one line for the artist, nothing half-built
            return report_failure(self, "Build 2.5D Scene", error)
        self.remember_options(context)
        for other in context.view_layer.objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        normals = f", normals from {normal.name}" if normal is not None and self.mode == 'GEONODES' else ""
        self.report({'WARNING'} if camera.get("lotus_camera_fallback") else {'INFO'},
                    f"Built {obj.name} from {depth.name} ({depth.get('lotus_kind', 'disparity')}){normals}; "
                    f"camera {camera.name} at {camera.data.lens:.1f} mm: {camera.get('lotus_camera_report', '')}")
        return {'FINISHED'}


FILL_TICK_S = 0.1   # how often the modal run looks at the background frame (its progress, ESC)


def _redraw_sidebars(context):
    """The 3D Views' sidebars draw the progress again; not the views themselves, whose redraw
    (software OpenGL, a heavy scene) would take the CPU the frames' fill needs."""
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == 'VIEW_3D':
                for region in area.regions:
                    if region.type == 'UI':
                        region.tag_redraw()


class _FillRun:
    """The Build operator's modal run, for the panel (progress and Cancel) to draw; and the last
    run's finished fill, for its redo."""
    fill = None
    cancel_requested = False
    last = None

    def start(self, fill):
        self.fill, self.cancel_requested = fill, False

    def stop(self):
        self.fill, self.cancel_requested = None, False

    def text(self) -> str:
        fill = self.fill
        return f"Filling behind the tears: frame {fill.done + 1 if not fill.finished else fill.total} of {fill.total}"


FILL_RUN = _FillRun()


@bpy.app.handlers.persistent
def _file_loading(*_args):
    """Another .blend replaces this one: a running fill stops and its files go (nothing was built)."""
    if FILL_RUN.fill is not None:
        FILL_RUN.fill.cancel()
        FILL_RUN.stop()
    FILL_RUN.last = None


class LOTUS_OT_cancel_scene25d_fill(bpy.types.Operator):
    """Stop filling the frames behind the tears: nothing is built, the files written so far go"""
    bl_idname = "lotus.cancel_scene25d_fill"
    bl_label = "Cancel"
    bl_options = {'INTERNAL'}

    @classmethod
    def poll(cls, context):
        return FILL_RUN.fill is not None

    def execute(self, context):
        FILL_RUN.cancel_requested = True    # the modal run stops at its next tick
        return {'FINISHED'}


def _draw_fill_progress(layout):
    fill = FILL_RUN.fill
    if fill is None:
        return
    box = layout.box()
    box.progress(factor=fill.done / max(fill.total, 1), type='BAR', text=FILL_RUN.text())
    box.operator(LOTUS_OT_cancel_scene25d_fill.bl_idname, icon='CANCEL')


def _draw_camera_origin(layout, context, camera):
    """Where the scene camera's focal length and depth range came from, when the builder made it."""
    if camera is None or "lotus_focal_source" not in camera:
        return
    source = camera["lotus_focal_source"]
    confidence = camera.get("lotus_focal_confidence")
    text = f"{camera.name}: {source}" + (f" ({confidence:.2f})" if source == "estimated" and confidence is not None
                                         else "")
    box = layout.box()
    draw_wrapped(box, context, f"Focal: {text}", icon='CAMERA_DATA', in_box=True)
    draw_wrapped(box, context, f"Depth range: {camera.get('lotus_depth_range_source', 'manual')}",
                 icon='BLANK1', in_box=True)


class LOTUS_PT_scene25d(LotusSubPanel, bpy.types.Panel):
    bl_label = "2.5D Scene"
    bl_idname = "LOTUS_PT_scene25d"
    bl_options = set()  # the headline feature: open by default

    def draw(self, context):
        layout = self.layout
        settings = context.scene.lotus_scene25d
        # A "Photo:" field like the other builders' (it lists photos, not results), and Open.
        row = layout.row(align=True)
        row.prop(settings, "photo")
        row.operator("image.open", text="", icon='FILE_FOLDER')
        photo = settings.photo
        if photo is not None and settings.depth is None and common.find_result(photo, common.DEPTH_KINDS) is None:
            draw_wrapped(layout, context, "Predict depth for this photo first", icon='INFO')
        # The photo; invoke fills the maps and the options from the panel's (last used).
        if FILL_RUN.fill is not None:
            _draw_fill_progress(layout)
            return
        op = layout.operator(LOTUS_OT_build_photo_scene.bl_idname, icon='OUTLINER_OB_MESH')
        op.photo = photo.name if photo is not None else ""


class LOTUS_PT_scene25d_options(LotusSubPanel, bpy.types.Panel):
    """The build settings, collapsed: the defaults suit most photos."""
    bl_label = "Options"
    bl_idname = "LOTUS_PT_scene25d_options"
    bl_parent_id = "LOTUS_PT_scene25d"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.lotus_scene25d
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(settings, "depth")
        col.prop(settings, "normal")
        if not compat.HAS_SET_MESH_NORMAL:
            draw_wrapped(col, context, "Custom normals: Blender 4.5+", icon='INFO')
        draw_options(layout, context, settings)


def _live_modifier(context):
    obj = context.active_object
    modifier = obj.modifiers.get(scene25d.MODIFIER_NAME) if obj is not None else None
    if modifier is not None and modifier.type == 'NODES' and modifier.node_group is not None:
        return modifier
    return None


class LOTUS_PT_scene25d_live(LotusSubPanel, bpy.types.Panel):
    """The active 2.5D object: its live geometry-nodes inputs and where its camera came from."""
    bl_label = "Live Mesh"
    bl_idname = "LOTUS_PT_scene25d_live"
    bl_parent_id = "LOTUS_PT_scene25d"
    bl_options = set()

    @classmethod
    def poll(cls, context):
        return _live_modifier(context) is not None

    def draw(self, context):
        layout = self.layout
        modifier = _live_modifier(context)
        layout.label(text=context.active_object.name, icon='MODIFIER')
        col = layout.column(align=True)
        value = lambda name: compat.get_modifier_input(modifier, geonodes.input_identifier(modifier.node_group, name))
        # Greyed where the group ignores them: no tearing, no layer behind the tears.
        tearing = bool(value("Tear"))
        active = {"Tear Threshold": tearing, "Fill Behind": tearing, "Move Range": tearing and bool(value("Fill Behind"))}
        for name in _LIVE_INPUTS:
            if name == "Use Normals" and not compat.HAS_SET_MESH_NORMAL:
                continue  # the group has the input, but nothing behind it before 4.5
            key = geonodes.input_identifier(modifier.node_group, name)
            row = col.row(align=True)
            row.active = active.get(name, True)
            compat.draw_modifier_input(row, modifier, key, name)
        _draw_fill_band(layout, context, modifier)
        layout.operator("lotus.camera_move", icon='VIEW_CAMERA')
        _draw_camera_origin(layout, context, context.scene.camera)


def _draw_fill_band(layout, context, modifier):
    """How wide the filled band is at the largest depth jump, for the current Move Range."""
    obj = context.active_object
    opening = obj.get("lotus_fill_opening")
    tree = modifier.node_group
    try:
        values = {name: compat.get_modifier_input(modifier, geonodes.input_identifier(tree, name))
                  for name in ("Fill Behind", "Tear", "Move Range", "Behind")}
    except KeyError:        # a mesh built before Fill Behind existed
        return
    if opening is None or values["Behind"] is None or not (values["Fill Behind"] and values["Tear"]):
        return
    if opening <= 0.0:      # every step too soft (the build's report says how many) or none at all
        draw_wrapped(layout, context, "Fill: no sharp depth edge to fill behind", icon='MOD_MASK')
        return
    camera = context.scene.camera
    # A sequence's size is 0 x 0 until one of its frames is shown: the size the build read.
    depth_size = max(values["Behind"].size) or obj.get("lotus_map_size", 0)
    lens, sensor = (camera.data.lens, camera.data.sensor_width) if camera is not None and camera.type == 'CAMERA' \
        else (50.0, 36.0)
    band = band_width(1.0, 1.0 / max(1.0 - opening, 1e-6), lens / sensor * depth_size,
                                    values["Move Range"])
    draw_wrapped(layout, context, f"Fill: up to {float(band):.0f} px behind near edges "
                                  f"(Move Range {values['Move Range'] * 100:.0f}%)", icon='MOD_MASK')


_CLASSES = (LotusScene25DSettings, LOTUS_OT_build_photo_scene, LOTUS_OT_cancel_scene25d_fill, LOTUS_PT_scene25d,
            LOTUS_PT_scene25d_options, LOTUS_PT_scene25d_live)


_register_classes, _unregister_classes = scene_settings_registrar(_CLASSES, "lotus_scene25d", LotusScene25DSettings)


def register():
    _register_classes()
    bpy.app.handlers.load_pre.append(_file_loading)


def unregister():
    if _file_loading in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_file_loading)
    if FILL_RUN.fill is not None:
        FILL_RUN.fill.cancel()
    FILL_RUN.stop()
    FILL_RUN.last = None
    _unregister_classes()
