"""Every input kind -> a float32 ``.npy`` of sRGB-encoded display values for the worker.

Colour decision (README "Conventions"): the model was trained on ordinary sRGB photos, so it is
given sRGB-encoded display values in [0, 1]:
  - 8-bit images in sRGB (or a data colour space) are passed as stored;
  - float images (EXR, HDR, 16-bit PNG/TIFF, which Blender holds in scene-linear) and 8-bit
    images tagged with a linear colour space go through the plain sRGB OETF, clamped to [0, 1]
    (not the scene's view transform: a photo should not depend on the scene's look);
  - the Render Result, the compositor Viewer node, multilayer passes and movie frames are saved by
    Blender itself first, with the scene's view transform for renders (what the artist sees).
Alpha is dropped (the model sees colour only). Grayscale images come out as R = G = B.

Large images are reduced on the Blender side to what the worker needs (twice the processing
resolution), reading Blender's pixels once into one float32 buffer and averaging it strip by
strip, so no second full-size float copy is ever made.
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, field

import bpy
import numpy as np

from ..core import exif, geometry, image_files
from ..core.shading import linear_to_srgb
from . import compat, naming

# The worker never needs more than this many pixels per processing-resolution pixel of edge.
OVERSAMPLE = 2
RENDER_LIKE_TYPES = ('RENDER_RESULT', 'COMPOSITING')
# Above this many pixels a file image's own buffer is freed once read (README, huge images).
FREE_AFTER_READING_PIXELS = 4096 * 4096


class InputError(RuntimeError):
    """An input that cannot be read; the message is shown to the artist as is."""


@dataclass
class PreparedInput:
    """One image as the worker will see it, plus what the result images need to know."""
    name: str                       # results are named after it: "<name>_depth"
    npy_path: str                   # display values, top row first, maybe reduced
    full_width: int                 # the source's size: results are brought back to it
    full_height: int
    source_image: str = ""          # Blender image name (lotus_source)
    source_path: str = ""           # absolute file path of the photo, when there is one
    focal_35mm: float = 0.0         # 0 = unknown
    frame: int | None = None        # frame number for sequences and movies
    notes: list = field(default_factory=list)   # warnings for the artist (incomplete file...)


# -- pixels -> display values -------------------------------------------------------------------

def _needs_oetf(image: bpy.types.Image) -> bool:
    settings = image.colorspace_settings
    if settings.is_data or settings.name in ("Non-Color", "Raw"):
        return False
    if image.is_float:
        return True  # Blender converts float buffers to scene-linear on load
    return "linear" in settings.name.lower()


def _reduction_factors(width: int, height: int, processing_resolution: int) -> tuple[int, int]:
    """Integer (across, down) averaging factors; an edge shorter than the factor is kept whole,
    so strips down to one pixel wide work (their aspect matters to no one)."""
    if processing_resolution <= 0:
        return 1, 1
    target = OVERSAMPLE * processing_resolution
    factor = max(1, math.ceil(max(width, height) / target))
    return min(factor, width), min(factor, height)


def image_display_array(image: bpy.types.Image, processing_resolution: int) -> np.ndarray:
    """HxWx3 float32 display values, top row first, reduced by an integer area average."""
    width, height = image.size[0], image.size[1]
    channels = image.channels
    if width <= 0 or height <= 0 or channels <= 0 or len(image.pixels) == 0:
        raise InputError(f"'{image.name}' has no pixels Blender can read "
                         f"(missing, empty or corrupt file?)")
    needs_oetf = _needs_oetf(image)  # asked now: it loads the image, which may be freed below
    pixels = np.empty(width * height * channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    if width * height > FREE_AFTER_READING_PIXELS and image.source == 'FILE' \
            and image.packed_file is None and not image.is_dirty:
        # A huge file image's own buffer (8-bit or float) goes once copied out, so Blender holds
        # one full-size copy at a time; Blender reads the file again when it is shown.
        image.buffers_free()
    pixels = pixels.reshape(height, width, channels)
    across, down = _reduction_factors(width, height, processing_resolution)
    out_h, out_w = max(1, height // down), max(1, width // across)
    reduced = across > 1 or down > 1
    if not reduced:
        result = np.ascontiguousarray(pixels[::-1, :, :3] if channels >= 3
                                      else np.repeat(pixels[::-1, :, :1], 3, axis=2))
    else:
        result = np.empty((out_h, out_w, 3), dtype=np.float32)
    for row in range(out_h if reduced else 0):
        # Blender rows are bottom-up: output row 0 is the top of the picture.
        top = height - (row + 1) * down
        strip = pixels[top:top + down, :out_w * across, :3]
        if channels < 3:  # one- or two-channel buffers: grey
            strip = np.repeat(pixels[top:top + down, :out_w * across, :1], 3, axis=2)
        block = strip.reshape(strip.shape[0], out_w, across, 3).mean(axis=(0, 2))
        result[row] = block
    del pixels
    if needs_oetf:
        linear_to_srgb(result)
    else:
        np.clip(result, 0.0, 1.0, out=result)
    return result


def _write_npy(array: np.ndarray, job_dir: str, stem: str) -> str:
    path = os.path.join(job_dir, f"{stem}.npy")
    try:
        np.save(path, np.ascontiguousarray(array, dtype=np.float32))
    except OSError as ex:
        if os.path.exists(path):
            os.remove(path)
        raise InputError(f"Cannot write the job's input into {job_dir}: "
                         f"{(ex.strerror or str(ex)).lower()}") from None
    return path


def _safe_stem(name: str) -> str:
    """A job file's name: ASCII, short (the worker adds its own suffixes to it)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:40] or "image"


def _source_name(image: bpy.types.Image) -> str:
    return naming.stem(image.name)


def _abs_path(image: bpy.types.Image) -> str:
    if image.source not in ('FILE', 'SEQUENCE', 'MOVIE') or not image.filepath or image.packed_file:
        return ""
    return os.path.normpath(bpy.path.abspath(image.filepath, library=image.library))


def camera_focal_35mm(scene: bpy.types.Scene) -> float:
    """35 mm-equivalent focal length (diagonal, as EXIF's FocalLengthIn35mmFilm, the convention of
    core.geometry.lens_from_35mm) of the scene camera; 0 when it is not a perspective camera."""
    camera = scene.camera
    if camera is None or camera.type != 'CAMERA' or camera.data.type != 'PERSP':
        return 0.0
    data = camera.data
    scale = scene.render.resolution_percentage / 100.0
    width = max(1, int(scene.render.resolution_x * scale))
    height = max(1, int(scene.render.resolution_y * scale))
    sensor = data.sensor_height if data.sensor_fit == 'VERTICAL' else data.sensor_width
    intrinsics = geometry.intrinsics_from_lens(data.lens, sensor, width, height, data.sensor_fit)
    return float(geometry.FULL_FRAME_DIAGONAL_MM * intrinsics.focal_px / math.hypot(width, height))


def exif_focal_35mm(path: str) -> float:
    """The 35 mm-equivalent focal length a camera wrote into a JPEG or TIFF (EXIF, read by
    core.exif), or 0 when there is none. Blender reads no EXIF itself."""
    return exif.focal_35mm_from_file(path) or 0.0


# -- one Blender image with pixels ----------------------------------------------------------------

def prepare_image(image: bpy.types.Image, job_dir: str, processing_resolution: int, index: int,
                  name: str | None = None, source_path: str | None = None) -> PreparedInput:
    """Packed, generated, edited (dirty) and file images alike: read from Blender's pixels."""
    refuse_unreadable(image)
    width, height = image.size  # before reading: asking after would load a freed huge image again
    array = image_display_array(image, processing_resolution)
    full_name = name or _source_name(image)
    name = naming.short_stem(full_name)
    path = _write_npy(array, job_dir, f"{index:04d}_{_safe_stem(name)}")
    source_path = _abs_path(image) if source_path is None else source_path
    notes = file_notes(source_path, image) if source_path else []
    if name != full_name:
        notes.append(naming.shortened_note(full_name, name))
    return PreparedInput(name=name, npy_path=path, full_width=width,
                         full_height=height, source_image=image.name,
                         source_path=source_path,
                         focal_35mm=exif_focal_35mm(source_path) if source_path else 0.0,
                         notes=notes)


def file_notes(path: str, image: bpy.types.Image | None = None) -> list[str]:
    """Warnings about a source file Blender reads without complaint: a JPEG cut short (its missing
    part comes out grey), more frames or pages than the one used."""
    notes = []
    filename = os.path.basename(path)
    if image_files.jpeg_complete(path) is False:
        notes.append(f"{filename} is incomplete (the file ends before the picture does): the "
                     f"missing part comes out grey; copy or download it again")
    frames = image_files.frame_count(path)
    if frames > 1 or (image is not None and image.source == 'MOVIE'):
        what = "pages" if filename.lower().endswith((".tif", ".tiff")) else "frames"
        count = f"{frames} {what}" if frames > 1 else f"several {what}"
        notes.append(f"{filename} has {count}: only the first is used (for every frame, open it "
                     f"in the Image Editor and run Lotus on the Active Image)"
                     if what == "frames" else
                     f"{filename} has {count}: only the first is used")
    return notes


def refuse_incomplete_exr(path: str, label: str = "") -> None:
    """InputError for an OpenEXR file cut short: Blender crashes reading its pixels."""
    if path.lower().endswith(".exr") and os.path.isfile(path) \
            and image_files.exr_complete(path) is False:
        raise InputError(f"{label or os.path.basename(path)} is incomplete (the file ends before "
                         f"the picture does); copy or render it again")


def refuse_unreadable(image: bpy.types.Image) -> None:
    """Before anything reads a Blender image's pixels: refuse one whose pixels would come from an
    OpenEXR file cut short (Blender 5.0 crashes reading it, also when it is already loaded).
    Packed and edited (dirty) images hold their own pixels."""
    if image.source in ('FILE', 'SEQUENCE') and image.packed_file is None and not image.is_dirty:
        path = _abs_path(image)
        if path:
            refuse_incomplete_exr(path, f"'{image.name}' ({os.path.basename(path)})")


def load_image_file(path: str) -> bpy.types.Image:
    """A file as a Blender image (reusing one already loaded); clear error when unreadable."""
    path = os.path.abspath(bpy.path.abspath(path))
    if not os.path.isfile(path):
        raise InputError(f"File not found: {path}")
    if os.path.getsize(path) == 0:
        raise InputError(f"Empty file (0 bytes): {os.path.basename(path)}")
    # Blender crashes on the pixels of a truncated OpenEXR: never let it read one.
    refuse_incomplete_exr(path)
    known = set(bpy.data.images)
    try:
        image = bpy.data.images.load(path, check_existing=True)
    except RuntimeError as ex:
        raise InputError(f"Cannot read image {os.path.basename(path)}: {ex}") from None
    if image.source == 'FILE' and (image.size[0] == 0 or len(image.pixels) == 0):
        bpy.data.images.remove(image)
        raise InputError(f"Cannot read image {os.path.basename(path)} (corrupt or unsupported)")
    if image not in known:
        # Loaded for Lotus, used by nothing yet: keep it in the saved .blend with its results.
        image.use_fake_user = True
    return image


def prepare_file(path: str, job_dir: str, processing_resolution: int, index: int) -> PreparedInput:
    image = load_image_file(path)
    source_path = os.path.abspath(bpy.path.abspath(path))
    # Named after the file: Blender cuts a long name to fit its datablock names (63 bytes to 4.5).
    return prepare_image(image, job_dir, processing_resolution, index,
                         name=naming.stem(os.path.basename(source_path)), source_path=source_path)


# -- things without pixel access: let Blender save them first ------------------------------------

class _TemporaryScene:
    """A throwaway scene for Blender's own image writing / compositing / sequencer rendering."""

    def __init__(self, name: str):
        self.name = name
        self.scene = None
        self.node_group = None

    def __enter__(self):
        self.scene = bpy.data.scenes.new(self.name)
        self.scene.render.resolution_percentage = 100
        return self.scene

    def __exit__(self, *exc):
        if self.scene is not None:
            bpy.data.scenes.remove(self.scene)
        if self.node_group is not None:
            bpy.data.node_groups.remove(self.node_group)
        return False


def render_scene(scene: bpy.types.Scene) -> None:
    """Render ``scene`` at its own current frame into the Render Result.

    ``bpy.ops.render.render(scene=NAME)`` first copies the context scene's current frame into the
    scene it is given (render_internal.cc, screen_render_single_layer_set; 4.2 to 5.3), so a
    throwaway scene rendered that way always shows the artist's frame, not its own: a movie gave
    its first frame for every frame. Made the context's scene, it keeps its own frame."""
    with bpy.context.temp_override(scene=scene, view_layer=scene.view_layers[0]):
        bpy.ops.render.render()


def _load_temporary(path: str, job_dir: str, processing_resolution: int, index: int,
                    name: str, source_image: str, focal_35mm: float = 0.0,
                    frame: int | None = None, source_path: str = "") -> PreparedInput:
    if not os.path.isfile(path) or (path.endswith(".exr") and
                                    image_files.exr_complete(path) is False):
        # Blender could not write it whole (a full disk): never let it read a cut EXR.
        raise InputError(f"Cannot write a temporary copy of '{source_image}' into {job_dir}")
    temporary = bpy.data.images.load(path, check_existing=False)
    try:
        prepared = prepare_image(temporary, job_dir, processing_resolution, index, name=name,
                                 source_path=source_path)
    finally:
        bpy.data.images.remove(temporary)
    os.remove(path)
    prepared.source_image = source_image
    prepared.focal_35mm = focal_35mm
    prepared.frame = frame
    return prepared


def prepare_render_like(image: bpy.types.Image, scene: bpy.types.Scene, job_dir: str,
                        processing_resolution: int, index: int) -> PreparedInput:
    """Render Result or Viewer Node: saved with the scene's view transform (what the artist
    sees). Blender reads the render from the scene given to save_render, so the scene's own
    image settings are borrowed for the moment and restored."""
    path = os.path.join(job_dir, f"{index:04d}_render.png")
    settings = scene.render.image_settings
    saved = compat.image_format_state(settings)
    try:
        compat.set_image_format(settings, 'PNG', 'RGB', '16')
        image.save_render(path, scene=scene)
    except RuntimeError:
        raise InputError(f"'{image.name}' is empty: render (or run the compositor) "
                         f"first") from None
    finally:
        compat.restore_image_format(settings, saved)
    name = f"{scene.name}_render" if image.type == 'RENDER_RESULT' else "viewer"
    return _load_temporary(path, job_dir, processing_resolution, index, name,
                           image.name, focal_35mm=camera_focal_35mm(scene))


def exr_header(path: str) -> tuple[tuple[int, int], list[str]]:
    """(width, height) and channel names from an OpenEXR header (core.image_files; Blender
    reports a multilayer file as 0x0 and has no Python access to its layers)."""
    name = os.path.basename(path)
    try:
        size, channels = image_files.exr_header(path)
    except ValueError:
        raise InputError(f"{name} is not an OpenEXR file") from None
    except (EOFError, struct.error):
        size, channels = None, []
    if size is None:
        raise InputError(f"{name} has no data window")
    return size, channels


def multilayer_passes(image: bpy.types.Image) -> list[tuple[str, str]]:
    """(layer, pass) pairs of a multilayer EXR from its channel names (Layer.Pass.Channel)."""
    _, channels = exr_header(_abs_path(image))
    pairs = []
    for channel in channels:
        parts = channel.split(".")
        if len(parts) >= 3 and (parts[0], parts[-2]) not in pairs:
            pairs.append((parts[0], parts[-2]))
    return pairs


def _compositor_for(guard: _TemporaryScene, scene: bpy.types.Scene):
    """An Image node and the socket that becomes the render (compat.new_compositor)."""
    group, owned, output_socket = compat.new_compositor(scene, "lotus_extract_pass")
    guard.node_group = owned
    return group.nodes.new("CompositorNodeImage"), output_socket


def prepare_multilayer_pass(image: bpy.types.Image, layer: str, pass_name: str, job_dir: str,
                            processing_resolution: int, index: int) -> PreparedInput:
    """One pass of a multilayer EXR, extracted by Blender's compositor into a plain EXR."""
    source_path = _abs_path(image)
    if not source_path or not os.path.isfile(source_path):
        raise InputError(f"'{image.name}': the multilayer EXR file is not on disk")
    (width, height), _ = exr_header(source_path)
    available = multilayer_passes(image)
    if (layer, pass_name) not in available:
        choices = ", ".join(f"{l}/{p}" if l else p for l, p in available)
        raise InputError(f"'{image.name}' has no pass {layer}/{pass_name} (it has: {choices})")
    path = os.path.join(job_dir, f"{index:04d}_pass.exr")
    guard = _TemporaryScene("lotus_extract_pass")
    with guard as temporary:
        temporary.render.resolution_x, temporary.render.resolution_y = width, height
        node, output_socket = _compositor_for(guard, temporary)
        node.image = image
        if layer:
            node.layer = layer
        if pass_name not in node.outputs:
            raise InputError(f"'{image.name}': Blender cannot read the pass {pass_name}")
        node.id_data.links.new(node.outputs[pass_name], output_socket)
        # No Render Layers node: Blender runs only the compositor, nothing is rendered.
        render_scene(temporary)
        settings = temporary.render.image_settings
        settings.file_format = 'OPEN_EXR'
        settings.color_depth = '32'
        settings.color_mode = 'RGB'
        bpy.data.images["Render Result"].save_render(path, scene=temporary)
    name = f"{_source_name(image)}_{pass_name}"
    return _load_temporary(path, job_dir, processing_resolution, index, name, image.name,
                           source_path=source_path)


# -- image sequences and movies -------------------------------------------------------------------

_FRAME_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def frame_ranges_text(frames: list[int]) -> str:
    """[3, 5, 6, 7] -> "3, 5-7"."""
    parts, frames = [], sorted(frames)
    start = previous = None
    for frame in frames + [None]:
        if start is not None and frame != previous + 1:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = None
        if start is None:
            start = frame
        previous = frame
    return ", ".join(parts)


def missing_frames_note(label: str, missing: list[int], used: int) -> str:
    """The one line for frames a sequence or movie lacks (README "Sequences and render farms":
    they are skipped, the rest is used)."""
    what = "frame" if len(missing) == 1 else "frames"
    return (f"{label}: {what} {frame_ranges_text(missing)} missing, skipped "
            f"({used} frame{'s' if used != 1 else ''} used)")


def _sequence_parts(image: bpy.types.Image) -> tuple[str, str, int, str, str]:
    """(folder, prefix, digits, suffix, extension) of a sequence's file name."""
    folder, filename = os.path.split(_abs_path(image))
    stem, ext = os.path.splitext(filename)
    match = _FRAME_DIGITS.search(stem)
    if match is None:
        raise InputError(f"'{image.name}' has no frame number in its file name")
    return folder, stem[:match.start()], len(match.group(1)), stem[match.end():], ext


def sequence_frames(image: bpy.types.Image) -> list[int]:
    """The frame numbers whose files exist (not empty), in order, found in the sequence's folder
    (Blender only counts a sequence's frames when it is shown)."""
    folder, prefix, digits, suffix, ext = _sequence_parts(image)
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix + ext) + "$")
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    found = []
    for entry in entries:
        match = pattern.match(entry)
        # Blender names frame f with at least the first file's digits: 0007, 0123, 12345.
        if match and str(int(match.group(1))).zfill(digits) == match.group(1) \
                and os.path.getsize(os.path.join(folder, entry)) > 0:
            found.append(int(match.group(1)))
    return sorted(found)


def frame_range(image: bpy.types.Image) -> tuple[int, int]:
    """The frames an image sequence or movie has, numbered as its files are (1-based for movies);
    a sequence's range runs from its first file to its last, over any gap."""
    if image.source == 'MOVIE':
        return 1, max(1, image.frame_duration)
    if image.source == 'SEQUENCE':
        found = sequence_frames(image)
        if found:
            return found[0], found[-1]
        number = _FRAME_DIGITS.search(os.path.splitext(os.path.basename(_abs_path(image)))[0])
        return (int(number.group(1)),) * 2 if number else (1, 1)
    return 1, 1


def _sequence_file(image: bpy.types.Image, frame: int) -> str:
    folder, prefix, digits, suffix, ext = _sequence_parts(image)
    return os.path.join(folder, prefix + str(frame).zfill(digits) + suffix + ext)


def _load_temporary_frame(path, job_dir, processing_resolution, index, name) -> PreparedInput:
    """One sequence frame through its own throwaway image (the sequence image shows one frame)."""
    refuse_incomplete_exr(path)
    frame_image = bpy.data.images.load(path, check_existing=False)
    try:
        return prepare_image(frame_image, job_dir, processing_resolution, index, name=name,
                             source_path=path)
    finally:
        bpy.data.images.remove(frame_image)


def check_movie(image: bpy.types.Image) -> str:
    """The movie's file path, or InputError in one line when Blender cannot read all of it: a
    missing file, one cut short (FFmpeg would repeat its last whole frame, or open nothing and
    leave a 0x0 image), one Blender cannot decode."""
    path = _abs_path(image)
    filename = os.path.basename(path)
    if not path or not os.path.isfile(path):
        raise InputError(f"Movie file not found: {path or image.name}")
    if image_files.movie_complete(path) is False:
        raise InputError(f"{filename} is incomplete (the file ends before the movie does, or "
                         f"its index is missing); copy or render it again")
    if image.size[0] <= 0 or image.size[1] <= 0:
        raise InputError(f"Cannot read movie {filename}: Blender finds no frames in it "
                         f"(damaged, or a codec this Blender cannot decode)")
    return path


class MovieFrames:
    """Frames of a movie decoded by Blender's own movie reader (FFmpeg), one at a time, through a
    throwaway scene whose sequencer holds the movie, saved as 16-bit PNG with the Standard view
    transform (the frame as stored, sRGB-encoded)."""

    def __init__(self, image: bpy.types.Image):
        self.image = image
        self.path = check_movie(image)
        self.frame_count = max(1, image.frame_duration)
        self._guard = _TemporaryScene("lotus_movie_frames")
        self.scene = self._guard.__enter__()
        try:
            self.scene.render.resolution_x, self.scene.render.resolution_y = image.size
            self.scene.view_settings.view_transform = 'Standard'
            editor = self.scene.sequence_editor_create()
            compat.sequencer_strips(editor).new_movie("lotus_movie", self.path, 1, 1)
            compat.set_image_format(self.scene.render.image_settings, 'PNG', 'RGB', '16')
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._guard is not None:
            self._guard.__exit__(None, None, None)
            self._guard = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def prepare(self, frame: int, job_dir: str, processing_resolution: int, index: int,
                name: str) -> PreparedInput:
        if not 1 <= frame <= self.frame_count:
            raise InputError(f"{os.path.basename(self.path)} has no frame {frame} "
                             f"(it has frames 1-{self.frame_count})")
        self.scene.frame_current = frame
        render_scene(self.scene)
        path = os.path.join(job_dir, f"{index:04d}_frame.png")
        bpy.data.images["Render Result"].save_render(path, scene=self.scene)
        return _load_temporary(path, job_dir, processing_resolution, index, name,
                               self.image.name, frame=frame, source_path=self.path)


def prepare_frames(image: bpy.types.Image, first: int, last: int, job_dir: str,
                   processing_resolution: int, start_index: int = 0) -> list[PreparedInput]:
    """One input per frame of an image sequence (its files) or a movie (its decoded frames).
    Frames the sequence or movie lacks are skipped with one note on the first input; none at all
    is an InputError."""
    if last < first:
        raise InputError(f"Empty frame range {first}-{last}")
    wanted = range(first, last + 1)
    if image.source == 'SEQUENCE':
        # "clip_0001.png" -> "clip": results are numbered by frame themselves.
        _, prefix, digits, suffix, ext = _sequence_parts(image)
        base = (prefix + suffix).rstrip("_-. ") or _source_name(image)
        label = prefix + "#" * digits + suffix + ext
        present = set(sequence_frames(image))
        frames = [frame for frame in wanted if frame in present]
        reader = None
    elif image.source == 'MOVIE':
        base, label = _source_name(image), os.path.basename(_abs_path(image)) or image.name
        reader = MovieFrames(image)
        frames = [frame for frame in wanted if 1 <= frame <= reader.frame_count]
    else:
        raise InputError(f"'{image.name}' is not an image sequence or a movie")
    prepared = []
    try:
        if not frames:
            raise InputError(f"{label} has none of the frames {first}-{last}")
        for offset, frame in enumerate(frames):
            index = start_index + offset
            if reader is not None:
                item = reader.prepare(frame, job_dir, processing_resolution, index, base)
            else:
                try:
                    item = _load_temporary_frame(_sequence_file(image, frame), job_dir,
                                                 processing_resolution, index, base)
                except RuntimeError as ex:
                    raise InputError(f"Cannot read frame {frame} of '{image.name}': "
                                     f"{ex}") from None
            item.source_image = image.name
            item.frame = frame
            prepared.append(item)
    finally:
        if reader is not None:
            reader.close()
    # One line per thing to say, not one per frame.
    notes = list(dict.fromkeys(note for item in prepared for note in item.notes))
    for item in prepared:
        item.notes = []
    missing = [frame for frame in wanted if frame not in frames]
    if missing:
        notes.append(missing_frames_note(label, missing, len(frames)))
    prepared[0].notes = notes
    return prepared


# -- what the artist points at --------------------------------------------------------------------

def images_from_context(context) -> list[bpy.types.Image]:
    """The active Image Editor image, or the selected Image Texture nodes of the edited / active
    material's node tree."""
    space = getattr(context, "space_data", None)
    if space is not None and space.type == 'IMAGE_EDITOR':
        return [space.image] if space.image is not None else []
    tree = None
    if space is not None and space.type == 'NODE_EDITOR':
        tree = space.edit_tree
    if tree is None:
        obj = getattr(context, "active_object", None)
        material = obj.active_material if obj is not None else None
        tree = material.node_tree if material is not None else None
    if tree is None:
        return []
    images = []
    for node in tree.nodes:
        if node.type == 'TEX_IMAGE' and node.select and node.image is not None \
                and node.image not in images:
            images.append(node.image)
    return images
