"""Nothing of the artist's is lost (issue 9, section 1): results survive save and reopen in a fresh
Blender, files are written atomically (a failed write leaves no partial file, the images keep
their pixels and never point at an older run's file, one message says what failed), and job
folders do not pile up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import blender_child
from tests.blender_side import Reports, drive, gradient, image_pixels, new_image, remove_images
from tests.blender_env import REPO_ROOT

CHILD = str(Path(__file__).with_name("blend_roundtrip.py"))


def _photo(path, width=48, height=32):
    from PIL import Image
    rgb = gradient(width, height)[..., :3]
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(path)


def _child(step, work, args, prefix=(), timeout=400):
    command = list(prefix) + [sys.executable, CHILD, str(REPO_ROOT), step, str(work),
                              json.dumps(args)]
    return blender_child.result_of(command, work / "user", timeout, check_status=False)


def _models(tiny_checkpoints):
    return {"depth_model": str(tiny_checkpoints[("G", "disparity")]),
            "normal_model": str(tiny_checkpoints[("G", "normal")])}


def test_results_and_builder_outputs_survive_save_and_reopen(tiny_checkpoints, tmp_path):
    photo = "café photo 01.png"
    _photo(tmp_path / photo)
    args = dict(_models(tiny_checkpoints), photo=photo)
    saved = _child("build_and_save", tmp_path, args)
    reopened = _child("reopen", tmp_path, args)
    stem = "café photo 01"
    # Right after predicting, before any builder uses them: the photo and every result.
    after_predicting = _child("reopen", tmp_path, dict(args, blend="predicted.blend", build=True))
    assert after_predicting["built"] == ["FINISHED"]
    predicted = after_predicting["images"]
    for name in (photo, f"{stem}_depth", f"{stem}_depth_preview", f"{stem}_normal"):
        assert predicted.get(name, {}).get("pixels"), (name, sorted(predicted))
        assert predicted[name]["sum"] == pytest.approx(saved["images"][name]["sum"], rel=1e-4)
    expected = {photo, f"{stem}_depth", f"{stem}_depth_preview", f"{stem}_normal",
                f"{stem}_normal_opengl", f"{stem}_normal_directx", f"{stem}_height",
                f"{stem}_albedo", f"{stem}_relight_preview"}
    assert expected <= set(saved["images"]), sorted(saved["images"])
    for name in expected:
        before, after = saved["images"][name], reopened["images"].get(name)
        assert after is not None, f"{name} is gone after reopening"
        assert after["pixels"] > 0 and after["size"] == before["size"], (name, after)
        assert after["sum"] == pytest.approx(before["sum"], rel=1e-4, abs=1e-3), name
    assert reopened["objects"] == saved["objects"]
    # Every image with a file points into //lotus/ (the material's normal map PNG was absolute):
    # the .blend moved with its lotus/ folder keeps every image.
    results = {name: path for name, path in saved["filepaths"].items() if name != photo}
    assert f"{stem}_normal_opengl" in results
    assert all(path.startswith("//lotus/") for path in results.values()), results
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(tmp_path / "lotus"), str(moved / "lotus"))
    shutil.copy(tmp_path / "shot.blend", moved / "shot.blend")
    after_moving = _child("reopen", moved, args)["images"]
    for name in expected - {photo}:
        assert after_moving[name]["pixels"] > 0, name
        assert after_moving[name]["sum"] == pytest.approx(saved["images"][name]["sum"],
                                                          rel=1e-4, abs=1e-3), name
    # One naming rule: the stem with its accents, no extension; the material reused the
    # prediction's OpenGL PNG and wrote the DirectX one (that the prediction did not) once.
    assert sorted(saved["files"]) == sorted([
        f"{stem}_depth.exr", f"{stem}_depth_preview.png", f"{stem}_normal.exr",
        f"{stem}_normal_opengl.png", f"{stem}_normal_directx.png", f"{stem}_height.png"])
    assert f"{stem}_plane" in saved["objects"] and f"{stem}_camera" in saved["objects"]
    # Relight Setup reused the 2.5D scene: one camera, one 2.5D mesh.
    assert [name for name in saved["objects"] if name.endswith("_camera")] == [f"{stem}_camera"]
    assert saved["objects"].count(stem) == 1


def _unshare_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _unshare_works(),
                                 reason="needs unshare -rm to mount a small tmpfs (Linux)")


@needs_tmpfs
def test_full_disk_leaves_no_partial_file_and_one_message(tiny_checkpoints, tmp_path):
    """A real full file system: a 1 MiB tmpfs with 60 KiB left, in a private mount namespace."""
    photo = "wide.png"
    _photo(tmp_path / photo, 320, 240)
    disk = tmp_path / "disk"
    disk.mkdir()
    args = dict(_models(tiny_checkpoints), photo=photo, output_dir=str(disk / "out"), runs=2)
    script = (f"mount -t tmpfs -o size=1m tmpfs '{disk}' && mkdir '{disk}/out' && "
              f"head -c {1024 * 1024 - 60 * 1024} /dev/zero > '{disk}/filler' && exec \"$@\"")
    result = _child("predict_into", tmp_path, args, prefix=["unshare", "-rm", "sh", "-c", script,
                                                            "sh"])
    # Whatever was written is complete; nothing partial, nothing empty, no temporary left.
    for name, size in result["files"].items():
        assert size > 0 and ".partial" not in name, result["files"]
    # Each run reports its failures once, in one readable message.
    assert len(result["reports"]) == 2, result["reports"]
    for report in result["reports"]:
        assert report.count("Could not write") == 1 and "the disk is full" in report, report
        assert "packed into the .blend" in report
        assert report.split("Error: ", 1)[-1].startswith("Could not write"), report
    # The images keep their pixels: written ones point at their complete file, the others are
    # packed and point at no file (not at the first run's).
    assert set(result["images"]) == {"wide_depth", "wide_depth_preview", "wide_normal"}
    for name, image in result["images"].items():
        assert image["pixels"] > 0 and image["sum"] > 0, (name, image)
        if image["packed"]:
            assert image["filepath"] == "", (name, image)
        else:
            assert os.path.basename(image["filepath"]) in result["files"], (name, image)
    assert any(image["packed"] for image in result["images"].values())


@needs_tmpfs
def test_read_only_output_folder_is_reported_and_images_kept(tiny_checkpoints, tmp_path):
    photo = "ro.png"
    _photo(tmp_path / photo)
    disk = tmp_path / "disk"
    disk.mkdir()
    args = dict(_models(tiny_checkpoints), photo=photo, output_dir=str(disk / "out"))
    script = (f"mount -t tmpfs tmpfs '{disk}' && mkdir '{disk}/out' && "
              f"mount -o remount,ro '{disk}' && exec \"$@\"")
    result = _child("predict_into", tmp_path, args, prefix=["unshare", "-rm", "sh", "-c", script,
                                                            "sh"])
    assert len(result["reports"]) == 1
    assert "no permission to write there" in result["reports"][0], result["reports"]
    assert result["files"] == {}
    assert all(image["packed"] and image["pixels"] for image in result["images"].values())
    assert len(result["images"]) == 3


def _write_half_then(lotus, monkeypatch, *, raise_error):
    """Replace Blender's writer by one that writes half of the real file (and maybe raises)."""
    real = lotus.package.blender.files.save_render

    def half_writer(image, path, scene):
        real(image, path, scene)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:len(data) // 2])
        if raise_error:
            raise RuntimeError(f"Error: Could not write image: No space left on device, '{path}'")
    monkeypatch.setattr(lotus.package.blender.files, "save_render", half_writer)
    # The 16-bit normal PNG is written strip by strip by the add-on itself.
    image_files = lotus.package.core.image_files
    real_png = image_files.write_png_rgb16

    def half_png(path, *args):
        real_png(path, *args)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:len(data) // 2])
        if raise_error:
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(image_files, "write_png_rgb16", half_png)


@pytest.mark.parametrize("raise_error", [True, False], ids=["raises", "silent"])
def test_failed_writes_leave_no_file_and_keep_the_new_pixels(lotus, monkeypatch, raise_error):
    import bpy
    source = new_image("halfwrite", gradient())
    assert bpy.ops.lotus.predict_image(image=source.name, task='BOTH') == {'FINISHED'}
    first_run = sorted(os.listdir(lotus.out))
    depth = bpy.data.images["halfwrite_depth"]
    old_path = depth.filepath
    # The second run: another picture, so new maps; every write is cut in half.
    source.pixels.foreach_set(np.ascontiguousarray(gradient()[::-1, ::-1]).ravel())
    _write_half_then(lotus, monkeypatch, raise_error=raise_error)
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, 'BOTH', lambda c, d, r: (
        [lotus.inputs.prepare_image(source, d, r, 0)], []), reports)
    for job in built:
        lotus.job_queue.manager.submit(job)
    assert drive(lotus.job_runner.JobRunner(built, reports)) == {'FINISHED'}
    assert sorted(os.listdir(lotus.out)) == first_run  # nothing partial, nothing new
    errors = reports.texts('ERROR')
    assert len(errors) == 1, errors
    reason = "no space left on device" if raise_error else "the file came out incomplete"
    assert errors[0].startswith("Could not write 4 files in ") and reason in errors[0], errors
    for name in ("halfwrite_depth.exr", "halfwrite_depth_preview.png", "halfwrite_normal.exr",
                 "halfwrite_normal_opengl.png"):
        assert name.replace(".", "_001.") in errors[0]
    # The images hold the second run's maps, packed, pointing at no file.
    assert depth == bpy.data.images["halfwrite_depth"] and depth.packed_file is not None
    assert depth.filepath == "" and depth.filepath != old_path
    values = image_pixels(depth)
    assert values[..., 0].std() > 0
    # The job folder with the arrays is kept (they are the raw results) and named in the message.
    assert built[0].job_dir in errors[0] and os.path.isdir(built[0].job_dir)
    monkeypatch.undo()
    # The next run writes its files and the image leaves its packed copy for the new file.
    assert bpy.ops.lotus.predict_image(image=source.name, task='DEPTH') == {'FINISHED'}
    assert depth.packed_file is None and depth.filepath.endswith("halfwrite_depth_001.exr")
    shutil.rmtree(built[0].job_dir, ignore_errors=True)
    remove_images("halfwrite")


def test_job_folders_of_failed_and_cancelled_runs_do_not_pile_up(lotus):
    import bpy
    job_queue = lotus.job_queue
    root = lotus.job_folders.jobs_folder()
    job_queue.prune_job_folders(keep=0)  # what earlier tests left
    before = set(os.listdir(root))
    source = new_image("jobsclean", gradient())
    # A cancelled run: its folder goes.
    built = lotus.operators.build_jobs(bpy.context, 'BOTH', lambda c, d, r: (
        [lotus.inputs.prepare_image(source, d, r, 0)], []), Reports())
    for job in built:
        job_queue.manager.submit(job)
    runner = lotus.job_runner.JobRunner(built, Reports())
    runner.handle('ESC')
    drive(runner)
    assert all(job.state == job_queue.CANCELLED for job in built)
    assert set(os.listdir(root)) == before
    # Leftovers of crashed sessions (dead process ids) are pruned to the newest few; a folder of
    # another running Blender (a live pid) is left alone.
    dead_pid = 2 ** 22 + 12345
    for number in range(lotus.job_folders.KEEP_JOB_FOLDERS + 4):
        folder = os.path.join(root, f"20260101-00000{number}-{dead_pid}-{number}")
        os.makedirs(os.path.join(folder, "out_depth"))
        os.utime(folder, (1_000_000 + number, 1_000_000 + number))
    live = os.path.join(root, f"20260101-000000-{os.getppid()}-1")
    os.makedirs(live, exist_ok=True)
    # The command line's folders follow the same rule: one of a running process is left alone
    # (its time is never read as a process id), one of a killed run is a leftover.
    cli_name = lotus.job_folders.job_folder_name("cli")
    assert lotus.job_folders.folder_pid(cli_name) == os.getpid()
    running_cli = os.path.join(root, cli_name.replace(f"-{os.getpid()}-", f"-{os.getppid()}-"))
    killed_cli = os.path.join(root, cli_name.replace(f"-{os.getpid()}-", f"-{dead_pid}-"))
    for folder in (running_cli, killed_cli):
        os.makedirs(folder)
        os.utime(folder, (1_000_000, 1_000_000))  # older than the kept leftovers
    removed = job_queue.prune_job_folders()
    left = set(os.listdir(root)) - before
    assert len(removed) == 5 and killed_cli in removed
    assert left == {os.path.basename(live), os.path.basename(running_cli)} | {
        f"20260101-00000{n}-{dead_pid}-{n}" for n in range(4, lotus.job_folders.KEEP_JOB_FOLDERS + 4)}
    for name in left:
        shutil.rmtree(os.path.join(root, name))
    remove_images("jobsclean")


def test_material_maps_that_cannot_be_written_are_packed_and_reported_once(lotus, monkeypatch,
                                                                          tmp_path):
    import bpy
    from lotus_blender.core import maps
    materials = sys.modules[f"{lotus.name}.blender.builders.materials"]
    common = sys.modules[f"{lotus.name}.blender.builders.common"]
    files = lotus.package.blender.files
    rows, cols = np.mgrid[0:24, 0:32]
    normals = maps.normalize_vectors(np.dstack([(cols - 16) / 40.0, (12 - rows) / 40.0,
                                                np.ones((24, 32))]))
    photo = bpy.data.images.new("nomap_photo", 32, 24)
    normal = common.write_float_image("nomap_photo_normal", maps.normals_to_normal_map(normals))
    normal["lotus_kind"], normal["lotus_source"] = "normal", photo.name

    def refuse(image, path, scene):
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")  # a start, then the disk is full
        raise RuntimeError(f"Error: Could not write image: No space left on device, '{path}'")
    monkeypatch.setattr(files, "save_as", lambda image, path: refuse(image, path, None))
    failures = []
    obj, material, normal_map, height = materials.apply_normal_material(
        bpy.context, photo, normal, convention='DIRECTX', failures=failures)
    assert not lotus.out.exists() or os.listdir(lotus.out) == []  # nothing partial
    assert [os.path.basename(f.path) for f in failures] == ["nomap_photo_height.png",
                                                            "nomap_photo_normal_directx.png"]
    message = files.describe_failures(failures, "kept")
    assert message.startswith("Could not write 2 files in ") and "no space left on device" in message
    for image in (normal_map, height):
        assert image.packed_file is not None and image.filepath == ""
        assert common.read_pixels(image)[..., :3].std() > 0
    bpy.data.objects.remove(obj)
    bpy.data.materials.remove(material)
    for image in (photo, normal, normal_map, height):
        bpy.data.images.remove(image)
