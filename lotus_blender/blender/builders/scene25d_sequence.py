"""2.5D scenes of image sequences and movies: the mesh, its materials and the layer behind the
tears follow the frames.

Predict on a sequence or movie gives image sequences ("<name>_depth", "<name>_normal": files
"<name>_depth_0001.exr"..., numbered like the source's frames, 1-based for movies; blender.outputs).
One FrameTiming maps the scene's frames onto those numbers, the rule of Blender's own image users:
the scene frame f shows frame clamp(f - start + 1, 1, duration) + offset. The geometry nodes read
their images at that frame (geonodes: the modifier's Frame, driven by the scene's frame, into Image
Texture's Frame), the materials' image
textures follow through their image users (use_auto_refresh, frame_start/offset/duration), and
the layer behind the tears (core.fill, per frame) is written as two more image sequences beside
the depth's files ("<name>_behind_0001.exr", "<name>_fill_0001.png|exr"), each file atomically.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass

import bpy
import numpy as np

from ...core import image_files, maps
from .. import compat, naming, outputs
from ..files import WriterScene, write_atomically
from ..inputs import frames as input_frames
from ..inputs.renders import render_scene
from . import common, geonodes

ANIMATED_SOURCES = ('SEQUENCE', 'MOVIE')


def is_animated(image) -> bool:
    """An image sequence or a movie (a still image has one picture whatever the frame)."""
    return image is not None and image.source in ANIMATED_SOURCES


@dataclass(frozen=True)
class FrameTiming:
    """Scene frames -> an image sequence's frame numbers (Blender's ImageUser rule)."""
    start: int          # the scene frame that shows the first frame
    offset: int         # the first frame's number is offset + 1
    duration: int       # frames from the first to the last (held before and after)

    def image_frame(self, scene_frame: int) -> int:
        return min(max(int(scene_frame) - self.start + 1, 1), max(self.duration, 1)) + self.offset

    def scene_frame(self, image_frame: int) -> int:
        return int(image_frame) - self.offset + self.start - 1


def frame_span(image) -> tuple[int, int]:
    """(first, last) frame numbers of a sequence or movie: the ones Predict recorded with a
    result ("lotus_frames"), else what its files (or the movie) hold."""
    span = image.get("lotus_frames")
    if span is not None and len(span) == 2:
        return int(span[0]), int(span[1])
    return input_frames.frame_range(image)


def frame_numbers(image) -> list[int]:
    """The frames of a sequence or movie that exist (a sequence's gaps left out)."""
    first, last = frame_span(image)
    if image.source == 'SEQUENCE':
        return [frame for frame in input_frames.sequence_frames(image) if first <= frame <= last]
    return list(range(first, last + 1))


def timing_for(images, scene) -> FrameTiming | None:
    """The timing of a build from these images (depth first, then photo): the first animated one's
    frames start at the scene's first frame; None when every image is a still."""
    for image in images:
        if is_animated(image):
            first, last = frame_span(image)
            return FrameTiming(scene.frame_start, first - 1, last - first + 1)
    return None


def timing_of(obj) -> FrameTiming | None:
    """The timing a 2.5D mesh was built with (its modifier's Frame inputs), None for a still."""
    from .scene25d import MODIFIER_NAME
    modifier = obj.modifiers.get(MODIFIER_NAME) if obj is not None else None
    if modifier is None or modifier.type != 'NODES' or modifier.node_group is None:
        return None
    try:
        values = [compat.get_modifier_input(modifier, geonodes.input_identifier(modifier.node_group, name))
                  for name in ("Frame Start", "Frame Offset", "Frame Duration")]
    except KeyError:        # built before sequences were followed
        return None
    start, offset, duration = (int(value) for value in values)
    return FrameTiming(start, offset, duration) if duration > 0 else None


def set_geonodes_timing(obj, modifier, timing: FrameTiming | None) -> None:
    """The mesh's images follow the frames: its modifier's Frame driven by the scene's frame (the
    active scene's, a Context Property variable: no Python, works without auto-run scripts)."""
    if timing is None:
        return
    geonodes.set_inputs(modifier, Frame_Start=timing.start, Frame_Offset=timing.offset,
                        Frame_Duration=timing.duration)
    key = geonodes.input_identifier(modifier.node_group, "Frame")
    driver = obj.driver_add(compat.modifier_input_data_path(modifier, key)).driver
    driver.type = 'AVERAGE'
    variable = driver.variables.new()
    variable.type = 'CONTEXT_PROP'
    variable.targets[0].context_property = 'ACTIVE_SCENE'
    variable.targets[0].data_path = "frame_current"


def follow_frames(owner, image, timing: FrameTiming | None) -> None:
    """Make an image texture node (or an ImageTexture) show the image at the scene's frame."""
    if timing is None or not is_animated(image):
        return
    user = owner.image_user
    user.frame_start = timing.start
    user.frame_offset = timing.offset
    user.frame_duration = timing.duration
    user.use_cyclic = False
    user.use_auto_refresh = True    # re-evaluated on every frame change, in renders too


# ---------------------------------------------------------------------------------------------
# One frame's pixels.

class FrameReader:
    """One frame at a time of a sequence (its files) or a movie (decoded by Blender's movie reader
    through inputs.frames.MovieFrames); a still image gives its own pixels for every frame."""

    def __init__(self, image):
        self.image = image
        self._movie = None
        self._folder = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._movie is not None:
            self._movie.close()
            self._movie = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
        return False

    def still(self, frame: int, name: str = "lotus_frame"):
        """A throwaway still image of the frame (the caller removes it), with the image's colour
        space and custom properties (its kind, source, recorded focal)."""
        image = self.image
        if image.source == 'SEQUENCE':
            path = input_frames.sequence_file(image, frame)
            if not os.path.isfile(path):
                raise ValueError(f"frame {frame} of {image.name!r} is missing ({path})")
            still = bpy.data.images.load(path, check_existing=False)
        elif image.source == 'MOVIE':
            if self._movie is None:
                self._movie = input_frames.MovieFrames(image)
                # 8-bit like the movie's own buffer: the frame's values as stored (a 16-bit PNG
                # would load as a linear float image).
                compat.set_image_format(self._movie.scene.render.image_settings, 'PNG', 'RGB', '8')
                self._folder = tempfile.TemporaryDirectory(prefix="lotus_movie_")
            if not 1 <= frame <= self._movie.frame_count:
                raise ValueError(f"{image.name!r} has no frame {frame}")
            scene = self._movie.scene
            scene.frame_current = frame
            render_scene(scene)
            path = os.path.join(self._folder.name, f"frame_{frame:06d}.png")
            bpy.data.images["Render Result"].save_render(path, scene=scene)
            still = bpy.data.images.load(path, check_existing=False)
            still.pack()        # the temporary file goes with the reader
        else:
            return None
        still.name = name
        still.colorspace_settings.name = image.colorspace_settings.name
        for key in image.keys():
            still[key] = image[key]
        still.pop("lotus_frames", None)
        return still

    def pixels(self, frame: int) -> np.ndarray:
        """RGBA float32 (H, W, 4), top row first, as the image stores them."""
        if not is_animated(self.image):
            return common.read_pixels(self.image)
        still = self.still(frame)
        try:
            if min(still.size) < 1:
                raise ValueError(f"cannot read frame {frame} of {self.image.name!r}")
            return common.read_pixels(still)
        finally:
            bpy.data.images.remove(still)


def key_frame(image, timing: FrameTiming, scene_frame: int) -> int:
    """The existing frame of the sequence nearest to what the scene frame shows."""
    wanted = timing.image_frame(scene_frame)
    found = frame_numbers(image)
    if not found:
        raise ValueError(f"{image.name!r}: none of its frames' files exist")
    return min(found, key=lambda frame: (abs(frame - wanted), frame))


def key_stills(timing: FrameTiming | None, scene_frame: int, images) -> list:
    """Each image as a still to read pixels from: stills as they are, a sequence's or movie's
    frame nearest to what scene_frame shows as a throwaway still ("lotus_key_frame" says which;
    remove_stills removes them)."""
    stills, made = [], {}
    for image in images:
        if timing is None or not is_animated(image):
            stills.append(image)
            continue
        if image.name not in made:      # the photo may be the depth map itself
            frame = key_frame(image, timing, scene_frame)
            with FrameReader(image) as reader:
                made[image.name] = reader.still(frame, f"lotus_key_frame {frame}")
            made[image.name]["lotus_key_frame"] = frame
        stills.append(made[image.name])
    return stills


def remove_stills(stills, originals) -> None:
    throwaway = {still.name: still for still, original in zip(stills, originals)
                 if still is not None and still is not original}
    for still in throwaway.values():
        bpy.data.images.remove(still)


def image_size(image) -> tuple[int, int]:
    """(width, height) of a still, or of a sequence's or movie's frames (Blender reports 0 x 0
    for a sequence none of whose frames has been shown yet)."""
    if image is None:
        return 0, 0
    if not is_animated(image) or min(image.size) > 0:
        return tuple(image.size)
    found = frame_numbers(image)
    if not found:
        return 0, 0
    with FrameReader(image) as reader:
        still = reader.still(found[0])
        try:
            return tuple(still.size)
        finally:
            bpy.data.images.remove(still)


# ---------------------------------------------------------------------------------------------
# The layer behind the tears, per frame.

def _sequence_image(path, name, colourspace, kind, source):
    image = bpy.data.images.load(path, check_existing=False)
    image.name = name
    image.source = 'SEQUENCE'
    image.colorspace_settings.name = colourspace
    image.filepath = outputs.stored_path(path)
    image["lotus_kind"] = kind
    image["lotus_source"] = source
    return image


def write_behind_sequence(context, name, depth, photo, compute, folder):
    """The layer behind the tears of every frame of the depth sequence: compute(depth values
    (H, W), photo RGBA or None) -> (behind RGBA, filled photo RGBA or None, opening) is run per
    frame; the results are written to folder as "<name>_behind_FFFF.exr" (float) and
    "<name>_fill_FFFF" (16-bit PNG for a byte photo, float EXR for a float one: the photo's values
    as stored), never over an existing file, each atomically; a failure removes what was written.

    Returns (behind image sequence, fill image sequence or None, largest opening)."""
    numbers = frame_numbers(depth)
    if not numbers:
        raise ValueError(f"{depth.name!r}: none of its frames' files exist")
    behind_stem = outputs.unique_sequence_stem(folder, naming.result_file_name(name, "behind"), ".exr", numbers)
    fill_extension = ".exr" if photo is not None and photo.is_float else ".png"
    fill_stem = outputs.unique_sequence_stem(folder, naming.result_file_name(name, "fill"), fill_extension, numbers)
    written, opening = [], 0.0
    behind_path = fill_path = None
    window_manager = getattr(context, "window_manager", None)
    if window_manager is not None:
        window_manager.progress_begin(0, len(numbers))
    try:
        with FrameReader(depth) as depth_frames, (FrameReader(photo) if photo is not None else contextlib.nullcontext()) as photo_frames, \
                WriterScene() as writer:
            scratch = None
            try:
                for index, frame in enumerate(numbers):
                    values = depth_frames.pixels(frame)[..., 0].astype(np.float64)
                    colours = photo_frames.pixels(frame) if photo_frames is not None else None
                    behind, filled, frame_opening = compute(values, colours)
                    opening = max(opening, frame_opening)
                    height, width = behind.shape[:2]
                    if scratch is None or tuple(scratch.size) != (width, height):
                        if scratch is not None:
                            bpy.data.images.remove(scratch)
                        scratch = bpy.data.images.new("lotus_behind_frame", width, height, alpha=False,
                                                      float_buffer=True, is_data=True)
                    path = os.path.join(folder, naming.frame_file_name(behind_stem, frame, ".exr"))
                    _write_float(writer, scratch, behind, path)
                    written.append(path)
                    behind_path = behind_path or path
                    if filled is not None:
                        path = os.path.join(folder, naming.frame_file_name(fill_stem, frame, fill_extension))
                        if fill_extension == ".png":
                            _write_png16(filled, path)
                        else:
                            fill_scratch = bpy.data.images.new("lotus_fill_frame", filled.shape[1], filled.shape[0],
                                                               alpha=False, float_buffer=True, is_data=True)
                            try:
                                _write_float(writer, fill_scratch, filled, path)
                            finally:
                                bpy.data.images.remove(fill_scratch)
                        written.append(path)
                        fill_path = fill_path or path
                    if window_manager is not None:
                        window_manager.progress_update(index + 1)
            finally:
                if scratch is not None:
                    bpy.data.images.remove(scratch)
    except BaseException:
        for path in written:
            try:
                os.remove(path)
            except OSError:
                pass
        raise
    finally:
        if window_manager is not None:
            window_manager.progress_end()
    source = photo.name if photo is not None else depth.name
    behind_image = _sequence_image(behind_path, name + "_behind", 'Non-Color', "behind", source)
    behind_image["lotus_behind_of"] = depth.name
    behind_image["lotus_frames"] = [numbers[0], numbers[-1]]
    fill_image = None
    if fill_path is not None:
        fill_image = _sequence_image(fill_path, name + "_fill", photo.colorspace_settings.name, "fill", photo.name)
        fill_image["lotus_frames"] = [numbers[0], numbers[-1]]
    return behind_image, fill_image, opening


def _write_float(writer, scratch, rgba, path):
    rgba = np.asarray(rgba, np.float32)
    buffer = np.ones((rgba.shape[0], rgba.shape[1], 4), np.float32)
    buffer[..., :min(4, rgba.shape[2])] = rgba[..., :4]
    scratch.pixels.foreach_set(np.ascontiguousarray(buffer[::-1]).ravel())
    scratch.update()
    writer.write(scratch, path, 'OPEN_EXR', '32', mode='RGBA' if rgba.shape[2] >= 4 else 'RGB')


def _write_png16(rgba, path):
    rgb = maps.to_uint16(np.asarray(rgba)[..., :3])
    height, width = rgb.shape[:2]
    write_atomically(path, 'PNG', lambda temporary: image_files.write_png_rgb16(temporary, width, height, [rgb]))
