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

import concurrent.futures
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


def missing_frames(image) -> list[int]:
    """The frames within a sequence's span whose files do not exist (a movie lacks none)."""
    if image.source != 'SEQUENCE':
        return []
    first, last = frame_span(image)
    present = set(frame_numbers(image))
    return [frame for frame in range(first, last + 1) if frame not in present]


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


class BehindSequenceFill:
    """The layer behind the tears of every frame of a depth sequence, one frame per step(): what
    the Build operator's modal run drives from a window timer (so that Blender stays responsive,
    shows real progress and can cancel), and what run() does in one go.

    compute(depth values (H, W), photo RGBA or None) -> (behind RGBA, filled photo RGBA or None,
    opening[, share of the near edges too soft to fill[, (depth values with the soft steps placed
    at the photo's edges, whether any moved) or None]]) is run per frame; the results are written to folder as "<name>_behind_FFFF.exr"
    (float) and "<name>_fill_FFFF" (16-bit PNG for a byte photo, float EXR for a float one: the
    photo's values as stored), and where a frame's depth moved "<name>_depth_snapped_FFFF.exr"
    (the mesh's Depth, so that its tears meet the layer; once the fill is done, the frames that
    did not move get theirs too, their depth as it is), never over an existing file, each
    atomically. parameters is what
    the results depend on besides the frames (the build checks it before using them).

    Between steps nothing of the fill is in bpy.data (readers, writer scene and scratch images
    live for one step) and the images are looked up by name each step, so an undo or an edit
    made while the frames are filled cannot leave a stale reference or a throwaway datablock."""

    def __init__(self, name, depth, photo, compute, folder, parameters=(), depth_kind=None):
        self.numbers = frame_numbers(depth)
        if not self.numbers:
            raise ValueError(f"{depth.name!r}: none of its frames' files exist")
        self.name, self.compute, self.folder, self.parameters = name, compute, folder, tuple(parameters)
        self.depth_name = depth.name
        self.photo_name = photo.name if photo is not None else None
        self.fill_colourspace = photo.colorspace_settings.name if photo is not None else None
        self.behind_stem = outputs.unique_sequence_stem(folder, naming.result_file_name(name, "behind"), ".exr",
                                                        self.numbers)
        self.fill_extension = ".exr" if photo is not None and photo.is_float else ".png"
        self.fill_stem = outputs.unique_sequence_stem(folder, naming.result_file_name(name, "fill"),
                                                      self.fill_extension, self.numbers)
        self.snapped_stem = outputs.unique_sequence_stem(folder, naming.result_file_name(name, "depth_snapped"),
                                                         ".exr", self.numbers)
        self.depth_kind = depth_kind
        self.snapped_frames: dict[int, str] = {}    # frames whose depth moved to the photo's edges: file
        self.written: list[str] = []
        self.done = 0
        self.opening = 0.0
        self.soft = 0.0             # the largest share of soft edges of a frame (the build's report)
        self.behind_path = self.fill_path = None
        self._pending = None        # the frame being computed in the background (step(wait=False))
        self._executor = None
        self.cancelled = False
        self.used = False           # images() made the image sequences of its files

    @property
    def total(self) -> int:
        return len(self.numbers)

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def _image(self, name):
        image = bpy.data.images.get(name)
        if image is None:
            raise ValueError(f"the image {name!r} was removed while its frames were filled")
        return image

    def step(self, wait: bool = True) -> int:
        """Advance the fill; returns how many frames are done. wait: fill and write the next
        frame now. Not wait (the modal run's timer ticks): each frame's core.fill runs in a
        background thread (numpy only, no bpy) while Blender goes on; a tick whose frame is
        computed writes it and hands the thread the next one (bpy, main thread: tenths of a
        second), any other tick returns at once. On an error, what this fill wrote is removed and
        the error propagates."""
        if self.finished or self.cancelled:
            return self.done
        try:
            if wait:
                frame = self.numbers[self.done]
                self._write_frame(frame, *self.compute(*self._read_frame(frame)))
                self.done += 1
                return self.done
            if self._pending is not None:
                if not self._pending.done():
                    return self.done
                computed, self._pending = self._pending.result(), None
                self._write_frame(self.numbers[self.done], *computed)
                self.done += 1
            if self.finished:
                self._shutdown()
            else:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lotus_fill")
                self._pending = self._executor.submit(self.compute, *self._read_frame(self.numbers[self.done]))
        except BaseException:
            self.cancel()
            raise
        return self.done

    def _read_frame(self, frame):
        depth = self._image(self.depth_name)
        photo = self._image(self.photo_name) if self.photo_name is not None else None
        with FrameReader(depth) as depth_frames:
            values = depth_frames.pixels(frame)[..., 0].astype(np.float64)
        colours = None
        if photo is not None:
            with FrameReader(photo) as photo_frames:
                colours = photo_frames.pixels(frame)
        return values, colours

    def _write_frame(self, frame, behind, filled, frame_opening, frame_soft=0.0, snapped=None):
        scratch = []
        try:
            with WriterScene() as writer:
                path = os.path.join(self.folder, naming.frame_file_name(self.behind_stem, frame, ".exr"))
                _write_float(writer, scratch, behind, path, "lotus_behind_frame")
                self.written.append(path)
                self.behind_path = self.behind_path or path
                if filled is not None:
                    path = os.path.join(self.folder, naming.frame_file_name(self.fill_stem, frame,
                                                                            self.fill_extension))
                    if self.fill_extension == ".png":
                        _write_png16(filled, path)
                    else:
                        _write_float(writer, scratch, filled, path, "lotus_fill_frame")
                    self.written.append(path)
                    self.fill_path = self.fill_path or path
                if snapped is not None and snapped[1]:
                    self._write_depth(writer, scratch, frame, snapped[0])
        finally:
            for image in scratch:
                bpy.data.images.remove(image)
        self.opening = max(self.opening, frame_opening)
        self.soft = max(self.soft, frame_soft)

    def _write_depth(self, writer, scratch, frame, values):
        path = os.path.join(self.folder, naming.frame_file_name(self.snapped_stem, frame, ".exr"))
        values = np.asarray(values, np.float32)
        _write_float(writer, scratch, np.repeat(values[..., None], 3, axis=-1), path, "lotus_depth_frame")
        self.written.append(path)
        self.snapped_frames[frame] = path

    def _complete_snapped_depth(self) -> None:
        """The snapped depth's frames that did not move: the depth's own values (a whole sequence)."""
        missing = [frame for frame in self.numbers if frame not in self.snapped_frames]
        if not self.snapped_frames or not missing:
            return
        scratch = []
        try:
            with FrameReader(self._image(self.depth_name)) as depth_frames, WriterScene() as writer:
                for frame in missing:
                    self._write_depth(writer, scratch, frame, depth_frames.pixels(frame)[..., 0])
        finally:
            for image in scratch:
                bpy.data.images.remove(image)

    def _shutdown(self) -> None:
        """Let the background thread go (a frame being computed is finished there and dropped)."""
        self._pending = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def cancel(self) -> None:
        """Stop, and remove every file this fill wrote (the build is then as if it never ran)."""
        self._shutdown()
        self.cancelled = True
        for path in self.written:
            try:
                os.remove(path)
            except OSError:
                pass
        self.written, self.snapped_frames = [], {}
        self.behind_path = self.fill_path = None

    def intact(self) -> bool:
        """Finished, not cancelled, and every file it wrote still there."""
        return self.finished and not self.cancelled and all(os.path.isfile(path) for path in self.written)

    def images(self):
        """The finished fill as image sequences: (behind, fill or None, largest opening)."""
        if not self.intact() or self.behind_path is None:
            raise ValueError("the layer behind the tears is not filled for every frame")
        self.used = True
        numbers = self.numbers
        source = self.photo_name or self.depth_name
        behind_image = _sequence_image(self.behind_path, self.name + "_behind", 'Non-Color', "behind", source)
        behind_image["lotus_behind_of"] = self.depth_name
        behind_image["lotus_frames"] = [numbers[0], numbers[-1]]
        behind_image["lotus_soft_edges"] = round(self.soft, 4)
        fill_image = None
        if self.fill_path is not None:
            fill_image = _sequence_image(self.fill_path, self.name + "_fill", self.fill_colourspace, "fill",
                                         self.photo_name)
            fill_image["lotus_frames"] = [numbers[0], numbers[-1]]
        if self.snapped_frames:
            self._complete_snapped_depth()
            snapped = _sequence_image(self.snapped_frames[numbers[0]], self.name + "_depth_snapped", 'Non-Color',
                                      self.depth_kind, self.depth_name)
            snapped["lotus_snapped_from"] = self.depth_name
            snapped["lotus_frames"] = [numbers[0], numbers[-1]]
            behind_image["lotus_snapped_depth"] = snapped.name
        return behind_image, fill_image, self.opening

    def run(self, context=None):
        """Every frame in one go (scripts, the command line, redo), with the window manager's
        progress where there is one. Returns images()."""
        window_manager = getattr(context, "window_manager", None)
        if window_manager is not None:
            window_manager.progress_begin(0, self.total)
        try:
            while not self.finished:
                self.step()
                if window_manager is not None:
                    window_manager.progress_update(self.done)
        finally:
            if window_manager is not None:
                window_manager.progress_end()
        try:
            return self.images()
        except BaseException:
            self.cancel()
            raise


def _write_float(writer, scratch, rgba, path, name):
    """Write (H, W, 3|4) values as a 32-bit float EXR through a new scratch image (appended to
    scratch: the caller removes it)."""
    rgba = np.asarray(rgba, np.float32)
    image = bpy.data.images.new(name, rgba.shape[1], rgba.shape[0], alpha=False, float_buffer=True, is_data=True)
    scratch.append(image)
    buffer = np.ones((rgba.shape[0], rgba.shape[1], 4), np.float32)
    buffer[..., :min(4, rgba.shape[2])] = rgba[..., :4]
    image.pixels.foreach_set(np.ascontiguousarray(buffer[::-1]).ravel())
    image.update()
    writer.write(image, path, 'OPEN_EXR', '32', mode='RGBA' if rgba.shape[2] >= 4 else 'RGB')


def _write_png16(rgba, path):
    rgb = maps.to_uint16(np.asarray(rgba)[..., :3])
    height, width = rgb.shape[:2]
    write_atomically(path, 'PNG', lambda temporary: image_files.write_png_rgb16(temporary, width, height, [rgb]))
