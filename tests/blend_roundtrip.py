"""Child-process steps for the save-and-reopen and full-disk tests (tests/test_nothing_lost.py).

    python blend_roundtrip.py REPO_ROOT STEP WORK_DIR JSON_ARGS

Each step runs in a fresh Blender (the bpy module), prints one line "RESULT <json>" and ends with
os._exit (PyPI bpy may crash or hang at interpreter exit after an extension registered).
"""

import json
import os
import sys
from pathlib import Path

import numpy as np


def _checksum(image):
    """Sum and size of an image's pixels: equal in both processes when nothing was lost."""
    count = len(image.pixels)
    if count == 0:
        return {"size": list(image.size), "sum": 0.0, "pixels": 0}
    buffer = np.empty(count, np.float32)
    image.pixels.foreach_get(buffer)
    return {"size": list(image.size), "sum": float(buffer.astype(np.float64).sum()),
            "pixels": count}


def _install(work: Path, args: dict):
    import bpy
    from tests import blender_env
    name = blender_env.install_extension(work / "repo")
    prefs = bpy.context.preferences.addons[name].preferences
    prefs.depth_model, prefs.depth_model_path = 'LOCAL', args["depth_model"]
    prefs.depth_model_kind = 'DISPARITY'
    prefs.normal_model, prefs.normal_model_path = 'LOCAL', args["normal_model"]
    prefs.processing_resolution, prefs.device, prefs.precision = 64, 'CPU', 'FP32'
    prefs.output_dir = args.get("output_dir", "//lotus/")
    prefs.normal_convention = args.get("convention", 'OPENGL')
    return name


def build_and_save(work: Path, args: dict) -> dict:
    """Predict a photo, run every builder on it, save the .blend; checksums of every image."""
    import bpy
    _install(work, args)
    bpy.ops.wm.save_as_mainfile(filepath=str(work / "shot.blend"))
    photo_file = args["photo"]
    bpy.ops.lotus.predict_files(task='BOTH', directory=str(work), files=[{"name": photo_file}])
    photo = bpy.data.images[photo_file]
    # Predictions alone (nothing uses them yet) are saved too, in a copy.
    bpy.ops.wm.save_as_mainfile(filepath=str(work / "predicted.blend"), copy=True)
    assert bpy.ops.lotus.build_photo_scene(photo=photo.name) == {'FINISHED'}
    # Built again with another focal source: it replaces the first build.
    bpy.context.scene.lotus_scene25d.focal_source = 'MANUAL'
    assert bpy.ops.lotus.build_photo_scene(photo=photo.name) == {'FINISHED'}
    assert bpy.ops.lotus.normal_material(photo=photo.name, target='NEW_PLANE',
                                         convention='OPENGL') == {'FINISHED'}
    assert bpy.ops.lotus.normal_material(photo=photo.name, target='NEW_PLANE',
                                         convention='DIRECTX') == {'FINISHED'}
    assert bpy.ops.lotus.relight_setup(photo=photo.name, albedo='DELIGHT') == {'FINISHED'}
    assert bpy.ops.lotus.preview_relight(max_size=16, samples=1) == {'FINISHED'}
    images = {image.name: _checksum(image) for image in bpy.data.images
              if image.name not in ("Render Result", "Viewer Node")}
    objects = sorted(obj.name for obj in bpy.data.objects)
    bpy.ops.wm.save_mainfile()
    filepaths = {image.name: image.filepath for image in bpy.data.images
                 if image.filepath and image.packed_file is None}
    return {"images": images, "objects": objects, "filepaths": filepaths,
            "files": sorted(os.listdir(work / "lotus"))}


def reopen(work: Path, args: dict) -> dict:
    """Open the saved .blend in a fresh Blender and read every image back."""
    import bpy
    _install(work, args)
    bpy.ops.wm.open_mainfile(filepath=str(work / args.get("blend", "shot.blend")))
    images = {image.name: _checksum(image) for image in bpy.data.images
              if image.name not in ("Render Result", "Viewer Node")}
    result = {"images": images, "objects": sorted(obj.name for obj in bpy.data.objects)}
    if args.get("build"):
        # What the artist does next: Build 2.5D Scene finds the photo's depth again.
        result["built"] = sorted(bpy.ops.lotus.build_photo_scene(photo=args["photo"]))
    return result


def predict_into(work: Path, args: dict) -> dict:
    """Predict into an output folder that may fail (full or read-only): reports, images, files."""
    import bpy
    name = _install(work, args)
    job_folders = sys.modules[f"{name}.blender.job_folders"]
    reports = []
    for repeat in range(args.get("runs", 1)):
        try:
            bpy.ops.lotus.predict_files(task='BOTH', directory=str(work),
                                        files=[{"name": args["photo"]}])
        except RuntimeError as ex:  # background bpy raises on an ERROR report
            reports.append(str(ex))
    stem = os.path.splitext(args["photo"])[0]
    images = {}
    for suffix in ("depth", "depth_preview", "normal"):
        image = bpy.data.images.get(f"{stem}_{suffix}")
        if image is not None:
            images[image.name] = dict(_checksum(image), filepath=image.filepath,
                                      packed=image.packed_file is not None, source=image.source)
    folder = Path(args["output_dir"])
    files = {p.name: p.stat().st_size for p in folder.iterdir()} if folder.is_dir() else {}
    return {"reports": reports, "images": images, "files": files,
            "jobs": sorted(os.listdir(job_folders.jobs_folder()))}


STEPS = {"build_and_save": build_and_save, "reopen": reopen, "predict_into": predict_into}


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    result = STEPS[sys.argv[2]](Path(sys.argv[3]), json.loads(sys.argv[4]))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
