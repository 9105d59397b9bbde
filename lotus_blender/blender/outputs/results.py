"""Worker results -> Blender images and files on disk (the folders and names: folders.py).

For a source named "photo":
  photo_depth          float, Non-Color, the raw model output in R = G = B (disparity near = 1, or
                       relative depth near = 0, as ``img["lotus_kind"]`` says), source size
  photo_depth_preview  colour-mapped preview (near = bright), at the size the model saw
  photo_normal         float, Non-Color, camera-space normals encoded as an OpenGL normal map
                       (rgb = 0.5 n + 0.5, Blender camera convention: +X right, +Y up, +Z to camera)
Files (Blender's own image writers, the 16-bit normal PNG strip by strip; never overwriting: new
names get _001, _002...; each file is
written under a temporary name in the same folder and renamed once complete, so a failed write
leaves nothing behind):
  photo_depth.exr (32-bit float), photo_depth_preview.png, photo_normal.exr (32-bit float, OpenGL),
  photo_normal_opengl.png or photo_normal_directx.png (16-bit, the preferred convention).
Images of sequences and movies are written per frame (photo_depth_0001.exr ...) and shown in Blender
as an image sequence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import bpy
import numpy as np

from ... import protocol
from ...core import image_files, maps, motion, temporal
from .. import naming
from ..files import OutputError, WriterScene, ensure_folder, write_atomically
from .folders import stored_path, unique_path, unique_sequence_stem


@dataclass
class OutputSettings:
    folder: str                     # absolute folder for files
    temporary: bool                 # True when the .blend is unsaved and the folder is a temp one
    convention: str = "OPENGL"      # normal map PNG convention
    stabilize: bool = True          # sequences: align each frame's depth to the frames before
    stabilized: list = field(default_factory=list)  # (frame, core.temporal.Alignment), in order
    written: list = field(default_factory=list)   # files written, in order


# -- resampling, strip by strip -------------------------------------------------------------------

def _bilinear_axis(source_size: int, target_size: int):
    """Indices and weights of bilinear sampling at pixel centres (like align_corners=False)."""
    position = (np.arange(target_size, dtype=np.float64) + 0.5) * source_size / target_size - 0.5
    position = np.clip(position, 0.0, source_size - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, source_size - 1)
    weight = (position - low).astype(np.float32)
    return low, high, weight


def resized_strips(values: np.ndarray, width: int, height: int, rows_per_strip: int = 256):
    """Yield (first_row, strip) of ``values`` (HxW or HxWxC, top row first) resized to
    width x height, a few hundred rows at a time, so a full-size copy is never held twice."""
    source_h, source_w = values.shape[:2]
    if (source_w, source_h) == (width, height):
        for first in range(0, height, rows_per_strip):
            yield first, values[first:first + rows_per_strip]
        return
    row_low, row_high, row_weight = _bilinear_axis(source_h, height)
    col_low, col_high, col_weight = _bilinear_axis(source_w, width)
    extra = (1,) * (values.ndim - 2)
    col_weight = col_weight.reshape((1, -1) + extra)
    for first in range(0, height, rows_per_strip):
        rows = slice(first, min(height, first + rows_per_strip))
        weight = row_weight[rows].reshape((-1, 1) + extra)
        top = values[row_low[rows]]
        bottom = values[row_high[rows]]
        vertical = top + (bottom - top) * weight
        left = vertical[:, col_low]
        right = vertical[:, col_high]
        yield first, (left + (right - left) * col_weight).astype(np.float32)


# -- Blender images -------------------------------------------------------------------------------

def _result_image(name: str, width: int, height: int, float_buffer: bool, data: bool,
                  kind: str, source_name: str) -> bpy.types.Image:
    """Reuse our earlier result of the same name (materials keep working), or make a new one; a
    name the artist's own image holds gets one suffix (naming.result_image_name)."""
    made_by_us = naming.made_by_lotus(kind, source_name)

    def reusable(image):
        return made_by_us(image) and image.source in ('FILE', 'GENERATED') \
            and image.is_float == float_buffer

    name, image = naming.claim_image(name, reusable)
    if image is not None:
        if tuple(image.size) != (width, height):
            image.scale(width, height)
        return image
    return bpy.data.images.new(name, width, height, alpha=False, float_buffer=float_buffer,
                               is_data=data)


def _fill_image(image: bpy.types.Image, values: np.ndarray, encode) -> None:
    """Write ``values`` (top row first) resized to the image's size, through ``encode`` (a strip ->
    HxWx3 rgb), into the image with one full-size RGBA buffer."""
    width, height = image.size[0], image.size[1]
    buffer = np.empty((height, width, 4), dtype=np.float32)
    buffer[..., 3] = 1.0
    for first, strip in resized_strips(values, width, height):
        rows = strip.shape[0]
        # Blender rows are bottom-up: top row `first` lands at row height - 1 - first.
        target = buffer[height - first - rows:height - first]
        target[..., :3] = encode(strip)[::-1]
    image.pixels.foreach_set(buffer.ravel())
    del buffer
    image.update()


def _grey(strip: np.ndarray) -> np.ndarray:
    return np.repeat(strip[..., None], 3, axis=2)


def _normal_map_encoder(convention: str):
    def encode(strip: np.ndarray) -> np.ndarray:
        normals = maps.normalize_vectors(maps.lotus_to_blender_camera(strip))
        return maps.normals_to_normal_map(normals, convention)
    return encode


def _tag(image: bpy.types.Image, kind: str, prepared) -> None:
    image["lotus_kind"] = kind
    image["lotus_source"] = prepared.source_image or prepared.name
    if prepared.source_path:
        image["lotus_source_path"] = prepared.source_path
    if prepared.focal_35mm:
        image["lotus_focal_35mm"] = float(prepared.focal_35mm)
    if prepared.frame is not None:
        image["lotus_frame"] = int(prepared.frame)
    # Results have no users until a builder uses them: keep them in the saved .blend.
    image.use_fake_user = True


def _store_path(image: bpy.types.Image, path: str) -> None:
    """Point the image at its file, relative to the .blend when it is saved."""
    image.filepath = stored_path(path)


def keep_in_blend(image: bpy.types.Image) -> None:
    """Pack the image's current pixels into the .blend (its file could not be written): it keeps
    them across save and reopen and no longer points at any file, an older run's least of all."""
    image.filepath_raw = ""
    image.pack()
    image.use_fake_user = True


# -- writing files --------------------------------------------------------------------------------

def bind_to_file(image: bpy.types.Image, path: str, file_format: str) -> None:
    """Make the image use its freshly written file from now on (it survives saving the .blend);
    pixels packed by an earlier failed run are dropped, the file holds the same."""
    image.filepath_raw = path
    image.file_format = file_format
    image.source = 'FILE'
    if image.packed_file is not None:
        image.unpack(method='REMOVE')
    _store_path(image, path)


def _save_bound(image: bpy.types.Image, writer: WriterScene, path: str, file_format: str,
                depth: str, settings: OutputSettings) -> None:
    """Write the image and make it use that file from now on."""
    writer.write(image, path, file_format, depth)
    settings.written.append(path)
    bind_to_file(image, path, file_format)


# -- one job's results ----------------------------------------------------------------------------

def create_results(outputs: list[dict], prepared_by_npy: dict, settings: OutputSettings,
                   write_files: bool = True) -> tuple[list[bpy.types.Image], list[OutputError]]:
    """Make the Blender images (and files) of a job's outputs.

    Returns (images, problems): problems are the files that could not be written; the images of
    those are packed into the .blend (keep_in_blend) so nothing is lost.
    """
    images: list[bpy.types.Image] = []
    problems: list[OutputError] = []
    frames: dict[tuple[str, str], list] = {}
    singles = []
    for output in outputs:
        prepared = prepared_by_npy.get(os.path.normpath(output["input"]))
        if prepared is None:
            continue
        if prepared.frame is None:
            singles.append((output, prepared))
        else:
            frames.setdefault((prepared.source_image or prepared.name, output["kind"]), []).append(
                (output, prepared))
    if write_files:
        try:
            ensure_folder(settings.folder)
        except OutputError as ex:
            problems.append(ex)
            write_files = False
    with WriterScene() as writer:
        for output, prepared in singles:
            images += _single_result(output, prepared, settings, writer, write_files, problems)
        for items in frames.values():
            if not write_files:
                continue  # frames exist only as files: the arrays stay in the job folder
            images += _sequence_result(items, settings, writer, problems)
    return images, problems


def _file_stem(prepared, suffix: str) -> str:
    return naming.result_file_name(prepared.name, suffix)


def _single_result(output, prepared, settings, writer, write_files, problems):
    kind = output["kind"]
    values = np.load(output["path"], mmap_mode="r")
    width, height = prepared.full_width, prepared.full_height
    source = prepared.source_image or prepared.name
    made = []
    saves = []   # (image, path, format, depth)
    if kind in (protocol.KIND_DISPARITY, protocol.KIND_DEPTH):
        image = _result_image(f"{prepared.name}_depth", width, height, True, True, kind, source)
        _fill_image(image, values, _grey)
        _tag(image, kind, prepared)
        made.append(image)
        preview = _result_image(f"{prepared.name}_depth_preview", values.shape[1],
                                values.shape[0], False, False, "preview", source)
        colours = maps.colorize_depth(np.asarray(values),
                                      near_is_high=(kind == protocol.KIND_DISPARITY))
        _fill_image(preview, colours, lambda strip: strip)
        _tag(preview, "preview", prepared)
        made.append(preview)
        saves = [(image, "depth", ".exr", 'OPEN_EXR', '32'),
                 (preview, "depth_preview", ".png", 'PNG', '8')]
    elif kind == protocol.KIND_NORMAL:
        image = _result_image(f"{prepared.name}_normal", width, height, True, True, kind, source)
        _fill_image(image, values, _normal_map_encoder("OPENGL"))
        _tag(image, kind, prepared)
        made.append(image)
        if write_files:
            _try(problems, lambda: _write_normal_png(image, values, prepared, settings))
        saves = [(image, "normal", ".exr", 'OPEN_EXR', '32')]
    for image, suffix, extension, file_format, depth in saves:
        saved = write_files and _try(problems, lambda: _save_bound(
            image, writer, unique_path(settings.folder, _file_stem(prepared, suffix), extension),
            file_format, depth, settings))
        if not saved:
            keep_in_blend(image)
    return made


def _try(problems: list, action) -> bool:
    try:
        action()
    except OutputError as ex:
        problems.append(ex)
        return False
    return True


def write_normal_png(values: np.ndarray, width: int, height: int, path: str,
                     convention: str) -> str:
    """The 16-bit PNG normal map of ``values`` (Lotus normals at the model's size) at width x
    height in a convention, written atomically strip by strip: Blender's PNG writer would need a
    full-size float image and two more full-size copies (issue 15: 16000x16000 peaked at 13 GB)."""
    encode = _normal_map_encoder(convention)
    strips = (maps.to_uint16(encode(strip)) for _, strip in resized_strips(values, width, height))
    return write_atomically(path, 'PNG', lambda temporary: image_files.write_png_rgb16(
        temporary, width, height, strips))


def _write_normal_png(image, values, prepared, settings, path=None):
    """The normal map PNG in the preferred convention (the Blender image is OpenGL)."""
    label = settings.convention.lower()
    path = path or unique_path(settings.folder, _file_stem(prepared, f"normal_{label}"), ".png")
    write_normal_png(values, image.size[0], image.size[1], path, settings.convention)
    settings.written.append(path)
    if prepared.frame is None:
        # The normal-mapped material uses this file rather than writing a second one.
        image[f"lotus_normal_png_{label}"] = stored_path(path)


def _sequence_result(items, settings, writer, problems):
    """Frames of one source and kind: files per frame, one Blender image sequence per map."""
    items = sorted(items, key=lambda item: item[1].frame)
    first_output, first_prepared = items[0]
    kind = first_output["kind"]
    frames = [prepared.frame for _, prepared in items]
    is_depth = kind != protocol.KIND_NORMAL
    map_name = 'depth' if is_depth else 'normal'
    base = f"{first_prepared.name}_{map_name}"
    stem = unique_sequence_stem(settings.folder, _file_stem(first_prepared, map_name), ".exr",
                                frames)
    png_stem = None
    if not is_depth:
        png_stem = unique_sequence_stem(
            settings.folder, _file_stem(first_prepared, f"normal_{settings.convention.lower()}"),
            ".png", frames)
    width, height = first_prepared.full_width, first_prepared.full_height
    frame_image = bpy.data.images.new("lotus_frame", width, height, alpha=False,
                                      float_buffer=True, is_data=True)
    # Affine-invariant depth has its own scale and shift in every frame: align them (README
    # "Sequences and render farms").
    stabilizer = temporal.TemporalStabilizer() if is_depth and settings.stabilize else None
    try:
        for output, prepared in items:
            values = np.load(output["path"], mmap_mode="r")
            if stabilizer is not None:
                # The input picture (the job's own file) shows what moves: the fit keeps off it.
                values, fit = stabilizer.align(prepared.frame, values,
                                               motion.load_picture(prepared.npy_path))
                settings.stabilized.append((prepared.frame, fit))
            encode = _grey if is_depth else _normal_map_encoder("OPENGL")
            _fill_image(frame_image, values, encode)
            path = os.path.join(settings.folder, naming.frame_file_name(stem, prepared.frame, ".exr"))
            try:
                writer.write(frame_image, path, 'OPEN_EXR', '32')
                settings.written.append(path)
                if png_stem:
                    _write_normal_png(frame_image, values, prepared, settings,
                                      os.path.join(settings.folder, naming.frame_file_name(
                                          png_stem, prepared.frame, ".png")))
            except OutputError as ex:
                problems.append(ex)
                return []
    finally:
        bpy.data.images.remove(frame_image)
    first_path = os.path.join(settings.folder, naming.frame_file_name(stem, frames[0], ".exr"))
    made_by_us = naming.made_by_lotus(kind, first_prepared.source_image or first_prepared.name)
    name, image = naming.claim_image(base, lambda i: made_by_us(i) and i.source == 'SEQUENCE')
    if image is not None:
        image.filepath = first_path
        image.reload()
    else:
        image = bpy.data.images.load(first_path, check_existing=False)
        image.name = name
        image.source = 'SEQUENCE'
    image.colorspace_settings.is_data = True
    _store_path(image, first_path)
    _tag(image, kind, first_prepared)
    image.pop("lotus_frame", None)
    image["lotus_frames"] = [int(frames[0]), int(frames[-1])]
    return [image]


# -- files of one map at given paths (the command line writes these, then renames them) -----------

def write_map_files(values: np.ndarray, kind: str, width: int, height: int, paths: dict,
                    convention: str = "OPENGL") -> list[str]:
    """Write one map's files exactly where ``paths`` says: ``exr`` always; ``preview`` (depth,
    colour-mapped PNG at the map's own size) and ``png`` (normals, 16-bit in ``convention``) when
    present. Same encodings as the images the add-on makes. Returns the paths written."""
    is_depth = kind != protocol.KIND_NORMAL
    written = []
    image = bpy.data.images.new("lotus_map_file", width, height, alpha=False, float_buffer=True,
                                is_data=True)
    try:
        with WriterScene() as writer:
            _fill_image(image, values, _grey if is_depth else _normal_map_encoder("OPENGL"))
            written.append(writer.write(image, paths["exr"], 'OPEN_EXR', '32'))
            if not is_depth and paths.get("png"):
                written.append(write_normal_png(values, width, height, paths["png"],
                                                convention))
            if is_depth and paths.get("preview"):
                preview = bpy.data.images.new("lotus_map_preview", values.shape[1],
                                              values.shape[0], alpha=False)
                try:
                    colours = maps.colorize_depth(np.asarray(values),
                                                  near_is_high=(kind == protocol.KIND_DISPARITY))
                    _fill_image(preview, colours, lambda strip: strip)
                    written.append(writer.write(preview, paths["preview"], 'PNG', '8'))
                finally:
                    bpy.data.images.remove(preview)
    finally:
        bpy.data.images.remove(image)
    return written


def read_map(path: str) -> np.ndarray:
    """The first channel of a map file (top row first), as Blender reads it."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        width, height, channels = image.size[0], image.size[1], image.channels
        if width == 0 or height == 0:
            raise OutputError(f"Cannot read {path}")
        buffer = np.empty(width * height * channels, dtype=np.float32)
        image.pixels.foreach_get(buffer)
    finally:
        bpy.data.images.remove(image)
    return buffer.reshape(height, width, channels)[::-1, :, 0].copy()
