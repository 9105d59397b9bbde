"""Preview Relight: a small Cycles render of the relit scene in seconds, with progress and cancel.

Quality 'FAST' (the default) renders with a few adaptive samples and no denoising; 'FULL' keeps
the scene's own sampling and denoising (only the size is the preview's). Light paths stay the
scene's in both: shorter ones made no measurable difference in a relight scene. Both render only the active view layer, skip the compositor and the sequencer, and
lower the 2.5D meshes to no more vertices than the preview has pixels.

The image is rendered in horizontal bands (border render, cropped). Persistent data is on while
the bands render, so the scene is synced once and the bands together cost about one render
(plus the denoising margins of Full quality); between bands the interface updates the progress
and the image, and Esc (or Cancel) stops. In background mode
(scripts, ``blender -b``) the bands run one after another before the operator returns.

Every setting is put back afterwards, unless the artist changed it meanwhile: nothing of the
artist's scene changes. The result is the float image "<photo>_relight_preview".
"""

import math
import os
import shutil
import tempfile

import bpy
import numpy as np
from bpy.props import EnumProperty, IntProperty

from .. import compat, outputs
from ..panels import own_renders
from . import common, scene25d

QUALITY_ITEMS = [
    ('FAST', "Fast", "A few adaptive samples, no denoising: seconds on a CPU"),
    ('FULL', "Full", "The scene's own samples and denoising (slower)"),
]
FAST_SAMPLES = 8
FAST_ADAPTIVE_THRESHOLD = 0.05
# Rows per band: each band costs a little (about 0.1-0.2 s on 2 busy cores, measured by
# benchmarks/bench_preview.py), so a fast preview takes few bands, a slow full one more.
BAND_ROWS = {'FAST': 96, 'FULL': 64}
# Extra rows rendered around a denoised band so that the denoiser sees across its edges (no seams);
# they cost DENOISE_MARGIN_ROWS / band rows of extra render time per side.
DENOISE_MARGIN_ROWS = 8


class Settings:
    """Properties set for the preview and put back afterwards (unless changed meanwhile)."""

    def __init__(self):
        self._saved = []

    def set(self, owner, name, value):
        if not hasattr(owner, name):
            return
        old = getattr(owner, name)
        if old == value:
            return
        setattr(owner, name, value)
        self._saved.append((owner, name, old, getattr(owner, name)))

    def restore(self):
        for owner, name, old, ours in reversed(self._saved):
            if getattr(owner, name) == ours:
                setattr(owner, name, old)
        self._saved.clear()


class FormatSettings:
    """Output format settings depend on each other (a file format changes the colour depth):
    all are saved before any is set, and put back in the same order, unconditionally."""

    def __init__(self):
        self._saved = []

    def set_all(self, owner, values):
        values = [(name, value) for name, value in values if hasattr(owner, name)]
        self._saved = [(owner, name, getattr(owner, name)) for name, _value in values]
        # The EXR colour space (Blender 5.0+) follows the format; an unset one cannot be put back.
        space = getattr(owner, "linear_colorspace_settings", None)
        if space is not None and space.name:
            self._saved.append((space, "name", space.name))
        for name, value in values:
            setattr(owner, name, value)

    def restore(self):
        for owner, name, old in self._saved:
            setattr(owner, name, old)
        self._saved.clear()


def fast_settings(scene):
    """(owner, property, value) of a fast preview (besides its few samples), by what each buys."""
    cycles = scene.cycles
    return {
        "adaptive": [(cycles, "use_adaptive_sampling", True),
                     (cycles, "adaptive_threshold", max(cycles.adaptive_threshold, FAST_ADAPTIVE_THRESHOLD)),
                     (cycles, "adaptive_min_samples", 0)],
        "no_denoising": [(cycles, "use_denoising", False)],
    }


def lower_mesh_resolution(scene, vertex_budget):
    """Lotus 2.5D meshes need no more vertices than the preview has pixels: lower their Max
    Vertices while it renders (gap fills follow through their drivers). Returns what to put back."""
    lowered = []
    for obj in scene.objects:
        modifier = obj.modifiers.get(scene25d.MODIFIER_NAME)
        if modifier is None or modifier.type != 'NODES' or modifier.node_group is None \
                or obj.get("lotus_gap_fill"):
            continue
        key = scene25d.geonodes.input_identifier(modifier.node_group, "Max Vertices")
        value = compat.get_modifier_input(modifier, key)
        if value > vertex_budget:
            lowered.append((obj, modifier, key, value))
            compat.set_modifier_input(modifier, key, vertex_budget)
    return lowered


class PreviewRender:
    """One preview render, band by band: start(), step() until it returns True, then finish();
    cancel() instead stops it. Both put every setting back."""

    def __init__(self, context, name, *, max_size=320, quality='FAST', samples=0, knobs=None):
        self.scene = context.scene
        self.name = name
        self.max_size = max(1, int(max_size))
        self.quality = quality
        self.samples = int(samples) or (FAST_SAMPLES if quality == 'FAST' else self.scene.cycles.samples)
        self.knobs = knobs  # names from fast_settings() to apply (None: all); for benchmarks
        self.settings = Settings()
        self.format_settings = FormatSettings()
        self.lowered = []
        self.border_y = None
        self.folder = None
        self.bands = []
        self.done = 0
        self.pixels = None
        self.width = self.height = 0
        self.cancel_requested = False  # set by the Cancel button, seen by the modal operator
        self.notes = []

    @property
    def fraction(self):
        return self.done / len(self.bands) if self.bands else 0.0

    def start(self):
        scene, render = self.scene, self.scene.render
        percentage = render.resolution_percentage / 100.0
        self.width = max(1, int(render.resolution_x * percentage))
        self.height = max(1, int(render.resolution_y * percentage))
        try:
            longest = max(self.width, self.height)
            if longest > self.max_size:
                # The exact size asked for (a whole percentage would round 4032 px to 282, not 320).
                self.width = max(1, round(self.width * self.max_size / longest))
                self.height = max(1, round(self.height * self.max_size / longest))
                self.settings.set(render, "resolution_x", self.width)
                self.settings.set(render, "resolution_y", self.height)
                self.settings.set(render, "resolution_percentage", 100)
            self.lowered = lower_mesh_resolution(scene, max(4, self.width * self.height))
            self.settings.set(scene.cycles, "samples", self.samples)
            if scene.cycles.use_denoising and not compat.cycles_can_denoise(scene):
                self.settings.set(scene.cycles, "use_denoising", False)
                self.notes.append("this Blender cannot denoise: the preview is not denoised")
            if self.quality == 'FAST':
                for knob, values in fast_settings(scene).items():
                    if self.knobs is None or knob in self.knobs:
                        for owner, name, value in values:
                            self.settings.set(owner, name, value)
            for name, value in (("use_compositing", False), ("use_sequencer", False),
                                ("use_single_layer", True), ("use_persistent_data", True),
                                ("use_border", True), ("use_crop_to_border", True),
                                ("border_min_x", 0.0), ("border_max_x", 1.0)):
                self.settings.set(render, name, value)
            self._set_exr_output(render.image_settings)
            self.border_y = (render.border_min_y, render.border_max_y)  # step() moves them
            self.folder = tempfile.mkdtemp(prefix="lotus-relight-")
            self._plan_bands()
            self.pixels = np.zeros((self.height, self.width, 4), dtype=np.float32)
        except BaseException:
            self._clean_up()
            raise

    def _plan_bands(self):
        margin = DENOISE_MARGIN_ROWS if self.scene.cycles.use_denoising else 0
        count = max(1, math.ceil(self.height / BAND_ROWS[self.quality]))
        edges = [round(i * self.height / count) for i in range(count + 1)]
        # Rows counted from the bottom, as Cycles' border; (rendered rows, kept rows).
        self.bands = [((max(0, a - margin), min(self.height, b + margin)), (a, b))
                      for a, b in zip(edges, edges[1:])]

    def _set_exr_output(self, image_settings):
        # media_type (Blender 5.0+, skipped where absent) must come before the file format.
        self.format_settings.set_all(image_settings, (
            ("media_type", 'IMAGE'), ("file_format", 'OPEN_EXR'), ("color_mode", 'RGBA'),
            ("color_depth", '32')))

    def step(self):
        """Render the next band. Returns True when every band is done."""
        (low, high), (keep_low, keep_high) = self.bands[self.done]
        render = self.scene.render
        # Cycles truncates border * height to whole rows: a quarter row up keeps exact edges.
        render.border_min_y = (low + 0.25) / self.height if low else 0.0
        render.border_max_y = (high + 0.25) / self.height if high < self.height else 1.0
        try:
            # In the interface a failed render only reports; in background mode it raises.
            with own_renders():  # not the artist's render: the Render Result button stays hidden
                finished = bpy.ops.render.render(write_still=False)
            if finished != {'FINISHED'}:
                raise RuntimeError("the render did not finish (its message is in the Info editor)")
        except RuntimeError as error:
            # Builds without OpenImageDenoise (Debian's Blender 4.3) fail every denoised render.
            if "denois" not in str(error).lower() or not self.scene.cycles.use_denoising:
                raise
            self.settings.set(self.scene.cycles, "use_denoising", False)
            self.notes.append("this Blender cannot denoise: the preview is not denoised")
            if self.done == 0:
                self._plan_bands()  # no denoising margins needed any more
            return self.step()
        band = self._read_render_result()
        rows = band.shape[0]
        if rows != high - low or band.shape[1] != self.width:
            raise RuntimeError(f"band of {band.shape[1]}x{rows} pixels, expected {self.width}x{high - low}")
        # Top row first in both arrays; Cycles counts rows from the bottom.
        self.pixels[self.height - keep_high:self.height - keep_low] = band[high - keep_high:high - keep_low]
        self.done += 1
        return self.done == len(self.bands)

    def _read_render_result(self):
        path = os.path.join(self.folder, f"band{self.done}.exr")
        bpy.data.images["Render Result"].save_render(path, scene=self.scene)
        loaded = bpy.data.images.load(path, check_existing=False)
        try:
            return common.read_pixels(loaded)
        finally:
            bpy.data.images.remove(loaded)
            os.remove(path)

    def show_progress(self):
        """The bands rendered so far in the preview image (the rest stays black)."""
        return self._write_image()

    def finish(self):
        self._clean_up()
        return self._write_image()

    def cancel(self):
        self._clean_up()

    def _write_image(self):
        image = common.write_float_image(self.name, self.pixels, non_color=False)
        image["lotus_kind"] = "relight_preview"
        source = self.scene.get("lotus_relight_source")
        if source and source in bpy.data.images:
            image["lotus_source"] = source
        outputs.keep_in_blend(image)  # no file: packed, it survives save and reopen
        return image

    def _clean_up(self):
        for _obj, modifier, key, value in self.lowered:
            compat.set_modifier_input(modifier, key, value)
        # Blender re-evaluates the meshes (and the gap fills' drivers) at full resolution when
        # next asked: that is not the preview's to wait for.
        self.lowered = []
        if self.border_y is not None:
            self.scene.render.border_min_y, self.scene.render.border_max_y = self.border_y
            self.border_y = None
        self.format_settings.restore()
        self.settings.restore()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def render_preview(context, name, max_size=320, samples=0, quality='FAST'):
    """Render the scene camera small (longest edge at most max_size) into the float image name,
    blocking. samples 0: the quality's default. Returns the image (linear, scene-referred)."""
    return run_blocking(PreviewRender(context, name, max_size=max_size, quality=quality,
                                      samples=samples))


def run_blocking(job):
    job.start()
    try:
        while not job.step():
            pass
    except BaseException:
        job.cancel()
        raise
    return job.finish()


# ---------------------------------------------------------------------------------------------
# Operators: the preview runs band by band on a timer in the interface, blocking in background.

_running = {}  # scene name -> the operator's PreviewRender, for the panel's progress and Cancel


def preview_name(scene):
    source = scene.get("lotus_relight_source", scene.name)
    photo = bpy.data.images.get(source)
    return f"{common.photo_stem(photo) if photo is not None else source}_relight_preview"


def running_preview(scene):
    return _running.get(scene.name)


def _show(context, image):
    for area in (context.screen.areas if context.screen else ()):
        if area.type == 'IMAGE_EDITOR':
            area.spaces.active.image = image
            area.tag_redraw()


def _redraw_sidebars(context):
    for area in (context.screen.areas if context.screen else ()):
        if area.type in ('VIEW_3D', 'IMAGE_EDITOR'):
            area.tag_redraw()


class LOTUS_OT_preview_relight(bpy.types.Operator):
    """Render a small preview of the relit scene into an image (shown in open Image Editors);
    Esc cancels"""
    bl_idname = "lotus.preview_relight"
    bl_label = "Preview Relight"
    bl_options = {'REGISTER'}

    # SKIP_SAVE: unless given, size and quality come from the panel, not from the last call.
    max_size: IntProperty(name="Size", default=320, min=16, soft_max=1024, options={'SKIP_SAVE'},
                          description="Longest edge of the preview in pixels")
    quality: EnumProperty(name="Quality", items=QUALITY_ITEMS, default='FAST', options={'SKIP_SAVE'})
    samples: IntProperty(name="Samples", default=0, min=0, soft_max=256, options={'SKIP_SAVE'},
                         description="Samples per pixel (0: the quality's own: few for Fast, "
                                     "the scene's for Full)")

    _timer = None
    _job = None
    _key = ""

    @classmethod
    def poll(cls, context):
        return context.scene.camera is not None and running_preview(context.scene) is None

    def _check(self, context):
        if context.scene.render.engine != 'CYCLES':
            self.report({'ERROR'}, "Preview Relight renders with Cycles: run Relight Setup first")
            return False
        return True

    def _from_panel(self, context):
        if not self.properties.is_property_set("max_size"):
            self.max_size = context.scene.lotus_relight.preview_size
        if not self.properties.is_property_set("quality"):
            self.quality = context.scene.lotus_relight.preview_quality

    def _new_job(self, context):
        self._from_panel(context)
        return PreviewRender(context, preview_name(context.scene), max_size=self.max_size,
                             quality=self.quality, samples=self.samples)

    def execute(self, context):
        if not self._check(context):
            return {'CANCELLED'}
        job = self._new_job(context)
        try:
            image = run_blocking(job)
        except RuntimeError as error:
            self.report({'ERROR'}, f"Preview render failed: {error}")
            return {'CANCELLED'}
        _show(context, image)
        self._report_done(image, job.notes)
        return {'FINISHED'}

    def invoke(self, context, event):
        if bpy.app.background:  # no event loop: render every band now
            return self.execute(context)
        if not self._check(context):
            return {'CANCELLED'}
        self._job = self._new_job(context)
        try:
            self._job.start()
        except RuntimeError as error:
            self.report({'ERROR'}, f"Preview render failed: {error}")
            return {'CANCELLED'}
        self._key = context.scene.name
        _running[self._key] = self._job
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.02, window=context.window)
        wm.modal_handler_add(self)
        self._status(context)
        return {'RUNNING_MODAL'}

    def _status(self, context):
        job = self._job
        text = f"Preview Relight {int(job.fraction * 100)}% (band {job.done + 1}/{len(job.bands)}), Esc to cancel"
        if context.workspace is not None:
            context.workspace.status_text_set(text)
        _redraw_sidebars(context)

    def _end(self, context):
        context.window_manager.event_timer_remove(self._timer)
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _running.pop(self._key, None)
        _redraw_sidebars(context)

    def modal(self, context, event):
        job = self._job
        if event.type == 'ESC' or job.cancel_requested:
            job.cancel()
            self._end(context)
            self.report({'INFO'}, "Preview Relight cancelled")
            return {'CANCELLED'}
        if event.type != 'TIMER':
            return {'PASS_THROUGH'}
        try:
            done = job.step()
        except (RuntimeError, ReferenceError) as error:  # ReferenceError: the scene was deleted
            try:
                job.cancel()
            except ReferenceError:
                pass
            self._end(context)
            self.report({'ERROR'}, f"Preview render failed: {error}")
            return {'CANCELLED'}
        if not done:
            _show(context, job.show_progress())
            self._status(context)
            return {'RUNNING_MODAL'}
        image = job.finish()
        self._end(context)
        _show(context, image)
        self._report_done(image, job.notes)
        return {'FINISHED'}

    def _report_done(self, image, notes):
        self.report({'WARNING'} if notes else {'INFO'},
                    f"Relight preview in image {image.name} ({image.size[0]}x{image.size[1]})"
                    + "".join(f"; {note}" for note in notes))


class LOTUS_OT_cancel_preview_relight(bpy.types.Operator):
    """Stop the running relight preview"""
    bl_idname = "lotus.cancel_preview_relight"
    bl_label = "Cancel Preview"
    bl_options = {'INTERNAL'}

    @classmethod
    def poll(cls, context):
        return running_preview(context.scene) is not None

    def execute(self, context):
        running_preview(context.scene).cancel_requested = True
        return {'FINISHED'}


def draw_preview(layout, context, settings):
    """The Relight panel's preview row: size, quality and button, or progress and Cancel."""
    job = running_preview(context.scene)
    if job is not None:
        row = layout.row(align=True)
        row.progress(factor=job.fraction, type='BAR', text=f"Preview {int(job.fraction * 100)}%")
        row.operator(LOTUS_OT_cancel_preview_relight.bl_idname, text="", icon='CANCEL')
        return
    row = layout.row(align=True)
    row.prop(settings, "preview_size", text="")
    row.prop(settings, "preview_quality", text="")
    op = row.operator(LOTUS_OT_preview_relight.bl_idname, icon='RENDER_STILL', text="Preview")
    op.max_size = settings.preview_size
    op.quality = settings.preview_quality


_CLASSES = (LOTUS_OT_preview_relight, LOTUS_OT_cancel_preview_relight)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for job in list(_running.values()):
        job.cancel()
    _running.clear()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
