"""Blender side, end to end with the real worker and tiny checkpoints: files in, images and files
out; the modal/timer path with progress, cancel (ESC), a killed worker, release, unregister."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest

from tests.blender_env import worker_python_preference
from tests.blender_side import (Reports, configure, drive, gradient, image_pixels, live,
                                new_image, remove_images)


def _png_bit_depth(path) -> int:
    with open(path, "rb") as handle:
        header = handle.read(26)
    return header[24]


def _write_png(path, array01, bits=8):
    from PIL import Image
    if bits == 16:
        data = np.round(array01 * 65535).astype(np.uint16)
        Image.fromarray(data).save(path)
    else:
        Image.fromarray(np.round(array01 * 255).astype(np.uint8)).save(path)


def test_files_to_images_and_files(lotus, tmp_path):
    import bpy
    rgb = gradient()[..., :3]
    _write_png(tmp_path / "photo.png", rgb)
    _write_png(tmp_path / "gray16.png", rgb[..., 0], bits=16)
    jobs_before = sorted(os.listdir(lotus.job_folders.user_folder("jobs")))
    result = bpy.ops.lotus.predict_files(task='BOTH', directory=str(tmp_path),
                                         files=[{"name": "photo.png"}, {"name": "gray16.png"}])
    assert result == {'FINISHED'}
    depth = bpy.data.images["photo_depth"]
    assert tuple(depth.size) == (32, 24)
    assert depth.is_float and depth.colorspace_settings.is_data
    assert depth["lotus_kind"] == "disparity"
    assert depth["lotus_source"] == "photo.png"
    assert depth["lotus_source_path"] == str(tmp_path / "photo.png")
    values = image_pixels(depth)
    assert np.allclose(values[..., 0], values[..., 1]) and np.allclose(values[..., 3], 1.0)
    assert 0.0 <= values[..., 0].min() and values[..., 0].max() <= 1.0
    normal = bpy.data.images["photo_normal"]
    assert normal["lotus_kind"] == "normal" and normal.colorspace_settings.is_data
    vectors = image_pixels(normal)[..., :3] * 2.0 - 1.0
    assert np.allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=2e-3)
    assert "photo_depth_preview" in bpy.data.images and "gray16_normal" in bpy.data.images
    files = sorted(os.listdir(lotus.out))
    for name in ("photo_depth.exr", "photo_depth_preview.png", "photo_normal.exr",
                 "photo_normal_opengl.png", "gray16_depth.exr", "gray16_normal.exr"):
        assert name in files
    assert _png_bit_depth(lotus.out / "photo_normal_opengl.png") == 16
    # The Blender images now live in those files and read back the same values.
    assert os.path.normpath(bpy.path.abspath(depth.filepath)) == str(lotus.out / "photo_depth.exr")
    depth.reload()
    assert np.allclose(image_pixels(depth), values, atol=1e-6)
    # The job folder (arrays) is cleaned once everything is written.
    assert sorted(os.listdir(lotus.job_folders.user_folder("jobs"))) == jobs_before

    # Run again: the same images are updated, the old files are never overwritten.
    before = (lotus.out / "photo_depth.exr").read_bytes()
    bpy.ops.lotus.predict_files(task='DEPTH', directory=str(tmp_path),
                                files=[{"name": "photo.png"}])
    assert (lotus.out / "photo_depth.exr").read_bytes() == before
    assert (lotus.out / "photo_depth_001.exr").is_file()
    assert bpy.data.images["photo_depth"].filepath.endswith("photo_depth_001.exr")
    assert "photo_depth.001" not in bpy.data.images
    remove_images("photo")
    remove_images("gray16")


def test_modal_path_progress_then_directx_png(lotus, monkeypatch):
    """The timer path: TIMER events advance the job, progress is reported, results arrive."""
    import bpy
    prefs = bpy.context.preferences.addons[lotus.name].preferences
    prefs.normal_convention = 'DIRECTX'
    image = new_image("modal_src", gradient())
    reports = Reports()

    def gather(context, job_dir, resolution):
        return [lotus.inputs.prepare_image(image, job_dir, resolution, 0)], []

    built = lotus.operators.build_jobs(bpy.context, 'NORMAL', gather, reports)
    for job in built:
        lotus.job_queue.manager.submit(job)
    runner = lotus.job_runner.JobRunner(built, reports)
    manager = lotus.job_queue.manager
    handle_event = manager._handle
    seen = []

    def recording(event):
        # What the panel would show after each event the timer reads.
        handle_event(event)
        seen.append((event.get("event"), built[0].fraction, lotus.job_queue.status_line()))
    monkeypatch.setattr(manager, "_handle", recording)
    assert runner.handle('MOUSEMOVE') == {'PASS_THROUGH'}
    result = drive(runner)
    assert result == {'FINISHED'}
    assert built[0].state == lotus.job_queue.DONE
    progress = [(f, text) for event, f, text in seen if event == "progress"]
    assert any(0.0 < f < 1.0 for f, _ in progress), seen
    assert all(text.startswith("Normal modal_src:") and text.endswith("%") for _, text in progress)
    assert reports.texts('INFO') and not reports.texts('ERROR')
    png = lotus.out / "modal_src_normal_directx.png"
    assert png.is_file() and _png_bit_depth(png) == 16
    # DirectX flips green: the PNG's green is 1 - the OpenGL image's green.
    from PIL import Image
    with Image.open(png) as handle:
        directx = np.asarray(handle).astype(np.float64)
    directx = directx / (65535.0 if directx.max() > 255 else 255.0)
    opengl = image_pixels(bpy.data.images["modal_src_normal"])[..., :3]
    assert np.allclose(directx[..., 1], 1.0 - opengl[..., 1], atol=2e-2)
    assert np.allclose(directx[..., 0], opengl[..., 0], atol=2e-2)
    remove_images("modal_src")


def _gather_many(lotus, count=6, size=(96, 72)):
    image = new_image("many_src", gradient(*size))

    def gather(context, job_dir, resolution):
        return [lotus.inputs.prepare_image(image, job_dir, resolution, i, name=f"many{i}")
                for i in range(count)], []
    return gather


def test_escape_cancels_then_killed_worker_then_next_job_works(lotus):
    import bpy
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'DEPTH', _gather_many(lotus), reports)
    lotus.job_queue.manager.submit(built[0])
    runner = lotus.job_runner.JobRunner(built, reports)
    # ESC as soon as the job runs: the worker stops between stages.
    while built[0].state == lotus.job_queue.QUEUED:
        runner.handle('TIMER')
    assert runner.handle('ESC') == {'RUNNING_MODAL'}
    assert drive(runner) == {'CANCELLED'}
    assert built[0].state == lotus.job_queue.CANCELLED
    assert reports.texts('WARNING') and "many0_depth" not in bpy.data.images

    # Kill the worker mid-job: that job fails with a clear message, nothing else.
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'DEPTH', _gather_many(lotus), reports)
    lotus.job_queue.manager.submit(built[0])
    runner = lotus.job_runner.JobRunner(built, reports)
    while built[0].state == lotus.job_queue.QUEUED:
        runner.handle('TIMER')
    pid = lotus.job_queue.manager.client.pid
    os.kill(pid, signal.SIGKILL)
    assert drive(runner) == {'CANCELLED'}
    assert built[0].state == lotus.job_queue.FAILED
    assert "stopped unexpectedly" in built[0].message
    (killed,) = [text for text in reports.texts('ERROR') if "stopped unexpectedly" in text]
    assert killed.count("Open Log") == 1, killed

    # The next job starts a fresh worker and works.
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'DEPTH', _gather_many(lotus, count=1), reports)
    lotus.job_queue.manager.submit(built[0])
    assert drive(lotus.job_runner.JobRunner(built, reports)) == {'FINISHED'}
    assert lotus.job_queue.manager.client.pid != pid
    assert "many0_depth" in bpy.data.images
    remove_images("many")


def test_queue_runs_one_job_at_a_time(lotus):
    import bpy
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'BOTH', _gather_many(lotus, count=1), reports)
    for job in built:
        lotus.job_queue.manager.submit(job)
    runner = lotus.job_runner.JobRunner(built, reports)
    running_together = []

    def check(_):
        running_together.append(sum(job.state == lotus.job_queue.RUNNING for job in built))
    assert drive(runner, check) == {'FINISHED'}
    assert max(running_together) == 1
    assert all(job.state == lotus.job_queue.DONE for job in built)
    # One report names the depth and the normal maps (the status bar shows only the last one).
    assert reports.texts('INFO') == ["Lotus: many0_depth, many0_normal"], reports
    remove_images("many")


def test_missing_model_with_online_access_off(lotus):
    import bpy
    prefs = bpy.context.preferences.addons[lotus.name].preferences
    prefs.depth_model = "jingheya/lotus-depth-g-v2-1-disparity"
    assert not bpy.app.online_access
    with pytest.raises(lotus.models.ModelError, match="Allow Online Access"):
        lotus.models.model_request("depth")
    image = new_image("offline_src", gradient())
    # In background mode Blender turns an ERROR report into a RuntimeError with its text.
    with pytest.raises(RuntimeError, match="Allow Online Access"):
        bpy.ops.lotus.predict_image(image=image.name, task='DEPTH')
    assert "offline_src_depth" not in bpy.data.images
    # Image Files... from the file browser: its execute runs the job itself (no nested call
    # whose errors Blender would show as a traceback): the report is the operator's own line.
    photo = lotus.out.parent / "offline_photo.png"
    photo.parent.mkdir(parents=True, exist_ok=True)
    image.filepath_raw, image.file_format = str(photo), 'PNG'
    image.save()
    with pytest.raises(RuntimeError) as raised:
        bpy.ops.lotus.predict_files('EXEC_DEFAULT', task='DEPTH', filepath=str(photo))
    text = str(raised.value)
    assert text.startswith("Error: The model jingheya/lotus-depth-g-v2-1-disparity"), text
    assert "Allow Online Access" in text and "Traceback" not in text
    # The panel's error box says why this run was refused (not an older run's failure).
    assert lotus.job_queue.manager.last_error.startswith("The model jingheya/lotus-depth-g-v2-1-disparity")
    remove_images("offline_src")


def test_a_disk_error_before_the_job_is_one_clean_report(lotus, monkeypatch):
    """The job folders cannot be made (a read-only or full disk): one line, no traceback."""
    import bpy
    image = new_image("diskerr_src", gradient())

    def read_only(*_args):
        raise PermissionError(13, "Permission denied", "/home/artist/.config/lotus/jobs")
    monkeypatch.setattr(lotus.job_queue, "prune_job_folders", read_only)
    with pytest.raises(RuntimeError) as raised:
        bpy.ops.lotus.predict_image(image=image.name, task='DEPTH')
    message = str(raised.value)
    assert "Lotus cannot prepare the job: Permission denied (/home/artist/.config/lotus/jobs)" \
        in message and "Traceback" not in message, message
    remove_images("diskerr_src")


def test_release_and_idle_release(lotus):
    import bpy
    manager = lotus.job_queue.manager
    if manager.client is None:
        reports = Reports()
        built = lotus.operators.build_jobs(bpy.context, 'DEPTH', _gather_many(lotus, count=1),
                                           reports)
        manager.submit(built[0])
        drive(lotus.job_runner.JobRunner(built, reports))
    process = manager.client.process
    assert bpy.app.timers.is_registered(lotus.job_queue._idle_check)
    # Not idle long enough: the timer keeps the worker and asks to run again.
    assert lotus.job_queue._idle_check() == lotus.job_queue.IDLE_CHECK_INTERVAL_S
    assert process.poll() is None
    # Idle past the preference's minutes: the timer releases it and stops itself.
    manager.last_activity -= 11 * 60
    assert lotus.job_queue._idle_check() is None
    assert process.poll() is not None and manager.client is None
    assert bpy.ops.lotus.release_model() == {'FINISHED'}  # nothing to release: still fine
    remove_images("many")


def test_unregister_stops_worker_and_timer(lotus, tiny_checkpoints):
    import addon_utils
    import bpy
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'DEPTH', _gather_many(lotus, count=1), reports)
    lotus.job_queue.manager.submit(built[0])
    drive(lotus.job_runner.JobRunner(built, reports))
    process = lotus.job_queue.manager.client.process
    idle_check = lotus.job_queue._idle_check
    load_handler = lotus.job_queue._cancel_on_file_load
    assert bpy.app.timers.is_registered(idle_check)
    assert load_handler in bpy.app.handlers.load_pre
    addon_utils.disable(lotus.name, default_set=True)
    try:
        assert process.poll() is not None
        assert not bpy.app.timers.is_registered(idle_check)
        assert load_handler not in bpy.app.handlers.load_pre
    finally:
        addon_utils.enable(lotus.name, default_set=True)
    again = live(lotus.name)
    assert again.job_queue.manager.client is None
    assert not bpy.app.timers.is_registered(again.job_queue._idle_check)
    assert hasattr(bpy.types, "LOTUS_OT_predict_files")
    remove_images("many")


def test_worker_errors_reach_the_artist_and_the_next_job_works(lotus, tmp_path):
    import bpy
    prefs = bpy.context.preferences.addons[lotus.name].preferences
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    prefs.depth_model_path = str(not_a_model)
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'DEPTH', _gather_many(lotus, count=1), reports)
    lotus.job_queue.manager.submit(built[0])
    assert drive(lotus.job_runner.JobRunner(built, reports)) == {'CANCELLED'}
    assert built[0].state == lotus.job_queue.FAILED and built[0].message
    assert reports.texts('ERROR') and built[0].message in reports.texts('ERROR')[0]
    assert lotus.job_queue.manager.last_error.endswith(built[0].message)
    # The failure and its traceback are in the worker's log, which Open Log shows.
    with open(lotus.job_queue.manager.worker_log, encoding="utf-8") as log:
        text = log.read()
    assert f"job {built[0].id}" in text and "Traceback" in text

    # A chosen interpreter of Blender's Python version also gets the bundled wheels' folder.
    import sys
    prefs.python_path = sys.executable
    assert lotus.worker_session.worker_settings().extra_paths == (lotus.job_folders.extension_site_packages(),)
    # A worker interpreter that does not exist: a clear error, no hang.
    prefs.python_path = str(tmp_path / "no_python_here")
    assert lotus.worker_session.worker_settings().extra_paths == ()
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'NORMAL', _gather_many(lotus, count=1), reports)
    lotus.job_queue.manager.submit(built[0])
    assert drive(lotus.job_runner.JobRunner(built, reports)) == {'CANCELLED'}
    assert "Cannot start the worker" in built[0].message

    prefs.python_path = worker_python_preference()
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'NORMAL', _gather_many(lotus, count=1), reports)
    lotus.job_queue.manager.submit(built[0])
    assert drive(lotus.job_runner.JobRunner(built, reports)) == {'FINISHED'}
    assert lotus.job_queue.manager.last_error == ""
    remove_images("many")


class _Layout:
    """Records what a panel draws."""

    def __init__(self):
        self.calls = []
        self.alert = False

    def box(self):
        return self

    def row(self):
        return self

    def progress(self, **kw):
        self.calls.append(("progress", kw))

    def label(self, **kw):
        self.calls.append(("label", kw))

    def operator(self, idname, **kw):
        self.calls.append(("operator", idname))


def test_panel_shows_progress_queue_and_cancel(lotus, tmp_path):
    import bpy
    manager = lotus.job_queue.manager
    settings = lotus.worker_session.WorkerSettings(python="python", log_path=str(tmp_path / "log"),
                                         extra_paths=())
    output = lotus.outputs.OutputSettings(folder=str(tmp_path), temporary=False)
    running = lotus.job_queue.Job(task="depth", model={}, inputs=[], job_dir=str(tmp_path),
                             options={}, output=output, worker=settings, label="Depth photo",
                             state=lotus.job_queue.RUNNING, fraction=0.4, stage="image 3/12: predicting", item=3,
                             items=12)
    waiting = lotus.job_queue.Job(task="normal", model={}, inputs=[], job_dir=str(tmp_path),
                             options={}, output=output, worker=settings, label="Normal photo")
    assert manager.current is None and not manager.queue
    manager.current = running
    manager.queue.append(waiting)
    layout = _Layout()
    try:
        lotus.panels.draw_progress(layout, bpy.context)
        assert lotus.job_queue.status_line() == "Depth photo: image 3/12: predicting 40% (+1 queued)"
    finally:
        manager.current = None
        manager.queue.clear()
    # The percentage first, so that a narrow sidebar never cuts it.
    assert ("progress", {"factor": 0.4, "type": 'BAR',
                         "text": "40%  image 3/12: predicting"}) in layout.calls
    assert ("label", {"text": "Depth photo", "icon": 'TIME'}) in layout.calls
    assert ("operator", "lotus.cancel_jobs") in layout.calls
    assert any(kind == "label" and "1 more waiting" in kw["text"] for kind, kw in layout.calls)


class _AnyLayout:
    """Stands in for UILayout and operator properties: records every call, accepts any setting."""

    def __init__(self, log):
        self.__dict__["log"] = log

    def __getattr__(self, name):
        def call(*args, **kw):
            self.log.append((name, args, kw))
            return _AnyLayout(self.log)
        return call

    def __setattr__(self, name, value):
        self.log.append(("set", name, value))


def test_sidebar_panels_draw(lotus):
    import bpy
    for space in ('VIEW_3D', 'IMAGE_EDITOR'):
        log = []
        context = SimpleNamespace(window_manager=bpy.context.window_manager,
                                  scene=bpy.context.scene, space_data=SimpleNamespace(type=space))
        lotus.panels._LotusPanel.draw(SimpleNamespace(layout=_AnyLayout(log)), context)
        operators = [args[0] for name, args, _ in log if name == "operator"]
        assert "lotus.predict_files" in operators and "lotus.predict_image" in operators
        assert "lotus.release_model" in operators and "lotus.open_log" in operators
        labels = [kw.get("text") for name, _, kw in log if name == "operator"]
        assert ("Active Image" in labels) == (space == 'IMAGE_EDITOR')


def test_bundled_model_is_offered_first_and_runs_offline(lotus, tiny_checkpoints, tmp_path):
    """A compact bundle shipped in the extension's models/ folder (build.py --bundle-model) is
    the default model and works with online access off."""
    import shutil
    import sys

    import addon_utils
    import bpy
    models = os.path.join(os.path.dirname(sys.modules[lotus.name].__file__), "models")
    shutil.copytree(tiny_checkpoints[("G", "disparity")],
                    os.path.join(models, "tiny-depth-fp16-bundle"))
    try:
        addon_utils.disable(lotus.name, default_set=True)
        addon_utils.enable(lotus.name, default_set=True)
        prefs = bpy.context.preferences.addons[lotus.name].preferences
        assert prefs.depth_model == "BUNDLED:tiny-depth-fp16-bundle"
        assert prefs.normal_model == "jingheya/lotus-normal-g-v1-1"  # no normal bundle
        configure(lotus.name, tiny_checkpoints, str(tmp_path / "maps"),
                  depth_model="BUNDLED:tiny-depth-fp16-bundle")
        modules = live(lotus.name)
        assert not bpy.app.online_access
        assert modules.models.model_request("depth")["source"] == os.path.join(
            models, "tiny-depth-fp16-bundle")
        image = new_image("bundle_src", gradient())
        assert bpy.ops.lotus.predict_image(image=image.name, task='DEPTH') == {'FINISHED'}
        assert bpy.data.images["bundle_src_depth"]["lotus_kind"] == "disparity"
    finally:
        shutil.rmtree(models)
        addon_utils.disable(lotus.name, default_set=True)
        addon_utils.enable(lotus.name, default_set=True)
        remove_images("bundle_src")


def test_tiled_and_seamless_reach_the_worker_at_full_resolution(lotus, monkeypatch):
    """Texture artists' options: Full Resolution (Tiled) sends the image at its full size and asks
    for tiles; Seamless asks for wrap-around maps. The maps come back at the image's size."""
    import bpy
    sent = []
    original_send = lotus.worker_client.WorkerClient.send

    def spy(self, message):
        if message.get("op") == "predict":  # the input files exist while the job runs
            message = dict(message, shapes=[np.load(p, mmap_mode="r").shape[:2]
                                            for p in message["inputs"]])
        sent.append(message)
        return original_send(self, message)

    monkeypatch.setattr(lotus.worker_client.WorkerClient, "send", spy)
    pixels = np.random.default_rng(3).random((150, 200, 4)).astype(np.float32)
    new_image("texture", pixels)
    try:
        result = bpy.ops.lotus.predict_image(image="texture", task='DEPTH', tiled=True, seamless=True)
        assert result == {'FINISHED'}
        (request,) = [m for m in sent if m.get("op") == "predict"]
        assert request["options"]["tiled"] is True and request["options"]["seamless"] is True
        # Not reduced to twice the processing resolution (64 px here): the worker tiles it.
        assert request["shapes"] == [(150, 200)]
        assert tuple(bpy.data.images["texture_depth"].size) == (200, 150)

        sent.clear()
        assert bpy.ops.lotus.predict_image(image="texture", task='DEPTH') == {'FINISHED'}
        (request,) = [m for m in sent if m.get("op") == "predict"]
        assert not request["options"].get("tiled") and not request["options"].get("seamless")
        # Averaged down (by a whole factor) to at most twice the processing resolution (64 px).
        assert request["shapes"] == [(75, 100)]
    finally:
        remove_images("texture")


def _predict_requests(lotus, monkeypatch) -> list:
    """The predict requests sent to the worker, recorded as they go."""
    sent = []
    original_send = lotus.worker_client.WorkerClient.send

    def spy(self, message):
        if message.get("op") == "predict":
            sent.append(message)
        return original_send(self, message)
    monkeypatch.setattr(lotus.worker_client.WorkerClient, "send", spy)
    return sent


def test_predict_options_start_from_the_scene_and_are_remembered_in_the_blend(
        lotus, monkeypatch, tmp_path, fresh_data):
    """Import Images as Planes' way: the sidebar passes the image only and the operator's invoke
    takes the other options from the scene's last-used values (Blender's own remembered values
    do not override them); what a UI run used becomes the last-used values, saved with the .blend.
    (Background Blender calls no invoke: an operator with the same mixins runs the same two
    steps in its execute; the predict operators' invoke is those two calls and _launch.)"""
    import bpy
    options = lotus.package.blender.predict_options
    used = []

    class LOTUS_OT_test_last_used(options.PredictOptions, options.ClipOptions,
                                  options.MultilayerOptions, bpy.types.Operator):
        bl_idname = "lotus.test_last_used"
        bl_label = "Last-used test"
        bl_options = {'REGISTER', 'UNDO'}

        def execute(self, context):
            options.fill_from_last_used(self, context)
            options.remember(self, context)
            used.append({name: getattr(self, name) for name in options.option_names(self)})
            return {'FINISHED'}

    bpy.utils.register_class(LOTUS_OT_test_last_used)
    settings = bpy.context.scene.lotus_predict
    try:
        settings.task, settings.tiled, settings.render_pass = 'NORMAL', True, "Diffuse"
        assert bpy.ops.lotus.test_last_used() == {'FINISHED'}     # as the sidebar: nothing set
        assert used[-1] == dict(task='NORMAL', tiled=True, seamless=False, frame_start=0,
                                frame_end=0, stabilize=True, render_pass="Diffuse")
        # What the caller sets wins and becomes the last-used value.
        assert bpy.ops.lotus.test_last_used(task='DEPTH', seamless=True,
                                            frame_end=12) == {'FINISHED'}
        assert (used[-1]["task"], used[-1]["seamless"], used[-1]["tiled"]) == ('DEPTH', True, True)
        assert (settings.task, settings.seamless, settings.frame_end) == ('DEPTH', True, 12)
        # The sidebar changes a value: the next run takes it, not Blender's remembered one.
        settings.seamless = False
        assert bpy.ops.lotus.test_last_used() == {'FINISHED'}
        assert used[-1]["seamless"] is False and used[-1]["frame_end"] == 12
        # Per scene, in the .blend: a copy saved now brings them back.
        path = str(tmp_path / "last_used.blend")
        bpy.ops.wm.save_as_mainfile(filepath=path, copy=True)
        scene_name = bpy.context.scene.name
        with bpy.data.libraries.load(path) as (_source, loaded):
            loaded.scenes = [scene_name]
        saved = loaded.scenes[0].lotus_predict
        assert (saved.task, saved.tiled, saved.frame_end, saved.render_pass) == \
            ('DEPTH', True, 12, "Diffuse")
    finally:
        bpy.utils.unregister_class(LOTUS_OT_test_last_used)
        for name in options.option_names(settings):
            settings.property_unset(name)


def test_a_script_run_leaves_the_sidebars_options_alone(lotus, monkeypatch):
    """execute (scripts, farms) runs with its own values: the request says them, the scene's
    last-used values stay the artist's."""
    import bpy
    sent = _predict_requests(lotus, monkeypatch)
    settings = bpy.context.scene.lotus_predict
    new_image("script_src", gradient())
    settings.seamless = True
    try:
        assert bpy.ops.lotus.predict_image(image="script_src", task='NORMAL') == {'FINISHED'}
        (request,) = sent
        assert request["task"] == "normal" and request["options"]["seamless"] is False
        assert settings.seamless is True and settings.task == 'DEPTH'
    finally:
        settings.property_unset("seamless")
        remove_images("script_src")


def test_predict_operators_take_their_options_from_one_mixin_with_presets(lotus):
    """One declaration of each option (predict_options): the same properties, labels and
    defaults on both operators and on the scene's last-used values; presets and the redo panel;
    no option on Image Files that does nothing there (Stabilize and the frame range are for
    sequences and movies, Image Files takes single photos)."""
    import bpy
    options = lotus.package.blender.predict_options
    settings = bpy.context.scene.lotus_predict
    files_rna = bpy.ops.lotus.predict_files.get_rna_type()
    image_rna = bpy.ops.lotus.predict_image.get_rna_type()
    for rna, mixins in ((files_rna, (options.PredictOptions,)),
                        (image_rna, options.OPTION_MIXINS)):
        names = [name for mixin in mixins for name in mixin.__annotations__]
        for name in names:
            ours, scenes = rna.properties[name], settings.bl_rna.properties[name]
            assert (ours.name, ours.description, ours.type) == \
                (scenes.name, scenes.description, scenes.type), name
            assert not ours.is_skip_save, name      # presets save them
    assert "stabilize" not in files_rna.properties and "frame_start" not in files_rna.properties
    for operator in (bpy.types.LOTUS_OT_predict_files, bpy.types.LOTUS_OT_predict_image):
        assert {'REGISTER', 'UNDO', 'PRESET'} <= operator.bl_options
    # What a preset holds, by Blender's own rule (bl_operators/presets.py, AddPresetOperator
    # .preset_values, which needs only the operator's name): the options, never the image or
    # the files, which are chosen each time.
    preset_values = bpy.types.WM_OT_operator_preset_add.preset_values.fget
    for operator, mixins in (("LOTUS_OT_predict_files", (options.PredictOptions,)),
                             ("LOTUS_OT_predict_image", options.OPTION_MIXINS)):
        saved = preset_values(SimpleNamespace(operator=operator))
        assert sorted(saved) == sorted(f"op.{name}" for mixin in mixins
                                       for name in mixin.__annotations__), operator
    # The one object the options become on their way to the jobs.
    fake = type("Fake", (options.PredictOptions, options.ClipOptions), {})()
    fake.tiled, fake.seamless, fake.stabilize = True, False, False
    chosen = options.choices(fake)
    assert (chosen.tiled, chosen.seamless, chosen.stabilize) == (True, False, False)
    request = lotus.worker_session.prediction_options(64, 'CPU', 'FP32', chosen)
    assert request == {"processing_resolution": 64, "device": "cpu", "precision": "fp32",
                       "tiled": True, "seamless": False}


def test_stabilize_summary_names_cut_held_and_flat_frames(lotus):
    from lotus_blender.core import temporal
    summary = lotus.job_runner.stabilize_summary

    def fit(status):
        return temporal.Alignment(1.0, 0.0, status=status)
    assert summary([]) == "" and summary([(1, fit(temporal.START)), (2, fit(temporal.ALIGNED))]) == ""
    line = summary([(1, fit(temporal.START)), (2, fit(temporal.HELD)), (3, fit(temporal.CUT)),
                    (4, fit(temporal.ALIGNED)), (5, fit(temporal.HELD)), (6, fit(temporal.FLAT))])
    assert line == ("hard cut at frame 3 (new alignment); frames 2, 5 held (fits not trusted: "
                    "previous scale kept); frame 6 low-contrast (a fade?), not a reference")
    many = summary([(frame, fit(temporal.HELD)) for frame in range(10, 30)])
    assert many.startswith("frames 10, 11, 12, 13, 14, ... (20 in all) held") and "\n" not in many


def test_a_sequences_cut_and_held_frames_are_one_report_line(lotus, monkeypatch, tmp_path):
    """What Stabilize Depth did to a sequence, in one line of the run's reports (the command
    line says it on each frame's line). The tiny model's maps are noise: the stabilizer's
    verdicts for two frames are set here, the rest is the real run."""
    import bpy
    from lotus_blender.core import temporal
    from tests.test_cli import write_frames
    stabilizer = lotus.outputs.results.temporal.TemporalStabilizer
    real_align = stabilizer.align

    def align(self, frame, raw, photo=None):
        values, fit = real_align(self, frame, raw, photo)
        fit.status = {3: temporal.CUT, 4: temporal.HELD}.get(frame, fit.status)
        return values, fit
    monkeypatch.setattr(stabilizer, "align", align)
    plates = write_frames(tmp_path / "plates", "cutshot", range(1, 5))
    image = bpy.data.images.load(str(plates / "cutshot_0001.png"))
    image.source = 'SEQUENCE'
    reports = Reports()
    gather = lambda context, job_dir, resolution: (   # noqa: E731
        lotus.inputs.prepare_frames(image, 1, 4, job_dir, resolution), [])
    try:
        built = lotus.operators.build_jobs(bpy.context, 'BOTH', gather, reports)
        for job in built:
            lotus.job_queue.manager.submit(job)
        assert drive(lotus.job_runner.JobRunner(built, reports)) == {'FINISHED'}
        stabilized = [text for text in reports.texts('INFO') if "Stabilize Depth" in text]
        assert stabilized == ["Lotus depth, Stabilize Depth: hard cut at frame 3 (new "
                              "alignment); frame 4 held (fit not trusted: previous scale kept)"]
        # Stabilize off: nothing to say.
        reports.clear()
        built = lotus.operators.build_jobs(
            bpy.context, 'DEPTH', gather, reports,
            lotus.worker_session.PredictionChoices(stabilize=False))
        for job in built:
            lotus.job_queue.manager.submit(job)
        assert drive(lotus.job_runner.JobRunner(built, reports)) == {'FINISHED'}
        assert not [text for text in reports.texts() if "Stabilize" in text]
    finally:
        bpy.data.images.remove(image)
        remove_images("cutshot")
