"""Every input gives a result or a clear message (issue 9, section 2): strips down to one pixel
wide, a JPEG cut short, animated GIFs and multi-page TIFFs, a truncated OpenEXR."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

from tests.blender_side import Reports, drive, gradient, image_pixels, new_image, remove_images


def _run(lotus, gather, task='DEPTH'):
    import bpy
    reports = Reports()
    built = lotus.operators.build_jobs(bpy.context, task, gather, reports)
    for job in built:
        lotus.job_queue.manager.submit(job)
    result = drive(lotus.job_runner.JobRunner(built, reports)) if built else {'CANCELLED'}
    return result, reports


def _files(lotus, *paths):
    def gather(context, job_dir, resolution):
        return [lotus.inputs.prepare_file(str(path), job_dir, resolution, index)
                for index, path in enumerate(paths)], []
    return gather


@pytest.mark.parametrize("width,height", [(1, 20000), (20000, 1), (3, 7)])
def test_any_aspect_ratio_down_to_one_pixel(lotus, width, height):
    import bpy
    name = f"strip_{width}x{height}"
    rng = np.random.default_rng(0)
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., :3] = rng.random((height, width, 3))
    new_image(name, rgba)
    # The reduction on the Blender side keeps the one-pixel edge whole.
    array = lotus.inputs.image_display_array(bpy.data.images[name], 64)
    assert min(array.shape[:2]) == min(width, height)
    result, reports = _run(lotus, lambda c, d, r: (
        [lotus.inputs.prepare_image(bpy.data.images[name], d, r, 0)], []), task='BOTH')
    assert result == {'FINISHED'}, reports
    assert not reports.texts('ERROR')
    for suffix in ("depth", "normal"):
        image = bpy.data.images[f"{name}_{suffix}"]
        assert tuple(image.size) == (width, height)
        assert np.isfinite(image_pixels(image)).all()
    remove_images(name)


def _blender_jpeg(path, size=256):
    """A noisy JPEG written by Blender itself."""
    import bpy
    image = new_image("jpeg_source", np.dstack([np.random.default_rng(1).random((size, size, 3)),
                                                np.ones((size, size))]).astype(np.float32))
    scene = bpy.data.scenes.new("jpeg_writer")
    try:
        settings = scene.render.image_settings
        settings.file_format, settings.color_mode, settings.quality = 'JPEG', 'RGB', 90
        image.save_render(str(path), scene=scene)
    finally:
        bpy.data.scenes.remove(scene)
        bpy.data.images.remove(image)


def test_truncated_jpeg_gives_a_warning(lotus, tmp_path):
    import bpy
    _blender_jpeg(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:int(len(data) * 0.6)])
    result, reports = _run(lotus, _files(lotus, tmp_path / "whole.jpg", tmp_path / "cut.jpg"))
    assert result == {'FINISHED'}
    warnings = [text for text in reports.texts('WARNING') if "incomplete" in text]
    assert len(warnings) == 1 and warnings[0].startswith("cut.jpg is incomplete"), reports
    # Still a result: Blender reads what is there.
    assert "cut_depth" in bpy.data.images and "whole_depth" in bpy.data.images
    remove_images("cut")
    remove_images("whole")


def test_animated_gif_and_multipage_tiff_say_only_the_first_frame_is_used(lotus, tmp_path):
    import bpy
    from PIL import Image
    rng = np.random.default_rng(2)
    frames = [Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
              for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=80)
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "single.tif")
    result, reports = _run(lotus, _files(lotus, tmp_path / "anim.gif", tmp_path / "pages.tif",
                                         tmp_path / "single.tif"))
    assert result == {'FINISHED'}
    warnings = reports.texts('WARNING')
    assert any(text.startswith("anim.gif has 3 frames: only the first is used") for text in warnings)
    assert any(text.startswith("pages.tif has 3 pages: only the first is used") for text in warnings)
    assert not any("single.tif" in text for text in warnings)
    for stem in ("anim", "pages", "single"):
        assert f"{stem}_depth" in bpy.data.images
        remove_images(stem)


def test_truncated_exr_is_refused_before_blender_reads_it(lotus, tmp_path):
    """Blender crashes on the pixels of a truncated OpenEXR (bpy 5.0.1): the file is checked first."""
    import bpy
    image = new_image("exr_source", gradient(64, 64), float_buffer=True)
    scene = bpy.data.scenes.new("exr_writer")
    try:
        settings = scene.render.image_settings
        settings.file_format, settings.color_depth, settings.color_mode = 'OPEN_EXR', '32', 'RGB'
        image.save_render(str(tmp_path / "whole.exr"), scene=scene)
    finally:
        bpy.data.scenes.remove(scene)
        bpy.data.images.remove(image)
    from lotus_blender.core import image_files
    assert image_files.exr_complete(str(tmp_path / "whole.exr")) is True
    data = (tmp_path / "whole.exr").read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 40):
        (tmp_path / "cut.exr").write_bytes(data[:cut])
        assert image_files.exr_complete(str(tmp_path / "cut.exr")) is False
        with pytest.raises(lotus.inputs.InputError, match="cut.exr is incomplete"):
            lotus.inputs.load_image_file(str(tmp_path / "cut.exr"))
    assert "cut.exr" not in bpy.data.images
    # Already loaded in Blender (opened in the Image Editor, no pixels read yet): the panel's
    # Active Image route refuses it before anything reads its pixels (5.0.1 crashed here).
    (tmp_path / "loaded.exr").write_bytes(data[:len(data) // 2])
    loaded = bpy.data.images.load(str(tmp_path / "loaded.exr"))
    assert not loaded.has_data
    operator = SimpleNamespace(image="", layer="", render_pass="Combined", frame_start=0,
                               frame_end=0, images=lambda context: [loaded])
    prepared, problems = lotus.operators.LOTUS_OT_predict_image.gather(
        operator, bpy.context, str(tmp_path), 64)
    assert prepared == [] and len(problems) == 1
    assert problems[0].startswith("'loaded.exr' (loaded.exr) is incomplete"), problems
    with pytest.raises(lotus.inputs.InputError, match="is incomplete"):
        lotus.inputs.prepare_image(loaded, str(tmp_path), 64, 0)
    assert not loaded.has_data
    bpy.data.images.remove(loaded)


def test_over_long_file_name_gives_one_line_and_distinct_results(lotus, tmp_path):
    """A 240-character file name: 5.x failed with "File name too long" showing the job folder's
    path; 4.2's 63-byte names made the results X, X.001, X.002."""
    import bpy
    from PIL import Image
    stem = "a very long photo name " * 10
    stem = stem[:236]
    path = tmp_path / f"{stem}.png"
    Image.fromarray(np.round(gradient()[..., :3] * 255).astype(np.uint8)).save(path)
    result, reports = _run(lotus, _files(lotus, path), task='BOTH')
    assert result == {'FINISHED'}, reports
    assert not reports.texts('ERROR')
    short = lotus.package.blender.naming.short_stem(stem)
    assert short != stem and short.startswith("a very long photo name")
    lines = [text for text in reports.texts('WARNING') if "too long" in text]
    assert len(lines) == 1 and f"its results are called '{short}'" in lines[0], reports
    for suffix in ("depth", "depth_preview", "normal"):
        image = bpy.data.images[f"{short}_{suffix}"]
        assert image["lotus_source_path"] == str(path)
    assert not [i for i in bpy.data.images if i.name.startswith(short) and i.name[-4:-3] == "."]
    assert (lotus.out / f"{short}_depth.exr").is_file()
    assert (lotus.out / f"{short}_normal_opengl.png").is_file()
    remove_images(short)
    remove_images(stem[:20])


def test_job_files_keep_short_names_whatever_the_photo_is_called(lotus, tmp_path):
    """The job folder lies deep in the extension's user folder: its files' names stay short
    (Windows' 260-character paths), while the results keep the photo's (shortened) name."""
    import bpy
    image = bpy.data.images.new("ünïcode photo name " * 6, 8, 6)
    try:
        prepared = lotus.inputs.prepare_image(image, str(tmp_path), 64, 3)
        job_file = os.path.basename(prepared.npy_path)
        assert job_file.startswith("0003_ünïcode photo name") and job_file.endswith(".npy")
        assert len(job_file) <= 4 + 1 + lotus.inputs.images.JOB_STEM_CHARS + 4
        assert prepared.name == lotus.package.blender.naming.short_stem(image.name)
    finally:
        bpy.data.images.remove(image)
