"""Image sequences (their files, found in their folder) and movies (frames decoded by Blender's
own movie reader, FFmpeg), one input per frame."""

from __future__ import annotations

import os
import re

import bpy

from ...core import image_files
from .. import compat, naming
from .images import InputError, PreparedInput, image_file_path, prepare_image, refuse_incomplete_exr
from .renders import TemporaryScene, prepare_temporary_copy, render_scene

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
    folder, filename = os.path.split(image_file_path(image))
    stem, ext = os.path.splitext(filename)
    match = _FRAME_DIGITS.search(stem)
    if match is None:
        raise InputError(f"'{image.name}' has no frame number in its file name")
    return folder, stem[:match.start()], len(match.group(1)), stem[match.end():], ext


def results_name(image: bpy.types.Image) -> str:
    """The name a sequence's or movie's results carry: a sequence's file stem without the frame
    number ("clip_0001.png" -> "clip": results are numbered by frame themselves), a movie's stem."""
    if image.source == 'SEQUENCE':
        _, prefix, _, suffix, _ = _sequence_parts(image)
        return naming.sequence_name(prefix, suffix, naming.stem(image.name))
    return naming.stem(image.name)


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
        number = _FRAME_DIGITS.search(os.path.splitext(os.path.basename(image_file_path(image)))[0])
        return (int(number.group(1)),) * 2 if number else (1, 1)
    return 1, 1


def sequence_file(image: bpy.types.Image, frame: int) -> str:
    """The file of one frame of an image sequence (numbered like its first file)."""
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
    path = image_file_path(image)
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
        self._guard = TemporaryScene("lotus_movie_frames")
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
        return prepare_temporary_copy(path, job_dir, processing_resolution, index, name,
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
        _, prefix, digits, suffix, ext = _sequence_parts(image)
        base = results_name(image)
        label = prefix + "#" * digits + suffix + ext
        present = set(sequence_frames(image))
        frames = [frame for frame in wanted if frame in present]
        reader = None
    elif image.source == 'MOVIE':
        base, label = results_name(image), os.path.basename(image_file_path(image)) or image.name
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
                    item = _load_temporary_frame(sequence_file(image, frame), job_dir,
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
