"""Opening another .blend (or File > New) starts the panel clean: the previous file's error (a
killed worker's above all) and its cancelled run are gone, while a warm worker stays warm; the
load handlers are there once, however often the add-on is disabled and enabled.
Runs in a fresh Blender (the bpy module): this session's file is never replaced."""

import pytest

from tests import blender_child

_SCRIPT = r'''
import addon_utils, os, signal, time
from tests.blender_side import Reports, drive, gradient, new_image
HANDLERS = ("_cancel_on_file_load", "_forget_previous_file")


def mod(short):
    return sys.modules[name + ".blender." + short]


def start(count):
    """A run of ``count`` images, queued; its jobs and the runner the modal operator would drive."""
    image = new_image("many_src", gradient(96, 72))

    def gather(context, job_dir, resolution):
        return [mod("inputs").prepare_image(image, job_dir, resolution, i, name=f"many{i}")
                for i in range(count)], []
    reports = Reports()
    built = mod("operators").build_jobs(bpy.context, 'DEPTH', gather, reports)
    for job in built:
        mod("job_queue").manager.submit(job)
    return built, mod("job_runner").JobRunner(built, reports)


def running(count=6):
    built, runner = start(count)
    while built[0].state == mod("job_queue").QUEUED:
        runner.handle('TIMER')
    return built, runner


def state():
    manager = mod("job_queue").manager
    client = manager.client
    return {"error": manager.last_error, "current": manager.current is not None,
            "folders": len(manager.folders_in_use),
            "pid": client.pid if client is not None and client.is_alive() else None,
            "handlers": handler_counts()}


def handler_counts():
    """How many times each of the add-on's load handlers is registered."""
    return [sum(f.__name__ == handler for f in getattr(bpy.app.handlers, kind))
            for kind, handler in zip(("load_pre", "load_post"), HANDLERS)]


result = {}
queue_module = mod("job_queue")
# 1. The worker is killed mid-run: its crash is the panel's error; File > New forgets it.
built, runner = running()
os.kill(mod("job_queue").manager.client.pid, signal.SIGKILL)
drive(runner)
result["crashed"] = state()
bpy.ops.wm.read_homefile(use_empty=True)
result["new_file"] = state()
result["same_modules"] = mod("job_queue") is queue_module

# 2. A warm worker and an error it reported (a folder that is no model): opening a saved file
# forgets the error, not the worker.
drive(start(1)[1])
prefs = bpy.context.preferences.addons[name].preferences
good_model = prefs.depth_model_path
prefs.depth_model_path = str(work)
built, runner = start(1)
drive(runner)
prefs.depth_model_path = good_model
result["failed"] = state()
bpy.ops.wm.save_as_mainfile(filepath=str(work / "shot.blend"))
bpy.ops.wm.open_mainfile(filepath=str(work / "shot.blend"))
result["opened"] = state()

# 3. File > New while a run is predicting: load_pre cancels it; its operator is gone, so a timer
# reads the worker's events until the cancel is confirmed; the worker stays warm.
pid = mod("job_queue").manager.client.pid
built, runner = running(12)   # long enough to be cancelled before it ends
bpy.ops.wm.read_homefile(use_empty=True)
result["cancelling"] = state()
timer = mod("job_queue")._finish_cancelled
result["timer"] = bpy.app.timers.is_registered(timer)
while timer() is not None:  # what bpy.app.timers runs (the bpy module has no event loop)
    time.sleep(0.02)
result["cancelled"] = dict(state(), states=[job.state for job in built], pid_before=pid)
bpy.app.timers.is_registered(timer) and bpy.app.timers.unregister(timer)

# 4. Disabled: no handler left; enabled again: each handler once, also after another load.
addon_utils.disable(name, default_set=True)
result["disabled"] = handler_counts()
addon_utils.enable(name, default_set=True)
result["enabled"] = state()["handlers"]
bpy.ops.wm.read_homefile(use_empty=True)
result["enabled_new_file"] = state()["handlers"]
report(result)
'''


@pytest.mark.blender
def test_opening_a_file_forgets_the_previous_files_error_and_run(tiny_checkpoints, tmp_path):
    result = blender_child.run(_SCRIPT, tmp_path,
                               blender_child.checkpoint_args(tiny_checkpoints))
    crashed, new_file = result["crashed"], result["new_file"]
    assert "stopped unexpectedly" in crashed["error"] and crashed["pid"] is None
    # The add-on was not reloaded by the load: its own handler cleared the error.
    assert result["same_modules"]
    assert new_file["error"] == "" and not new_file["current"] and new_file["folders"] == 0
    assert new_file["handlers"] == [1, 1]

    failed, opened = result["failed"], result["opened"]
    assert failed["error"] and failed["pid"] is not None
    assert opened["error"] == "" and opened["pid"] == failed["pid"]

    cancelling, cancelled = result["cancelling"], result["cancelled"]
    assert cancelling["current"] and result["timer"]
    assert not cancelled["current"] and cancelled["states"] == ["CANCELLED"]
    assert cancelled["pid"] == cancelled["pid_before"] and cancelled["error"] == ""
    assert cancelled["folders"] == 0

    assert result["disabled"] == [0, 0]
    assert result["enabled"] == [1, 1] and result["enabled_new_file"] == [1, 1]
