"""Operators: run Lotus on files, images, renders, passes and frames; cancel, release, open.

From the UI (invoke, or the file browser's execute) jobs run in a modal operator driven by a
window timer, so Blender stays responsive; from scripts (execute) and in background mode they
run blocking. Either way the results of one run are one undo step (undo removes the images,
never the files on disk). The options are predict_options' mixins.

Redo (Adjust Last Operation) and presets: a prediction is asynchronous, but Blender's redo undoes
the run and calls ``execute`` again, which must finish inside that call; so a redo runs the
prediction again blocking, with the changed options (the worker is warm: seconds for a photo).
Presets save and load the options (not the image or the files, which are chosen each time).
"""

from __future__ import annotations

import os
import shutil

import bpy
from bpy.props import BoolProperty, CollectionProperty, StringProperty
from bpy.types import Operator, OperatorFileListElement

from .. import protocol
from . import inputs, job_folders, job_queue, job_runner, models, outputs, predict_options
from .predict_options import TASK_ITEMS, ClipOptions, MultilayerOptions, PredictOptions
from .preferences import get_preferences
from .worker_session import PredictionChoices, preferences_options, worker_settings

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".hdr", ".bmp", ".webp",
                    ".tga", ".jp2", ".dpx", ".cin", ".sgi", ".rgb")
TIMER_INTERVAL_S = 0.1
# Where Image Files... last found photos in this session (the file browser opens there).
_last_photo_folder = [""]


def _tasks(choice: str) -> list[str]:
    return {'DEPTH': [protocol.TASK_DEPTH], 'NORMAL': [protocol.TASK_NORMAL],
            'BOTH': [protocol.TASK_DEPTH, protocol.TASK_NORMAL]}[choice]


def build_jobs(context, task_choice: str, gather, report,
               choices: PredictionChoices = PredictionChoices()) -> list:
    """Jobs for one run: ``gather(context, job_dir, resolution) -> (prepared, problems)`` makes
    the inputs once, shared by the depth and normal jobs. Raises ModelError / OutputError.

    choices.tiled: full-resolution maps from overlapping tiles of the processing resolution (the
    input is then sent at its full size); the other choices go to the worker's options and the
    outputs' settings as they are."""
    prefs = get_preferences(context)
    tasks = _tasks(task_choice)
    chosen = {task: models.model_request(task, context) for task in tasks}
    job_queue.prune_job_folders()
    batch_dir = job_folders.new_job_folder()
    prepared, problems = gather(context, batch_dir,
                                0 if choices.tiled else prefs.processing_resolution)
    for problem in problems:
        report({'ERROR'}, problem)
    for item in prepared:
        for note in item.notes:
            report({'WARNING'}, note)
    if not prepared:
        shutil.rmtree(batch_dir, ignore_errors=True)
        return []
    folder, temporary = outputs.resolve_output_folder(prefs.output_dir)
    settings = worker_settings(context)
    label = prepared[0].name + (f" (+{len(prepared) - 1})" if len(prepared) > 1 else "")
    # A run of several jobs shows under one label ("Depth & Normals photo"); one job, its own.
    run_label = next(name for key, name, _ in TASK_ITEMS if key == task_choice) + f" {label}" \
        if len(tasks) > 1 else ""
    built = []
    for part, task in enumerate(tasks):
        built.append(job_queue.Job(
            task=task, model=chosen[task], inputs=prepared, job_dir=batch_dir,
            options=preferences_options(context, choices),
            output=outputs.OutputSettings(folder=folder, temporary=temporary,
                                          convention=prefs.normal_convention,
                                          stabilize=choices.stabilize),
            worker=settings, label=f"{task.capitalize()} {label}",
            output_dir=os.path.join(batch_dir, f"out_{task}"),
            id=f"{task}-{os.path.basename(batch_dir)}", run_id=os.path.basename(batch_dir),
            run_part=part, run_parts=len(tasks), run_label=run_label))
    return built


class _LotusJobOperator(PredictOptions):
    """Shared by the predict operators: prepare inputs, queue jobs, run modal or blocking.

    Each operator defines ``gather(context, job_dir, resolution) -> (prepared, problems)``.
    """

    def _refuse(self, message: str) -> set:
        # The panel's error box says why this run did not start, not an older run's failure.
        job_queue.manager.last_error = job_queue.first_line(message)
        self.report({'ERROR'}, message)
        return {'CANCELLED'}

    def _launch(self, context, blocking: bool):
        try:
            built = build_jobs(context, self.task, self.gather, self.report,
                               predict_options.choices(self))
        except (models.ModelError, inputs.InputError, outputs.OutputError) as ex:
            return self._refuse(str(ex))
        except OSError as ex:  # the job folders (a full or read-only disk): one line, no traceback
            where = f" ({ex.filename})" if ex.filename else ""
            return self._refuse(f"Lotus cannot prepare the job: {ex.strerror or ex}{where}")
        if not built:
            return {'CANCELLED'}
        for job in built:
            job_queue.manager.submit(job)
        self._runner = job_runner.JobRunner(built, self.report)
        if blocking or bpy.app.background or context.window is None:
            return self._runner.run_blocking()
        window_manager = context.window_manager
        self._timer = window_manager.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        window_manager.modal_handler_add(self)
        self.report({'INFO'}, f"Lotus: {built[0].label} queued")
        return {'RUNNING_MODAL'}

    def modal(self, context, event):
        result = self._runner.handle(event.type)
        job_runner.tag_redraw(context)
        if 'RUNNING_MODAL' in result or 'PASS_THROUGH' in result:
            if context.workspace is not None:
                context.workspace.status_text_set(job_queue.status_line() or None)
            return result
        context.window_manager.event_timer_remove(self._timer)
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        return result


class LOTUS_OT_predict_files(_LotusJobOperator, Operator):
    """Depth and/or normal maps of image files (several at once; also what dropping images on
    the 3D View runs)"""
    bl_idname = "lotus.predict_files"
    bl_label = "Lotus: Image Files"
    bl_options = {'REGISTER', 'UNDO', 'PRESET'}

    # Chosen each time: neither remembered nor in presets (presets hold the options).
    directory: StringProperty(subtype='DIR_PATH', options={'SKIP_SAVE', 'SKIP_PRESET', 'HIDDEN'})
    files: CollectionProperty(type=OperatorFileListElement,
                              options={'SKIP_SAVE', 'SKIP_PRESET', 'HIDDEN'})
    filepath: StringProperty(subtype='FILE_PATH', options={'SKIP_SAVE', 'SKIP_PRESET'})
    filter_image: BoolProperty(default=True, options={'HIDDEN', 'SKIP_SAVE', 'SKIP_PRESET'})
    filter_folder: BoolProperty(default=True, options={'HIDDEN', 'SKIP_SAVE', 'SKIP_PRESET'})

    def paths(self) -> list[str]:
        if self.files and any(f.name for f in self.files):
            return [os.path.join(self.directory, f.name) for f in self.files if f.name]
        return [self.filepath] if self.filepath else []

    def gather(self, context, job_dir, resolution):
        prepared, problems = [], []
        for index, path in enumerate(self.paths()):
            try:
                prepared.append(inputs.prepare_file(path, job_dir, resolution, index))
            except inputs.InputError as ex:
                problems.append(str(ex))
        return prepared, problems

    def invoke(self, context, event):
        predict_options.fill_from_last_used(self, context)
        if self.paths():  # dropped files (FileHandler) or a script that gave them
            predict_options.remember(self, context)
            return self._launch(context, blocking=False)
        # Open on a folder with no file name filled in (else the browser shows the .blend's
        # name, as for a Save As): the last folder photos came from, else the .blend's.
        folder = _last_photo_folder[0] or (os.path.dirname(bpy.data.filepath)
                                           if bpy.data.filepath else "")
        if folder:
            self.filepath = os.path.join(folder, "")
        self._in_file_browser = True
        context.window_manager.fileselect_add(self)
        return {'RUNNING_MODAL'}

    def draw(self, context):
        """The file browser's side panel (about 200 px) and the redo panel: short labels that
        fit. (Stabilize is for sequences and movies: files chosen here are single photos.)"""
        layout = self.layout
        layout.prop(self, "task", text="")
        layout.prop(self, "tiled", text="Full Resolution")
        layout.prop(self, "seamless")

    def execute(self, context):
        if not self.paths():
            return self._refuse("No image files given")
        if getattr(self, "_in_file_browser", False):
            # Confirmed in the file browser: the job runs modal from here (Blender keeps an
            # operator that returns RUNNING_MODAL from the browser's execute), the UI stays live.
            self._in_file_browser = False
            _last_photo_folder[0] = self.directory or os.path.dirname(self.filepath)
            predict_options.remember(self, context)
            return self._launch(context, blocking=False)
        return self._launch(context, blocking=True)


class LOTUS_OT_predict_image(_LotusJobOperator, ClipOptions, MultilayerOptions, Operator):
    """Depth and/or normal maps of a Blender image: the active Image Editor image or the
    selected Image Texture nodes, a render, the compositor Viewer, a multilayer EXR pass, or the
    frames of an image sequence or movie"""
    bl_idname = "lotus.predict_image"
    bl_label = "Lotus: Image"
    bl_options = {'REGISTER', 'UNDO', 'PRESET'}

    image: StringProperty(name="Image", options={'SKIP_SAVE', 'SKIP_PRESET'},
                          description="Image name (empty: the active image or selected nodes)")
    layer: StringProperty(name="Layer", options={'SKIP_SAVE', 'SKIP_PRESET'},
                          description="Multilayer EXR: view layer (empty: the first)")

    def images(self, context) -> list:
        if self.image:
            image = bpy.data.images.get(self.image)
            return [image] if image is not None else []
        return inputs.images_from_context(context)

    def gather(self, context, job_dir, resolution):
        prepared, problems = [], []
        found = self.images(context)
        if not found:
            problems.append(f"No image '{self.image}'" if self.image else
                            "No image: open one in the Image Editor or select Image Texture nodes")
        for image in found:
            index = len(prepared)
            try:
                inputs.refuse_unreadable(image)  # before _is_multilayer reads its pixels
                if image.type in inputs.RENDER_LIKE_TYPES:
                    prepared.append(inputs.prepare_render_like(image, context.scene, job_dir,
                                                               resolution, index))
                elif image.type == 'MULTILAYER' or (image.source == 'FILE' and _is_multilayer(image)):
                    prepared.append(inputs.prepare_multilayer_pass(
                        image, self.layer or _first_layer(image), self.render_pass, job_dir,
                        resolution, index))
                elif image.source in ('SEQUENCE', 'MOVIE'):
                    first, last = inputs.frame_range(image)
                    first = self.frame_start or first
                    last = self.frame_end or last
                    prepared += inputs.prepare_frames(image, first, last, job_dir, resolution,
                                                      start_index=index)
                else:
                    prepared.append(inputs.prepare_image(image, job_dir, resolution, index))
            except inputs.InputError as ex:
                problems.append(str(ex))
        return prepared, problems

    def invoke(self, context, event):
        predict_options.fill_from_last_used(self, context)
        predict_options.remember(self, context)
        return self._launch(context, blocking=False)

    def execute(self, context):
        return self._launch(context, blocking=True)

    def draw(self, context):
        """The redo panel: the options that apply to the image(s) of this run."""
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(self, "task")
        layout.prop(self, "tiled")
        layout.prop(self, "seamless")
        found = self.images(context)
        if any(image.source in ('SEQUENCE', 'MOVIE') for image in found):
            column = layout.column(align=True)
            column.prop(self, "frame_start", text="Frame Start")
            column.prop(self, "frame_end", text="End")
            layout.prop(self, "stabilize")
        if any(image.type == 'MULTILAYER' for image in found):
            layout.prop(self, "layer")
            layout.prop(self, "render_pass")


def _is_multilayer(image) -> bool:
    """A file image that Blender opens as multilayer (it reports no pixels for those)."""
    if not image.filepath.lower().endswith(".exr"):
        return False
    len(image.pixels)  # makes Blender load the file and set the image type
    return image.type == 'MULTILAYER'


def _first_layer(image) -> str:
    try:
        passes = inputs.multilayer_passes(image)
    except (OSError, inputs.InputError):
        return ""
    return passes[0][0] if passes else ""


class LOTUS_OT_cancel_jobs(Operator):
    """Cancel the running Lotus job and everything queued (ESC does it too)"""
    bl_idname = "lotus.cancel_jobs"
    bl_label = "Cancel"

    def execute(self, context):
        job_queue.manager.cancel_all()
        return {'FINISHED'}


class LOTUS_OT_release_model(Operator):
    """Stop the Lotus worker now, freeing all the memory the model holds
    (the next job starts it again)"""
    bl_idname = "lotus.release_model"
    bl_label = "Release Model"

    def execute(self, context):
        if job_queue.manager.busy:
            self.report({'WARNING'}, "A job is running: cancel it first")
            return {'CANCELLED'}
        if job_queue.manager.release():
            self.report({'INFO'}, "Lotus model released")
        else:
            self.report({'INFO'}, "No model loaded")
        return {'FINISHED'}


class LOTUS_OT_open_log(Operator):
    """Open the worker's log file (errors with their full traceback)"""
    bl_idname = "lotus.open_log"
    bl_label = "Open Log"

    def execute(self, context):
        path = job_queue.manager.worker_log or job_folders.log_path()
        if not os.path.isfile(path):
            self.report({'WARNING'}, f"No log yet ({path})")
            return {'CANCELLED'}
        bpy.ops.wm.path_open(filepath=path)
        return {'FINISHED'}


class LOTUS_OT_open_model_folder(Operator):
    """Open the folder where downloaded models are kept"""
    bl_idname = "lotus.open_model_folder"
    bl_label = "Open Model Folder"

    def execute(self, context):
        bpy.ops.wm.path_open(filepath=job_folders.models_folder())
        return {'FINISHED'}


class LOTUS_OT_pack_results(Operator):
    """Pack the Lotus maps into the .blend (use when it is not saved yet)"""
    bl_idname = "lotus.pack_results"
    bl_label = "Pack Results"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        count = outputs.pack_results()
        self.report({'INFO'}, f"Packed {count} Lotus image(s)")
        return {'FINISHED'}


class LOTUS_FH_image_drop(bpy.types.FileHandler):
    """Dropping image files on the 3D View runs Lotus on them"""
    bl_idname = "LOTUS_FH_image_drop"
    bl_label = "Lotus Depth & Normals"
    bl_import_operator = "lotus.predict_files"
    bl_file_extensions = ";".join(IMAGE_EXTENSIONS)

    @classmethod
    def poll_drop(cls, context):
        return context.area is not None and context.area.type == 'VIEW_3D'


_CLASSES = (LOTUS_OT_predict_files, LOTUS_OT_predict_image, LOTUS_OT_cancel_jobs,
            LOTUS_OT_release_model, LOTUS_OT_open_log, LOTUS_OT_open_model_folder,
            LOTUS_OT_pack_results, LOTUS_FH_image_drop)


@bpy.app.handlers.persistent
def _move_results_on_save(filepath="", *_args):
    """Saving the .blend brings maps out of the temporary folder, next to it."""
    if filepath:
        for problem in outputs.move_temporary_results(filepath, get_preferences().output_dir):
            print(f"Lotus: {problem}")  # a handler cannot report; the panel keeps warning


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.app.handlers.save_pre.append(_move_results_on_save)


def unregister():
    if _move_results_on_save in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(_move_results_on_save)
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
