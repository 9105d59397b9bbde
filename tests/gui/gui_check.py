"""GUI check: runs inside a real Blender window (see tests/gui/run_gui_check.sh).

    blender scene.blend --python tests/gui/gui_check.py -- --out DIR --checkpoints DIR
        --worker-python PYTHON

Installs the extension from this checkout, opens the 3D View sidebar on the Lotus tab at its
default width, and drives the panel from ``bpy.app.timers`` in Blender's own event loop: renders a
photo, predicts Depth & Normals with tiny checkpoints while taking screenshots of the progress,
cancels a run with a real ESC key press (xdotool), shows a failed job's error and its clearing,
and builds the 2.5D scene, the normal-mapped material and the relight setup. Screenshots
(`import -window root`) and ``report.json`` (what the panel showed at each step) go to --out.
Blender quits at the end; the exit code says whether every step passed. With --options-only,
after the photo it checks the operators' options instead (options_checks): invoke from the
scene's last-used values, the redo panel, operator presets, Image Files through the file browser.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import bpy

REPO_ROOT = Path(__file__).resolve().parents[2]
STEP_TIMEOUT_S = 600.0  # a loaded 2-core machine (CI-sized) needs minutes per run


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoints", required=True,
                        help="folder with tiny-depth/ and tiny-normal/ (tests/tiny_lotus.py)")
    parser.add_argument("--worker-python", required=True,
                        help="a Python with torch and diffusers for the worker")
    parser.add_argument("--readme", help="also write the README's screenshots into this folder")
    parser.add_argument("--exact-maps", action="store_true",
                        help="build from the photo scene's exact depth and normals (ray cast) "
                             "instead of the tiny model's noise: builder results that look like "
                             "something (the README's screenshots)")
    parser.add_argument("--keep-open", action="store_true", help="do not quit at the end")
    parser.add_argument("--sequence-fill-only", action="store_true",
                        help="after the photo, only Build 2.5D Scene on an image sequence with Fill "
                             "Behind (sequence_fill_checks): progress, ESC, one undo step, the redo panel")
    parser.add_argument("--options-only", action="store_true",
                        help="after the photo, only the operator-options steps (options_checks: "
                             "Image Files through the file browser, invoke from the last-used "
                             "values, the redo panel, presets), at a small processing size")
    return parser.parse_args(argv)


ARGS = parse_args()
OUT = Path(ARGS.out)
OUT.mkdir(parents=True, exist_ok=True)
REPORT = {"blender": bpy.app.version_string, "python": sys.version.split()[0], "steps": [],
          "failures": []}


def log(message):
    print(f"[gui-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- extension and scene ----------------------------------------------------------------------

def install_extension():
    sys.path.insert(0, str(REPO_ROOT))
    from tests import blender_env
    repo_dir = Path(tempfile.mkdtemp(prefix="lotus-gui-repo-"))
    name = blender_env.install_extension(repo_dir)
    prefs = bpy.context.preferences.addons[name].preferences
    checkpoints = Path(ARGS.checkpoints)
    prefs.depth_model = 'LOCAL'
    prefs.depth_model_path = str(checkpoints / "tiny-depth")
    prefs.depth_model_kind = 'DISPARITY'
    prefs.normal_model = 'LOCAL'
    prefs.normal_model_path = str(checkpoints / "tiny-normal")
    prefs.python_path = ARGS.worker_python
    # Large enough that a run lasts a few seconds on a CPU, so its progress can be seen.
    prefs.processing_resolution = 384
    prefs.device = 'CPU'
    prefs.precision = 'FP32'
    prefs.output_dir = "//lotus/"
    # The worker must write the empty-prompt embedding into the add-on's cache, never into the
    # user's model folders: start without one (an older add-on may have left it there).
    for folder in ("tiny-depth", "tiny-normal"):
        (checkpoints / folder / "lotus_empty_prompt.safetensors").unlink(missing_ok=True)
    REPORT["model_folders_before"] = model_folder_files()
    return name


def model_folder_files():
    checkpoints = Path(ARGS.checkpoints)
    return {folder: sorted(str(p.relative_to(checkpoints / folder))
                           for p in (checkpoints / folder).rglob("*"))
            for folder in ("tiny-depth", "tiny-normal")}


def window_parts():
    """The window, the 3D View area and its sidebar (UI) and main regions."""
    window = bpy.context.window_manager.windows[0]
    area = max((a for a in window.screen.areas if a.type == 'VIEW_3D'),
               key=lambda a: a.width * a.height)
    regions = {region.type: region for region in area.regions}
    return window, area, regions["UI"], regions["WINDOW"]


def override():
    window, area, _sidebar, main = window_parts()
    return bpy.context.temp_override(window=window, area=area, region=main,
                                     screen=window.screen)


def redraw_all():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            area.tag_redraw()


def make_photo_scene():
    """A small rendered 'photo' (Cycles): objects at several depths, a compositor Viewer."""
    scene = bpy.context.scene
    for obj in list(scene.objects):
        if obj.type == 'MESH':
            bpy.data.objects.remove(obj)
    with override():
        bpy.ops.mesh.primitive_plane_add(size=12, location=(0, 0, -1))
        bpy.ops.mesh.primitive_monkey_add(location=(0, 0, 0), rotation=(0, 0, 0.6))
        bpy.ops.object.shade_smooth()
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.7, location=(-2.2, 1.5, -0.3))
        bpy.ops.mesh.primitive_cube_add(size=1.2, location=(2.0, 2.5, -0.4))
    for index, obj in enumerate(o for o in scene.objects if o.type == 'MESH'):
        material = bpy.data.materials.new(f"gui_mat_{index}")
        material.diffuse_color = ((0.8, 0.3, 0.2, 1), (0.9, 0.8, 0.3, 1), (0.2, 0.5, 0.9, 1),
                                  (0.3, 0.8, 0.4, 1))[index % 4]
        material.use_nodes = True
        material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = \
            material.diffuse_color
        obj.data.materials.append(material)
    camera = scene.camera
    camera.location = (0.0, -6.5, 3.2)
    camera.rotation_euler = (1.13, 0.0, 0.0)
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = 8
    scene.cycles.preview_samples = 16
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = 480, 320
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = 'Standard'
    # A compositor Viewer so that the Viewer Node image gets pixels from the render: the scene's
    # node tree up to 4.x, a compositor node group from 5.0.
    if hasattr(scene, "compositing_node_group"):
        tree = bpy.data.node_groups.new("gui_compositor", "CompositorNodeTree")
        scene.compositing_node_group = tree
        layers = tree.nodes.new("CompositorNodeRLayers")
        tree.interface.new_socket("Image", in_out='OUTPUT', socket_type='NodeSocketColor')
        tree.links.new(layers.outputs["Image"], tree.nodes.new("NodeGroupOutput").inputs[0])
    else:
        scene.use_nodes = True
        tree = scene.node_tree
        layers = tree.nodes["Render Layers"]
    viewer = tree.nodes.new("CompositorNodeViewer")
    tree.links.new(layers.outputs["Image"], viewer.inputs["Image"])


def image_state(name):
    image = bpy.data.images.get(name)
    if image is None:
        return None
    return {"has_data": bool(image.has_data), "size": list(image.size), "type": image.type}


# -- screenshots and checks -------------------------------------------------------------------

def area_box():
    """The 3D View area's rectangle in screen pixels, top-left origin."""
    window, area, _sidebar, _main = window_parts()
    return {"x": area.x, "y": window.height - (area.y + area.height), "width": area.width,
            "height": area.height}


def sidebar_box():
    """The sidebar's rectangle in screen pixels, top-left origin (for cropping)."""
    window, _area, sidebar, _main = window_parts()
    top = window.height - (sidebar.y + sidebar.height)
    return {"x": sidebar.x, "y": top, "width": sidebar.width, "height": sidebar.height}


def screenshot(name, note=""):
    """The whole X screen, and the sidebar cropped from it."""
    path = OUT / f"{name}.png"
    state = panel_state()  # before the capture: a job may end while it runs
    subprocess.run(["import", "-window", "root", str(path)], check=True)
    box = sidebar_box()
    crop = OUT / f"{name}_sidebar.png"
    subprocess.run(["convert", str(path), "-crop",
                    f"{box['width']}x{box['height']}+{box['x']}+{box['y']}", "+repage",
                    str(crop)], check=True)
    REPORT["steps"].append({"screenshot": path.name, "note": note, "panel": state,
                            "sidebar": box, "area": area_box()})
    log(f"screenshot {path.name}: {note}")


def panel_state():
    """What the panel shows now, from the add-on's live state."""
    job_queue = addon_module("job_queue")
    panels = addon_module("panels")
    manager = job_queue.manager
    job = manager.current
    state = {"last_error": manager.last_error, "queued": len(manager.queue),
             "render_result_button": panels.has_pixels(bpy.data.images.get("Render Result")),
             "viewer_button": panels.has_pixels(bpy.data.images.get("Viewer Node"))}
    if job is not None:
        state.update(job=job.label, stage=job.stage, fraction=job.fraction,
                     status=job.status_text())
        for name in ("run_fraction", "cancelling"):
            if hasattr(job, name):
                state[name] = getattr(job, name)
    return state


def check(condition, message):
    if not condition:
        REPORT["failures"].append(message)
        log(f"FAILED: {message}")


def recent_reports():
    """The reports Blender keeps (status bar, Info editor), as text: copied from an Info editor
    (the timeline area, switched for the moment) through the clipboard."""
    window = bpy.context.window_manager.windows[0]
    area = min(window.screen.areas, key=lambda a: a.height)  # the timeline at the bottom
    old_type = area.ui_type
    area.ui_type = 'INFO'
    try:
        region = next(r for r in area.regions if r.type == 'WINDOW')
        with bpy.context.temp_override(window=window, area=area, region=region):
            bpy.ops.info.select_all(action='SELECT')
            bpy.ops.info.report_copy()
        return bpy.context.window_manager.clipboard
    except Exception as ex:  # noqa: BLE001 - the check that reads it fails instead
        log(f"cannot read the reports: {ex}")
        return ""
    finally:
        area.ui_type = old_type


def addon_module(name):
    import importlib
    return importlib.import_module(f"{ADDON}.blender.{name}")


def settle(seconds=1.5):
    """For the step generator: let Blender redraw. Panels slide to their new places when their
    content changes, one step per redraw: keep redrawing until they are there."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        redraw_all()
        yield 0.05


def close_report_popup(main, window):
    """For the step generator: close the "Report: Error" popup Blender opens at the mouse when an
    operator ends with an error (moving the mouse away does not close it under Xvfb): ESC over
    the 3D View, with nothing running. Otherwise it covers the next screenshots."""
    x, y = main.x + main.width // 2, window.height - (main.y + main.height // 2)
    subprocess.run(["xdotool", "mousemove", str(x), str(y)], check=True)
    subprocess.run(["xdotool", "key", "Escape"], check=True)
    yield from settle(0.5)


def wait_until(predicate, timeout=STEP_TIMEOUT_S):
    """For the step generator: poll predicate between Blender events."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError("timed out waiting")
        yield 0.1


# -- the steps --------------------------------------------------------------------------------

def steps():
    window, area, sidebar, main = window_parts()
    space = area.spaces.active
    space.show_region_ui = True
    yield 0.5
    window, area, sidebar, main = window_parts()
    sidebar.active_panel_category = "Lotus"
    settings = bpy.context.scene.lotus_predict
    redraw_all()
    yield 1.0
    REPORT["sidebar_width"] = sidebar.width
    REPORT["ui_scale"] = bpy.context.preferences.system.ui_scale
    screenshot("01_panel_default", "the Lotus tab at the sidebar's default width, nothing run yet")
    REPORT["viewer_image_at_start"] = image_state("Viewer Node")
    state = panel_state()
    check(not state["render_result_button"] and not state["viewer_button"],
          f"source buttons before any render: {state}")

    # A photo: render the scene (fills Render Result and the compositor Viewer).
    make_photo_scene()
    REPORT["render_result_before"] = image_state("Render Result")
    REPORT["viewer_before"] = image_state("Viewer Node")
    with override():
        bpy.ops.render.render()
    yield 0.5
    REPORT["render_result_after"] = image_state("Render Result")
    REPORT["viewer_after"] = image_state("Viewer Node")
    photos = OUT / "photos"
    photos.mkdir(exist_ok=True)
    photo_path = photos / "studio.png"
    bpy.data.images["Render Result"].save_render(str(photo_path))
    # A few more files so that the run has several images to report progress on.
    extra = []
    for index in range(1, 4):
        copy = photos / f"studio_{index}.png"
        shutil.copy(photo_path, copy)
        extra.append(copy.name)
    yield from settle()
    screenshot("02_panel_after_render", "Render Result and Compositor Viewer have pixels now")
    state = panel_state()
    check(state["render_result_button"] and state["viewer_button"],
          f"source buttons after the render: {state}")
    if ARGS.options_only:
        yield from options_checks(photos)
        return
    if ARGS.sequence_fill_only:
        yield from sequence_fill_checks()
        return

    # Depth & Normals on four files: watch one progress bar for the whole run.
    settings.task = 'BOTH'
    with override():
        bpy.ops.lotus.predict_files('INVOKE_DEFAULT', task='BOTH', directory=str(photos),
                                    files=[{"name": n} for n in ["studio.png"] + extra])
    job_queue = addon_module("job_queue")
    samples, shots = [], set()
    started = time.monotonic()
    while job_queue.manager.busy:
        job = job_queue.manager.current
        if job is not None:
            samples.append(panel_state())
            if job.progress > 0:  # past loading the model: an image is on its way
                key = f"{job.task}"
                if key not in shots:
                    shots.add(key)
                    yield 0.2
                    screenshot(f"03_running_{job.task}", f"Depth & Normals run, {job.task} part")
        if time.monotonic() - started > STEP_TIMEOUT_S:
            raise TimeoutError("Depth & Normals run did not end")
        yield 0.1
    REPORT["progress_samples"] = samples
    check(shots == {"depth", "normal"}, f"progress seen only for {sorted(shots)}")
    fractions = [s.get("run_fraction", s["fraction"]) for s in samples]
    check(all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:])),
          f"run progress not monotonic: {fractions}")
    yield from settle()
    screenshot("04_done", "the Depth & Normals run finished")
    check("studio_depth" in bpy.data.images and "studio_normal" in bpy.data.images,
          "no studio_depth / studio_normal images")
    both = [line for line in recent_reports().splitlines() if "Lotus: " in line]
    REPORT["both_report"] = both[-1:] 
    check(both and "studio_depth" in both[-1] and "studio_normal" in both[-1],
          f"the Both report does not name depth and normal maps: {both[-1:]}")

    # Cancel with a real ESC key press while a run is going.
    with override():
        bpy.ops.lotus.predict_files('INVOKE_DEFAULT', task='BOTH', directory=str(photos),
                                    files=[{"name": n} for n in ["studio.png"] + extra])
    yield from wait_until(lambda: job_queue.manager.current is not None
                          and job_queue.manager.current.progress > 0)
    x, y = main.x + main.width // 2, window.height - (main.y + main.height // 2)
    subprocess.run(["xdotool", "mousemove", str(x), str(y)], check=True)
    subprocess.run(["xdotool", "key", "Escape"], check=True)
    yield from wait_until(lambda: job_queue.manager.current is None
                          or job_queue.manager.current.cancel_sent_at, timeout=10)
    yield 0.05
    screenshot("05_cancelling", "right after ESC")
    yield from wait_until(lambda: not job_queue.manager.busy)
    yield from settle()
    screenshot("06_cancelled", "the cancelled run ended")

    # A failing job (a model folder without weights): the error in the panel, then cleared.
    prefs = bpy.context.preferences.addons[ADDON].preferences
    broken = Path(tempfile.mkdtemp(prefix="lotus-broken-model-"))
    (broken / "lotus.json").write_text('{"kind": "disparity"}')
    good_depth = prefs.depth_model_path
    prefs.depth_model_path = str(broken)
    settings.task = 'DEPTH'
    with override():
        bpy.ops.lotus.predict_files('INVOKE_DEFAULT', task='DEPTH', directory=str(photos),
                                    files=[{"name": "studio.png"}])
    yield from wait_until(lambda: not job_queue.manager.busy)
    # Move the mouse well away: that closes the report Blender shows for the failed run.
    subprocess.run(["xdotool", "mousemove", "200", "900"], check=True)
    yield 0.3
    subprocess.run(["xdotool", "mousemove", "300", "950"], check=True)
    yield from settle()
    check(bool(job_queue.manager.last_error), "the broken model did not leave an error")
    screenshot("07_error", "a failed job's error, wrapped to the sidebar")
    yield from close_report_popup(main, window)
    prefs.depth_model_path = good_depth
    with override():
        bpy.ops.lotus.predict_files('INVOKE_DEFAULT', task='DEPTH', directory=str(photos),
                                    files=[{"name": "studio.png"}])
    yield from wait_until(lambda: job_queue.manager.current is not None)
    check(not job_queue.manager.last_error, "the last error stayed while the next job runs")
    yield from settle(1.0)
    screenshot("08_error_cleared", "the next job runs: the old error is gone")
    yield from wait_until(lambda: not job_queue.manager.busy)


    # The three builders, from the photo and its maps.
    photo = bpy.data.images.get("studio") or bpy.data.images.load(str(photo_path),
                                                                   check_existing=True)
    REPORT["photo"] = photo.name
    if ARGS.exact_maps:
        write_exact_maps(bpy.data.images["studio_depth"], bpy.data.images["studio_normal"])
    scene = bpy.context.scene
    for name in ("lotus_scene25d", "lotus_materials", "lotus_relight"):
        getattr(scene, name).photo = photo
    # The last run's box has just gone: panels slide up one step per redraw, slowly on a busy
    # machine.
    yield from settle(5.0)
    screenshot("09_builders", "the three builders with a photo chosen")
    yield from build("lotus.build_photo_scene", "10_scene25d", 'MATERIAL', camera_view=True,
                     wait=10.0)
    # Material Preview compiles its shaders on the CPU here (llvmpipe): give it time.
    yield from build("lotus.normal_material", "11_material", 'MATERIAL', camera_view=False,
                     wait=15.0)
    # Relight reuses the 2.5D scene's mesh and camera: keep them in view.
    yield from build("lotus.relight_setup", "12_relight", 'RENDERED', camera_view=True,
                     wait=45.0, keep=REPORT["10_scene25d"]["new_objects"])
    # Kill the worker mid-run: one error, "(Open Log)" once.
    import signal
    with override():
        bpy.ops.lotus.predict_files('INVOKE_DEFAULT', task='DEPTH', directory=str(photos),
                                    files=[{"name": n} for n in ["studio.png"] + extra])
    yield from wait_until(lambda: job_queue.manager.current is not None
                          and job_queue.manager.current.progress > 0)
    os.kill(job_queue.manager.client.pid, signal.SIGKILL)
    yield from wait_until(lambda: not job_queue.manager.busy)
    yield from settle()
    killed = [line for line in recent_reports().splitlines() if "stopped unexpectedly" in line]
    REPORT["kill_report"] = killed[-1:]
    check(killed and killed[-1].count("Open Log") == 1, f"kill report: {killed[-1:]}")
    screenshot("08b_killed", "the worker killed mid-run: one error line, (Open Log) once")
    yield from close_report_popup(main, window)

    # Image Files... through the real file browser, with a model that cannot be had (the default
    # Hugging Face model, online access off): one clean report, no traceback.
    yield from image_files_error(photos)

    # Preview Relight renders into Render Result: not the artist's render, no button for it.
    area.spaces.active.shading.type = 'SOLID'
    with override():
        bpy.ops.lotus.preview_relight(max_size=64, quality='FAST')
    yield from settle()
    state = panel_state()
    REPORT["after_preview_relight"] = state
    check(not state["render_result_button"], "Render Result offered after Preview Relight")
    screenshot("13_after_preview_relight", "Preview Relight done: no Render Result button")
    options_panels()
    yield from preferences_window()
    REPORT["model_folders_after"] = model_folder_files()
    check(REPORT["model_folders_after"] == REPORT["model_folders_before"],
          "the worker wrote into the user's model folders")
    cache = Path(addon_module("job_folders").models_folder()) / "prompt_embeddings"
    REPORT["prompt_cache"] = sorted(p.name for p in cache.glob("*")) if cache.is_dir() else []
    check(len(REPORT["prompt_cache"]) == 2, f"prompt cache: {REPORT['prompt_cache']}")
    yield from save_moves_results(photos)


# -- operator options: the file browser, invoke, the redo panel, presets ------------------------

def invoke_from_ui(idname, **properties):
    """Invoke idname in the 3D View's window as its panel button does: INVOKE_DEFAULT with the
    properties the button sets, and undo=True, without which a Python call neither pushes undo
    nor registers the operator (no redo panel, no remembered values; WM_operator_call_py).
    (A key bound to it and pressed with xdotool did not reach Blender here: no window manager.)"""
    category, name = idname.split(".")
    with override():
        result = getattr(getattr(bpy.ops, category), name)('INVOKE_DEFAULT', True, **properties)
    REPORT.setdefault("invoked", []).append([idname, sorted(result)])
    yield from settle(1.0)


def redo_last():
    """What the redo panel does when one of its values changes (ED_undo_operator_repeat): undo
    the last operator and run it again with its new values. undo=True: a Python call of it
    otherwise skips the new undo step, and the next redo would undo one step too many."""
    return bpy.ops.ed.undo_redo('EXEC_DEFAULT', True)


def last_operator():
    operators = bpy.context.window_manager.operators
    return operators[-1] if len(operators) else None


def live_input(obj, name):
    """A 2.5D mesh's geometry-nodes input value (what the build used)."""
    compat, geonodes = addon_module("compat"), addon_module("builders.geonodes")
    modifier = obj.modifiers[addon_module("builders.scene25d").MODIFIER_NAME]
    return compat.get_modifier_input(modifier, geonodes.input_identifier(modifier.node_group, name))


def scene25d_objects():
    return sorted(o.name for o in bpy.data.objects
                  if addon_module("builders.scene25d").MODIFIER_NAME in o.modifiers)


def hud_box():
    """The redo panel's region (bottom left of the 3D View), top-left origin, or None."""
    window, area, _sidebar, _main = window_parts()
    hud = next((r for r in area.regions if r.type == 'HUD' and r.width > 1), None)
    if hud is None:
        return None
    return {"x": hud.x, "y": window.height - (hud.y + hud.height), "width": hud.width,
            "height": hud.height}


def hud_screenshot(name, note):
    """The screen and the redo panel cropped, opened first (it starts collapsed: one click on
    its header, as the artist does; it stays open for the next operators)."""
    yield from settle(1.0)
    box = hud_box()
    if box is not None and box["height"] < 40:
        x, y = box["x"] + box["width"] // 2, box["y"] + box["height"] // 2
        subprocess.run(["xdotool", "mousemove", str(x), str(y), "click", "1"], check=True)
        yield from settle(1.5)
        subprocess.run(["xdotool", "mousemove", "900", "500"], check=True)
        yield from settle(1.0)
    screenshot(name, note)
    box = hud_box()
    REPORT["steps"][-1]["hud"] = box
    if box is not None:
        pad = 6
        convert(OUT / f"{name}.png", "-crop",
                f"{box['width'] + 2 * pad}x{box['height'] + 2 * pad}+{box['x'] - pad}+{box['y'] - pad}",
                "+repage", OUT / f"{name}_hud.png")


def sequence_fill_checks(frames=8, width=512, height=384):
    """Build 2.5D Scene from its button on an image sequence with Fill Behind: the frames are
    filled in a modal run (the window keeps drawing: the gaps between this generator's ticks
    stay far below one frame's fill), ESC (a real key press) stops it with nothing built and no
    file left, a run to its end builds in one undo step, and the redo panel reuses its frames."""
    import numpy as np
    outputs = addon_module("outputs")
    scene25d = addon_module("builders.scene25d")
    scene25d_behind = addon_module("builders.scene25d_behind")
    scene25d_ui = addon_module("builders.scene25d_ui")
    folder = OUT / "shot"
    folder.mkdir(exist_ok=True)
    for index in range(frames):
        frame = 1001 + index
        values = np.full((height, width), 0.2, np.float32)
        values[height // 4:3 * height // 4, width // 8 + 20 * index:width // 2 + 20 * index] = 0.6
        outputs.write_map_files(values, "disparity", width, height, {"exr": str(folder / f"shot_depth_{frame}.exr")})
        image = bpy.data.images.new("frame", width, height)
        rgba = np.ones((height, width, 4), np.float32)
        rgba[..., 0] = values
        image.pixels.foreach_set(rgba[::-1].ravel())
        image.filepath_raw = str(folder / f"shot_{frame}.png")
        image.file_format = 'PNG'
        image.save()
        bpy.data.images.remove(image)
    photo = bpy.data.images.load(str(folder / "shot_1001.png"))
    photo.source = 'SEQUENCE'
    depth = bpy.data.images.load(str(folder / "shot_depth_1001.exr"))
    depth.name, depth.source = "shot_depth", 'SEQUENCE'
    depth.colorspace_settings.is_data = True
    depth["lotus_kind"], depth["lotus_source"], depth["lotus_frames"] = "disparity", photo.name, [1001, 1000 + frames]
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, frames
    scene.frame_set(1)
    started = time.monotonic()
    scene25d_behind.behind_arrays(values, rgba, "disparity", 2.0, 6.0, 35.0, 36.0, 0.05, 0.1)    # the last frame's
    one_frame_s = time.monotonic() - started
    files_before = sorted(os.listdir(folder))
    window, _area, _sidebar, main = window_parts()
    options = dict(photo=photo.name, depth="shot_depth", normal="", focal_source='MANUAL', focal_35mm=35.0, near=2.0,
                   auto_depth_range=False, depth_range=6.0, tear_threshold=0.05, fill_behind=True)
    result = {"one_frame_fill_s": round(one_frame_s, 3), "frames": frames, "size": [width, height]}
    REPORT["sequence_fill"] = result

    def idle_gaps(seconds=3.0):
        """The longest gap between this generator's ticks with nothing running (the machine's load)."""
        gaps, last, started = [], time.monotonic(), time.monotonic()
        while time.monotonic() - started < seconds:
            yield TICK_S
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        return max(gaps)

    def timed_steps(fill, seconds):
        """The main thread's time in each of the modal run's ticks (fill.step), into seconds."""
        step = fill.step

        def timed(*args, **kwargs):
            started = time.monotonic()
            try:
                return step(*args, **kwargs)
            finally:
                seconds.append(time.monotonic() - started)
                tick_times.append(started)
        fill.step = timed
        compute = fill.compute

        def timed_compute(*args):
            started = time.monotonic()
            try:
                return compute(*args)
            finally:
                computes_s.append(time.monotonic() - started)
        fill.compute = timed_compute

    def run_ticks(until):
        """Tick until until(done): the longest gap between ticks and the frames seen done."""
        seen, gaps, last = [], [], time.monotonic()
        while FILL.fill is not None and not until(FILL.fill.done):
            if not seen or seen[-1] != FILL.fill.done:
                seen.append(FILL.fill.done)
            yield TICK_S
            now = time.monotonic()
            if FILL.fill is None:       # ended: that tick built the scene (one step, by design)
                break
            gaps.append(now - last)
            last = now
            if len(gaps) > 20000:
                raise TimeoutError("the fill did not end")
        return seen, max(gaps, default=0.0)

    FILL = scene25d_ui.FILL_RUN
    TICK_S = 0.02
    result["idle_max_gap_s"] = round((yield from idle_gaps()), 3)
    steps_s, tick_times, computes_s = [], [], []
    with override():
        started_as = bpy.ops.lotus.build_photo_scene('INVOKE_DEFAULT', True, **options)
    if FILL.fill is not None:
        timed_steps(FILL.fill, steps_s)
    result["invoke"] = sorted(started_as)
    check(started_as == {'RUNNING_MODAL'} and FILL.fill is not None, f"the build did not run modal: {started_as}")
    seen, gap = yield from run_ticks(lambda done: done >= 2)
    yield from settle(0.5)
    screenshot("30_sequence_filling", "Build 2.5D Scene on a sequence: the frames being filled")
    result["status_text_progress"] = FILL.text() if FILL.fill is not None else None
    x, y = main.x + main.width // 2, window.height - (main.y + main.height // 2)
    subprocess.run(["xdotool", "mousemove", str(x), str(y)], check=True)
    subprocess.run(["xdotool", "key", "Escape"], check=True)
    yield from wait_until(lambda: FILL.fill is None, timeout=30)
    yield from settle(1.5)
    screenshot("31_sequence_cancelled", "ESC while filling: nothing built")
    cancelled = [line for line in recent_reports().splitlines() if "cancelled after" in line]
    result["cancel_report"] = cancelled[-1:]
    check(bool(cancelled), "ESC while filling: no 'cancelled after' report")
    result["cancel"] = {"seen": seen, "max_gap_s": round(gap, 3), "files_left": sorted(set(os.listdir(folder))
                                                                                      - set(files_before)),
                        "objects": [o.name for o in bpy.data.objects if o.name.startswith("shot")]}
    check(not result["cancel"]["files_left"] and not result["cancel"]["objects"], f"ESC left {result['cancel']}")

    with override():
        bpy.ops.lotus.build_photo_scene('INVOKE_DEFAULT', True, **options)
    if FILL.fill is not None:
        timed_steps(FILL.fill, steps_s)
    seen, gap = yield from run_ticks(lambda done: False)
    yield from settle(1.0)
    objects = sorted(o.name for o in bpy.data.objects if o.name.startswith("shot"))
    op = last_operator()
    result["complete"] = {"seen": seen, "max_gap_s": round(gap, 3), "objects": objects,
                          "last_operator": getattr(op, "bl_idname", None),
                          "files": len(set(os.listdir(folder)) - set(files_before))}
    check(objects == ["shot", "shot_camera"] and result["complete"]["files"] == 2 * frames,
          f"the modal build: {result['complete']}")
    check(seen == sorted(set(seen)) and seen[:1] == [0] and len(seen) >= frames // 2,
          f"progress frames seen: {seen}")
    # Blender's main thread is busy with the fill for a small part of a frame's fill per tick
    # (reading a frame, writing one): the gaps beyond that are the shared machine's load, which
    # idle_max_gap_s shows with nothing running.
    result["ticks"] = len(steps_s)
    intervals = sorted(b - a for a, b in zip(tick_times, tick_times[1:]))
    result["tick_interval_median_s"] = round(intervals[len(intervals) // 2], 3) if intervals else None
    result["longest_tick_s"] = round(max(steps_s, default=0.0), 3)
    result["fill_in_thread_s"] = [round(value, 3) for value in computes_s]
    check(steps_s and max(steps_s) < one_frame_s / 2, f"Blender did not keep drawing while filling: {result}")
    yield from hud_screenshot("32_sequence_redo_panel", "the redo panel after a modal build")
    # The redo panel, Material changed: the frames' files are taken again, none written.
    op.material = 'SHADED'
    with override():
        redo_last()
    yield from settle(1.0)
    result["redo"] = {"files": len(set(os.listdir(folder)) - set(files_before)),
                      "objects": sorted(o.name for o in bpy.data.objects if o.name.startswith("shot")),
                      "material": bpy.data.objects["shot"].data.materials[0].name
                      if "shot" in bpy.data.objects else None}
    check(result["redo"]["files"] == 2 * frames and result["redo"]["objects"] == ["shot", "shot_camera"],
          f"redo after a modal build: {result['redo']}")
    # One undo step for the whole build: one undo goes back to before it.
    with override():
        bpy.ops.ed.undo()
    yield from settle(0.5)
    result["after_undo"] = sorted(o.name for o in bpy.data.objects if o.name.startswith("shot"))
    check(result["after_undo"] == [], f"one undo did not remove the build: {result['after_undo']}")


def options_checks(photos):
    """The operators' options as an artist meets them (issue 17): Image Files through the real
    file browser, invoke filling from the scene's last-used values, the redo panel rebuilding,
    operator presets."""
    job_queue = addon_module("job_queue")
    scene = bpy.context.scene
    settings = scene.lotus_predict
    bpy.context.preferences.addons[ADDON].preferences.processing_resolution = 128

    # The maps (the photo dropped on the 3D View; Image Files through the browser comes last:
    # its window takes the X keyboard focus with it when it closes).
    settings.task = 'BOTH'
    with override():
        bpy.ops.lotus.predict_files('INVOKE_DEFAULT', directory=str(photos),
                                    files=[{"name": "studio.png"}])
    yield from wait_until(lambda: not job_queue.manager.busy)
    yield from settle(1.0)

    # Lotus: Image from its panel button: the scene's Task (Normals) although the call names none.
    photo = bpy.data.images.load(str(photos / "studio.png"), check_existing=True)
    REPORT["options_photo"] = photo.name
    settings.task = 'NORMAL'
    settings.seamless = True
    reports_before = len(recent_reports().splitlines())
    yield from invoke_from_ui("lotus.predict_image", image=photo.name)
    yield from wait_until(lambda: not job_queue.manager.busy)
    yield from settle(0.5)
    # What the run made, from its closing report: the normal map only.
    made = [line for line in recent_reports().splitlines()[reports_before:]
            if line.startswith("Lotus: studio")]
    tasks = [name.rsplit("_", 1)[1] for name in made[-1][len("Lotus: "):].split(", ")] \
        if made else []
    op = last_operator()
    REPORT["predict_image_invoke"] = {"tasks": tasks, "report": made[-1:], "last_operator": getattr(op, "bl_idname", None),
                                      "seamless": getattr(op, "seamless", None)}
    check(tasks == ["normal"], f"Lotus: Image invoked did not use the scene's Task: {tasks}")
    check(op is not None and op.bl_idname == "LOTUS_OT_predict_image" and op.seamless,
          f"Lotus: Image: last operator {REPORT['predict_image_invoke']}")
    settings.seamless = False

    # Build 2.5D Scene from its panel button: the scene's options (the panel's), not the defaults.
    window, area, _sidebar, _main = window_parts()
    area.spaces.active.shading.type = 'SOLID'
    build = scene.lotus_scene25d
    build.photo = photo
    build.max_vertices = 5000
    build.tear_threshold = 0.0
    yield from invoke_from_ui("lotus.build_photo_scene", photo=photo.name)
    made = scene25d_objects()
    op = last_operator()
    first = {"objects": made, "last_operator": getattr(op, "bl_idname", None),
             "max_vertices": getattr(op, "max_vertices", None),
             "mesh_max_vertices": live_input(bpy.data.objects[made[-1]], "Max Vertices")
             if made else None}
    if made:  # where the build put the mesh: at the scene camera, facing along it
        first["location"] = [round(v, 4) for v in bpy.data.objects[made[-1]].location]
    REPORT["build_invoke"] = first
    check(len(made) == 1 and first["max_vertices"] == 5000 and first["mesh_max_vertices"] == 5000,
          f"Build 2.5D Scene from its button: {first}")
    yield from hud_screenshot("21_redo_panel", "Build 2.5D Scene's redo panel after a build from its button")
    check(hud_box() is not None, "no redo panel after Build 2.5D Scene")

    # A second build after the panel's option changed: the panel's value again, not Blender's
    # remembered one from the first run.
    build.max_vertices = 6000
    yield from invoke_from_ui("lotus.build_photo_scene", photo=photo.name)
    op = last_operator()
    second = {"objects": scene25d_objects(), "max_vertices": getattr(op, "max_vertices", None)}
    REPORT["build_invoke_again"] = second
    check(second["max_vertices"] == 6000,
          f"the second build ignored the panel's changed option: {second}")

    # The redo panel: change Max Vertices of the last build; it rebuilds in place.
    objects_before = sorted(o.name for o in bpy.data.objects)
    op = last_operator()
    op.max_vertices = 7000
    with override():
        redo = redo_last()
    yield from settle(1.5)
    objects_after = sorted(o.name for o in bpy.data.objects)
    rebuilt = bpy.data.objects.get(second["objects"][-1]) if second["objects"] else None
    build = bpy.context.scene.lotus_scene25d  # undo made new data: no old reference is valid
    REPORT["redo"] = {"result": sorted(redo), "objects_before": objects_before,
                      "objects_after": objects_after,
                      "mesh_max_vertices": live_input(rebuilt, "Max Vertices") if rebuilt else None,
                      "scene_max_vertices": build.max_vertices,
                      "location": [round(v, 4) for v in rebuilt.location] if rebuilt else None}
    check(objects_after == objects_before, f"redo left other objects: {REPORT['redo']}")
    check(REPORT["redo"]["mesh_max_vertices"] == 7000 and build.max_vertices == 7000,
          f"redo did not rebuild with the new value: {REPORT['redo']}")
    check(REPORT["redo"]["location"] == first.get("location"),
          f"the rebuilt mesh moved (first build at {first.get('location')}): {REPORT['redo']}")
    yield from hud_screenshot("22_redo_changed", "the redo panel after Max Vertices 7000: rebuilt")

    # Operator presets: save the last build's options, change them, apply the preset (as its
    # menu in the redo panel does: the preset sets the active operator's values, then redo).
    with override():
        bpy.ops.wm.operator_preset_add(name="gui check", operator="LOTUS_OT_build_photo_scene")
    preset = Path(bpy.utils.user_resource('SCRIPTS', path="presets")) / \
        "operator" / "lotus.build_photo_scene" / "gui_check.py"
    text = preset.read_text() if preset.is_file() else ""
    REPORT["preset"] = {"path": str(preset), "text": text}
    check("op.max_vertices = 7000" in text and "op.photo" not in text,
          f"the preset file: {REPORT['preset']}")
    op = last_operator()
    op.max_vertices = 4000
    with override():
        redo_last()
    yield from settle(1.0)
    with override():
        bpy.ops.script.execute_preset(filepath=str(preset), menu_idname="WM_MT_operator_presets")
        redo_last()
    yield from settle(1.5)
    rebuilt = bpy.data.objects.get(second["objects"][-1]) if second["objects"] else None
    REPORT["preset"]["applied"] = {
        "operator": getattr(last_operator(), "max_vertices", None),
        "mesh": live_input(rebuilt, "Max Vertices") if rebuilt else None,
        "objects": sorted(o.name for o in bpy.data.objects)}
    check(REPORT["preset"]["applied"]["mesh"] == 7000
          and REPORT["preset"]["applied"]["objects"] == objects_before,
          f"applying the preset: {REPORT['preset']['applied']}")

    # The other two builders from its button: their redo panels, no Python error.
    for idname, shot in (("lotus.normal_material", "23_redo_material"),
                         ("lotus.relight_setup", "24_redo_relight")):
        yield from invoke_from_ui(idname, photo=REPORT["options_photo"])
        op = last_operator()
        REPORT[shot] = {"last_operator": getattr(op, "bl_idname", None)}
        prefix, suffix = idname.split(".")
        check(op is not None and op.bl_idname == f"{prefix.upper()}_OT_{suffix}",
              f"{idname} from its button: {REPORT[shot]}")
        yield from hud_screenshot(shot, f"{idname}'s redo panel")
    # Relight from the redo panel: the light rig stays where the first setup put it (it is placed
    # from the 2.5D mesh's and camera's matrices), nothing is left over.
    rig = next((o for o in bpy.data.objects if o.name.endswith("_light_rig")), None)
    before = {"objects": sorted(o.name for o in bpy.data.objects),
              "rig": [round(v, 4) for v in rig.location] if rig else None}
    op = last_operator()
    op.ambient = 0.1
    with override():
        redo_last()
    yield from settle(1.0)
    rig = next((o for o in bpy.data.objects if o.name.endswith("_light_rig")), None)
    after = {"objects": sorted(o.name for o in bpy.data.objects),
             "rig": [round(v, 4) for v in rig.location] if rig else None}
    REPORT["relight_redo"] = {"before": before, "after": after}
    check(before == after and after["rig"] is not None,
          f"Relight Setup's redo moved or left objects: {REPORT['relight_redo']}")
    # Image Files...: INVOKE opens the browser; its Confirm (file.execute) runs the job, modal.
    settings = bpy.context.scene.lotus_predict
    settings.task = 'DEPTH'
    for name in ("studio_depth", "studio_normal"):
        if name in bpy.data.images:
            bpy.data.images.remove(bpy.data.images[name])
    before = set(bpy.context.window_manager.windows)
    with override():
        result = bpy.ops.lotus.predict_files('INVOKE_DEFAULT')
    yield from settle(2.0)
    browsers = [w for w in bpy.context.window_manager.windows if w not in before]
    check(len(browsers) == 1, f"Image Files: no file browser window ({result})")
    window = browsers[0]
    area = next(a for a in window.screen.areas if a.type == 'FILE_BROWSER')
    params = area.spaces.active.params
    params.directory = str(photos).encode() if isinstance(params.directory, bytes) else str(photos)
    params.filename = "studio.png"
    yield from settle(1.0)
    screenshot("20_browser_options", "Image Files...: the browser's side panel shows the scene's "
                                     "Task (Depth)")
    region = next(r for r in area.regions if r.type == 'WINDOW')
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.file.execute()
    yield from settle(1.0)
    REPORT["browser_job"] = {"busy": job_queue.manager.busy,
                             "job": getattr(job_queue.manager.current, "label", None)}
    yield from wait_until(lambda: not job_queue.manager.busy)
    yield from settle(1.0)
    check("studio_depth" in bpy.data.images and "studio_normal" not in bpy.data.images,
          "Image Files through the browser: not the scene's Task (Depth)")
    check(not job_queue.manager.last_error, f"Image Files: {job_queue.manager.last_error}")

    reports = recent_reports()
    REPORT["options_reports"] = reports.splitlines()[-12:]
    check("Traceback" not in reports and "Error:" not in reports,
          f"errors in the reports: {reports[-800:]}")

def image_files_error(photos):
    """Image Files... in the file browser Blender opens (a window of its own), with the default
    Hugging Face model while online access is off."""
    prefs = bpy.context.preferences.addons[ADDON].preferences
    local = prefs.depth_model
    prefs.depth_model = "jingheya/lotus-depth-g-v2-1-disparity"
    before = set(bpy.context.window_manager.windows)
    with override():
        bpy.ops.lotus.predict_files('INVOKE_DEFAULT', task='DEPTH')
    yield from settle(2.0)
    browsers = [w for w in bpy.context.window_manager.windows if w not in before]
    check(len(browsers) == 1, f"the file browser window did not open: {len(browsers)}")
    if not browsers:
        prefs.depth_model = local
        return
    window = browsers[0]
    area = next(a for a in window.screen.areas if a.type == 'FILE_BROWSER')
    params = area.spaces.active.params
    REPORT["file_browser"] = {"directory": params.directory.decode() if isinstance(
        params.directory, bytes) else params.directory, "filename": params.filename}
    check(not params.filename, f"the file browser opened with a file name: {params.filename!r}")
    screenshot("14_file_browser", "Image Files...: no .blend name filled in, side panel uncut")
    params.directory = str(photos).encode() if isinstance(params.directory, bytes) else str(photos)
    params.filename = "studio.png"
    yield from settle(1.0)
    region = next(r for r in area.regions if r.type == 'WINDOW')
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.file.execute()
    yield from settle(2.0)
    reports = recent_reports()
    lines = [line for line in reports.splitlines() if "not downloaded" in line]
    REPORT["image_files_error"] = lines[-1:]
    check(lines and "Traceback" not in reports and "RuntimeError" not in reports,
          f"Image Files... error report: {reports[-600:]}")
    screenshot("15_image_files_error", "Image Files... with an unavailable model: one clean report")
    prefs.depth_model = local
    _window, _area, _sidebar, main = window_parts()
    yield from close_report_popup(main, bpy.context.window_manager.windows[0])


def options_panels():
    """The collapsed Options of the Lotus tab and of the 2.5D builder, open in the next file's
    sidebar (re-registered open: Python cannot click a panel header; see save_moves_results)."""
    for name in ("LOTUS_PT_view3d_options", "LOTUS_PT_scene25d_options"):
        cls = getattr(bpy.types, name)
        bpy.utils.unregister_class(cls)
        cls.bl_options = set()
        bpy.utils.register_class(cls)


def preferences_window():
    """The add-on's preferences with Local Folder models only: no online-access note."""
    prefs = bpy.context.preferences
    prefs.active_section = 'ADDONS'
    bpy.context.window_manager.addon_search = "Lotus"
    before = set(bpy.context.window_manager.windows)
    with override():
        bpy.ops.screen.userpref_show()
        bpy.ops.preferences.addon_expand(module=ADDON)
    yield from settle(2.0)
    screenshot("17_preferences", "Local Folder models only: no 'Online access is off' note")
    for window in set(bpy.context.window_manager.windows) - before:
        with bpy.context.temp_override(window=window):
            bpy.ops.wm.window_close()
    yield from settle(1.0)


def save_moves_results(photos):
    """A new, unsaved file: maps go to the temp folder (the panel warns); saving the .blend
    moves them next to it and the warning goes."""
    outputs = addon_module("outputs")
    bpy.ops.wm.read_homefile(use_empty=False)
    yield from settle(2.0)
    window, area, sidebar, main = window_parts()
    area.spaces.active.show_region_ui = True
    yield 0.5
    window, area, sidebar, main = window_parts()
    sidebar.active_panel_category = "Lotus"
    # The Predict options are the scene's (saved with it): set in this new file's scene, so
    # that the Options header names what is on.
    bpy.context.scene.lotus_predict.tiled = True
    yield from settle(2.0)
    screenshot("16_options", "the Options sub-panels open at the default width: no cut label")
    # Re-registered, the Lotus tab's own Options comes last in this file's sidebar (below Relight,
    # past the screen's bottom; in a real session it sits under the tools row, 01_panel_default):
    # scroll down to see it.
    with bpy.context.temp_override(window=window, area=area, region=sidebar):
        bpy.ops.view2d.scroll_down(page=True)
        bpy.ops.view2d.scroll_down(page=True)
    yield from settle(1.0)
    screenshot("16b_predict_options", "the Lotus tab's Options open (scrolled down): no cut label")
    with bpy.context.temp_override(window=window, area=area, region=sidebar):
        bpy.ops.view2d.scroll_up(page=True)
        bpy.ops.view2d.scroll_up(page=True)
    yield from settle(1.0)
    job_queue = addon_module("job_queue")
    with override():
        bpy.ops.lotus.predict_files('INVOKE_DEFAULT', task='DEPTH', tiled=False,
                                    directory=str(photos), files=[{"name": "studio.png"}])
    yield from wait_until(lambda: not job_queue.manager.busy)
    yield from settle()
    depth = bpy.data.images.get("studio_depth")
    in_temp = bool(outputs.results_in_temporary_folder())
    REPORT["unsaved"] = {"path": depth.filepath if depth else None, "in_temp": in_temp}
    check(in_temp, "the unsaved file's map is not in the temp folder")
    screenshot("18_unsaved_warning", "unsaved .blend: maps in the temp folder, Pack Results")
    blend = OUT / "saved_later" / "shot.blend"
    blend.parent.mkdir(exist_ok=True)
    with override():
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    yield from settle()
    depth = bpy.data.images.get("studio_depth")
    REPORT["saved"] = {"path": depth.filepath if depth else None,
                       "in_temp": bool(outputs.results_in_temporary_folder()),
                       "files": sorted(os.listdir(blend.parent / "lotus"))
                       if (blend.parent / "lotus").is_dir() else []}
    check(depth is not None and depth.filepath.startswith("//lotus/")
          and not REPORT["saved"]["in_temp"], f"after saving: {REPORT['saved']}")
    screenshot("19_saved_moved", "saved: the maps moved next to the .blend, the warning is gone")


def write_exact_maps(depth_image, normal_image):
    """Overwrite the predicted maps with the render's exact ones, in the add-on's conventions:
    disparity in [0, 1] (near = 1) and camera-space normals as an OpenGL normal map. Ray cast
    through each pixel centre from the scene camera."""
    import numpy as np
    from mathutils import Vector
    scene = bpy.context.scene
    camera = scene.camera
    width, height = depth_image.size
    depsgraph = bpy.context.evaluated_depsgraph_get()
    top_right, _bottom_right, bottom_left, top_left = camera.data.view_frame(scene=scene)
    to_world = camera.matrix_world
    rotation = to_world.to_3x3()
    origin = to_world.translation
    to_camera = to_world.inverted()
    depth = np.zeros((height, width), np.float64)
    normals = np.zeros((height, width, 3), np.float64)
    normals[..., 2] = 1.0
    for row in range(height):
        v = (row + 0.5) / height
        for column in range(width):
            u = (column + 0.5) / width
            point = top_left + (top_right - top_left) * u + (bottom_left - top_left) * v
            direction = (rotation @ Vector(point)).normalized()
            hit, location, normal, *_rest = scene.ray_cast(depsgraph, origin, direction)
            if not hit:
                continue
            depth[row, column] = -(to_camera @ location).z
            normal_camera = (rotation.transposed() @ normal).normalized()
            if normal_camera.dot(Vector(point)) > 0:  # seen from behind: face the camera
                normal_camera = -normal_camera
            normals[row, column] = normal_camera
    far = depth.max() if depth.max() > 0 else 1.0
    depth[depth <= 0] = far
    disparity = 1.0 / depth
    disparity = (disparity - disparity.min()) / max(disparity.max() - disparity.min(), 1e-9)
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., :3] = disparity[..., None]
    depth_image.pixels.foreach_set(rgba[::-1].ravel())
    rgba[..., :3] = normals * 0.5 + 0.5
    normal_image.pixels.foreach_set(rgba[::-1].ravel())
    # Into their files too: the builders reuse the prediction's files (the OpenGL normal PNG).
    written = []
    for image in (depth_image, normal_image):
        image.update()
        image.save()
        written.append(bpy.path.abspath(image.filepath))
    folder = Path(written[-1]).parent
    stem = normal_image.name[:-len("_normal")]
    for png in sorted(folder.glob(f"{stem}_normal_opengl*.png")):
        copy = bpy.data.images.new("gui_exact_png", width, height, float_buffer=True, is_data=True)
        copy.pixels.foreach_set(rgba[::-1].ravel())
        copy.filepath_raw = str(png)
        copy.file_format = 'PNG'
        copy.save()
        bpy.data.images.remove(copy)
        written.append(str(png))
    REPORT["exact_maps"] = {"size": [width, height], "depth_range": [float(depth.min()), float(far)],
                            "files": written}


def build(idname, shot, shading, camera_view, wait=3.0, keep=()):
    """Run a builder the way its panel button does, then look at its result in the viewport
    (everything but what it made, and ``keep``, hidden)."""
    window, area, _sidebar, _main = window_parts()
    category, name = idname.split(".")
    operator = getattr(getattr(bpy.ops, category), name)
    before = set(bpy.data.objects)
    try:
        with override():
            result = operator('INVOKE_DEFAULT')
    except Exception as ex:  # noqa: BLE001 - reported, the other builders still run
        lines = [line for line in str(ex).strip().splitlines() if not line.startswith("Location")]
        result = {"EXCEPTION": lines[-1]}
        log(traceback.format_exc())
    new = sorted(o.name for o in set(bpy.data.objects) - before)
    REPORT[shot] = {"result": sorted(result), "new_objects": new}
    check(result == {'FINISHED'}, f"{idname} returned {result}")
    shown = set(new) | set(keep)
    for obj in bpy.context.view_layer.objects:
        obj.hide_set(obj.name not in shown)
        obj.select_set(obj.name in shown)
    space = area.spaces.active
    space.shading.type = shading
    if camera_view:
        space.region_3d.view_perspective = 'CAMERA'
    else:
        space.region_3d.view_perspective = 'PERSP'
        with override():
            bpy.ops.view3d.view_axis(type='FRONT')
            bpy.ops.view3d.view_selected()
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)  # no selection outline over the result (the active object stays)
    yield from settle(wait)
    _window, _area, sidebar, _main = window_parts()
    with bpy.context.temp_override(window=window, area=area, region=sidebar):
        REPORT[shot]["live_mesh_panel"] = bpy.types.LOTUS_PT_scene25d_live.poll(bpy.context)
        REPORT[shot]["active"] = getattr(bpy.context.active_object, "name", None)
    screenshot(shot, f"{idname}: {result}, new objects {new}")


# -- README images ------------------------------------------------------------------------------

def convert(*args):
    subprocess.run(["convert", *map(str, args)], check=True)


def side_by_side(target, crop, *shots):
    parts = [OUT / f"{name}_sidebar.png" for name in shots]
    convert(*parts, "-crop", crop, "+repage", "-bordercolor", "#1d1d1d", "-border", "4",
            "+append", "-colors", "256", target)


def readme_images(folder):
    """Small PNGs for the README: the panel, a run (progress, cancelling, an error) and each
    builder's result (the 3D View with the sidebar, scaled down)."""
    folder = REPO_ROOT / folder  # a relative folder is the checkout's (Blender runs in /)
    folder.mkdir(parents=True, exist_ok=True)
    steps = {Path(step["screenshot"]).stem: step for step in REPORT["steps"]}
    convert(OUT / "09_builders_sidebar.png", "-crop", "x600+0+0", "+repage",
            folder / "panel.png")
    parts = [OUT / f"{name}_sidebar.png" for name in ("03_running_normal", "05_cancelling",
                                                      "07_error")]
    convert(*parts, "-crop", "x330+0+0", "+repage", "-bordercolor", "#1d1d1d", "-border", "4",
            "+append", folder / "running.png")
    # The source row before and after a render (nothing below moves), the temp-folder warning
    # before and after saving, and the 2.5D Options uncut at the default width.
    side_by_side(folder / "sources.png", "x130+0+0", "01_panel_default", "02_panel_after_render")
    side_by_side(folder / "saved.png", "x290+0+0", "18_unsaved_warning", "19_saved_moved")
    convert(OUT / "16_options_sidebar.png", "-crop", "x700+0+0", "+repage", "-colors", "256",
            folder / "options.png")
    for name, shot in (("scene25d", "10_scene25d"), ("material", "11_material"),
                       ("relight", "12_relight")):
        if shot not in steps:
            continue
        box = steps[shot]["area"]
        convert(OUT / f"{shot}.png", "-crop", f"{box['width']}x{box['height']}+{box['x']}+{box['y']}",
                "+repage", "-resize", "960x", "-colors", "256", folder / f"{name}.png")
    log(f"README images in {folder}")


# -- driver -----------------------------------------------------------------------------------

def finish():
    if ARGS.readme:
        try:
            readme_images(ARGS.readme)
        except Exception:  # noqa: BLE001 - a missing screenshot is a failure like any other
            REPORT["failures"].append(traceback.format_exc())
    (OUT / "report.json").write_text(json.dumps(REPORT, indent=2, default=str))
    log(f"done: {len(REPORT['failures'])} failure(s); report in {OUT / 'report.json'}")
    if not ARGS.keep_open:
        job_queue = addon_module("job_queue")
        job_queue.manager.shutdown()
        code = 1 if REPORT["failures"] else 0
        sys.stdout.flush()
        os._exit(code)  # quit_blender would save a quit.blend and ask nothing: just end


def make_driver():
    generator = steps()

    def tick():
        try:
            delay = next(generator)
        except StopIteration:
            finish()
            return None
        except Exception:  # noqa: BLE001 - any failure ends the check with its traceback
            REPORT["failures"].append(traceback.format_exc())
            log(traceback.format_exc())
            try:
                screenshot("99_failure", "the screen when the check failed")
            except Exception:  # noqa: BLE001
                pass
            finish()
            return None
        return max(0.01, float(delay))

    return tick


try:
    ADDON = install_extension()
except Exception:  # noqa: BLE001 - without the add-on there is nothing to check
    log(traceback.format_exc())
    sys.stdout.flush()
    os._exit(2)
# Persistent: the check goes on across the new file it opens at the end.
bpy.app.timers.register(make_driver(), first_interval=2.0, persistent=True)
