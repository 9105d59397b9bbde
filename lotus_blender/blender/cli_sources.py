"""What the command line is pointed at -> sources of frames, read through Blender's own readers.

A source is one image file, one image sequence (``shot_####.exr``, ``shot_%04d.exr``, or the
numbered files of a folder) or one movie. Sequences and movies yield one input per frame; results
are named like the add-on names them (``shot_depth_1001.exr``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import bpy

from . import inputs, naming

SEQUENCE = "sequence"
MOVIE = "movie"
IMAGE = "image"

_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%(0?)(\d*)d")
_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")


@dataclass
class Source:
    name: str                        # results are named after it
    kind: str                        # IMAGE, SEQUENCE or MOVIE
    path: str                        # the file, the printf-style pattern, or the movie
    frames: list = field(default_factory=lambda: [None])
    notes: list = field(default_factory=list)   # one-line warnings (frames missing, skipped)
    _movie: object = None            # the movie's Blender image, loaded once
    _reader: object = None           # its inputs.MovieFrames, opened at the first frame read

    @property
    def is_clip(self) -> bool:
        return self.kind in (SEQUENCE, MOVIE)

    def file_for(self, frame) -> str:
        return self.path % frame if self.kind == SEQUENCE else self.path

    def keep_present(self, wanted: list[int], present) -> None:
        """Frames = the wanted ones that exist; those missing are skipped with one note (README:
        the panel does the same). InputError when none exists."""
        self.frames = [frame for frame in wanted if frame in present]
        missing = [frame for frame in wanted if frame not in present]
        label = _PRINTF.sub(lambda m: "#" * max(1, int(m.group(2) or 1)),
                            os.path.basename(self.path)) if self.kind == SEQUENCE \
            else os.path.basename(self.path)
        if not self.frames:
            raise inputs.InputError(f"{label} has none of the frames "
                                    f"{inputs.frame_ranges_text(wanted)}")
        if missing:
            self.notes.append(inputs.missing_frames_note(label, missing, len(self.frames)))


def parse_frames(text: str | None) -> list[int] | None:
    """"1001-1100", "7", "1-10,20-30" -> frame numbers in order; None for no restriction."""
    if not text:
        return None
    frames = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(-?\d+)(?:\s*(?:-|\.\.|:)\s*(-?\d+))?", part)
        if match is None:
            raise ValueError(f"not a frame range: {part!r} (use A-B, A or A-B,C-D)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"frame range {part!r} ends before it starts")
        frames += [f for f in range(first, last + 1) if f not in frames]
    return frames


def _is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in bpy.path.extensions_image


def _is_movie(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in bpy.path.extensions_movie


def _base_name(prefix: str, suffix: str) -> str:
    """"shot_" + "" -> "shot": the panel's rule (naming.sequence_name)."""
    return naming.sequence_name(prefix, suffix, "frames")


def _printf_pattern(path: str) -> str | None:
    """shot_####.exr -> shot_%04d.exr; shot_%04d.exr as is; None when it is no pattern."""
    folder, filename = os.path.split(path)
    if _HASHES.search(filename):
        filename = _HASHES.sub(lambda m: f"%0{len(m.group(0))}d", filename, count=1)
        return os.path.join(folder, filename)
    return path if _PRINTF.search(filename) else None


def _pattern_regex(filename_pattern: str) -> re.Pattern:
    match = _PRINTF.search(filename_pattern)
    width = int(match.group(2) or 0) if match.group(1) else 0
    digits = rf"(\d{{{width},}})" if width else r"(\d+)"
    return re.compile(re.escape(filename_pattern[:match.start()]) + digits
                      + re.escape(filename_pattern[match.end():]) + "$")


def _sequence_from_pattern(pattern: str, frames: list[int] | None) -> Source:
    pattern = os.path.abspath(pattern)
    folder, filename = os.path.split(pattern)
    stem = os.path.splitext(filename)[0]
    match = _PRINTF.search(stem)
    if match is None:
        raise inputs.InputError(f"The frame number must come before the extension: {pattern}")
    name = _base_name(stem[:match.start()], stem[match.end():])
    regex = _pattern_regex(filename)
    found = sorted(int(m.group(1)) for m in
                   (regex.match(entry) for entry in (os.listdir(folder)
                                                     if os.path.isdir(folder) else []))
                   if m and os.path.getsize(os.path.join(folder, m.group(0))) > 0)
    if not found:
        raise inputs.InputError(f"No files match {pattern}")
    source = Source(name=name, kind=SEQUENCE, path=pattern)
    # Without --frames: from the first file to the last, so that a gap is reported.
    source.keep_present(frames or list(range(found[0], found[-1] + 1)), set(found))
    return source


def _movie(path: str, frames: list[int] | None) -> Source:
    path = os.path.abspath(path)
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as ex:
        raise inputs.InputError(f"Cannot open movie {path}: {ex}") from None
    if image.source != 'MOVIE':
        bpy.data.images.remove(image)
        raise inputs.InputError(f"Blender does not read {path} as a movie")
    try:
        inputs.check_movie(image)
    except inputs.InputError:
        bpy.data.images.remove(image)
        raise
    first, last = inputs.frame_range(image)
    name = naming.file_stem(os.path.splitext(os.path.basename(path))[0])
    source = Source(name=name, kind=MOVIE, path=path, _movie=image)
    source.keep_present(frames or list(range(first, last + 1)), range(first, last + 1))
    return source


def _folder(folder: str, frames: list[int] | None) -> list[Source]:
    """Numbered files sharing a name become sequences; the other images and movies, themselves."""
    groups: dict[tuple, list[tuple[int, str]]] = {}
    singles = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if not os.path.isfile(path) or entry.startswith("."):
            continue
        if _is_movie(entry):
            singles.append(_movie(path, frames))
            continue
        if not _is_image(entry):
            continue
        stem, extension = os.path.splitext(entry)
        match = _TRAILING_NUMBER.match(stem)
        if match is None:
            singles.append(Source(name=naming.file_stem(stem), kind=IMAGE,
                                  path=os.path.abspath(path)))
            continue
        prefix, digits, suffix = match.groups()
        groups.setdefault((prefix, suffix, extension, len(digits)), []).append(
            (int(digits), path))
    sources = []
    for (prefix, suffix, extension, width), members in groups.items():
        if len(members) == 1:
            path = members[0][1]
            sources.append(Source(name=naming.file_stem(os.path.splitext(os.path.basename(path))[0]),
                                  kind=IMAGE, path=os.path.abspath(path)))
            continue
        pattern = os.path.join(os.path.abspath(folder), f"{prefix}%0{width}d{suffix}{extension}")
        present = sorted(n for n, path in members if os.path.getsize(path) > 0)
        source = Source(name=_base_name(prefix, suffix), kind=SEQUENCE, path=pattern)
        every = list(range(present[0], present[-1] + 1)) if present else [n for n, _ in members]
        source.keep_present(frames or every, set(present))
        sources.append(source)
    return sources + singles


def find_sources(paths: list[str], frames: list[int] | None) -> list[Source]:
    """Sources for the command line's input arguments; InputError for one that does not exist."""
    sources = []
    for path in paths:
        pattern = _printf_pattern(path)
        if pattern is not None and not os.path.isfile(path):
            sources.append(_sequence_from_pattern(pattern, frames))
        elif os.path.isdir(path):
            found = _folder(path, frames)
            if not found:
                raise inputs.InputError(f"No images or movies in {path}")
            sources += found
        elif os.path.isfile(path):
            if _is_movie(path):
                sources.append(_movie(path, frames))
            else:
                sources.append(Source(
                    name=naming.file_stem(os.path.splitext(os.path.basename(path))[0]),
                    kind=IMAGE, path=os.path.abspath(path)))
        else:
            raise inputs.InputError(f"Not found: {path}")
    for source in sources:
        short = naming.short_stem(source.name)
        if short != source.name:
            source.notes.append(naming.shortened_note(source.name, short))
            source.name = short
    names = [s.name for s in sources]
    for source in sources:
        if names.count(source.name) > 1:
            raise inputs.InputError(f"Two inputs would write maps named '{source.name}'; "
                                    f"give them separate runs or output folders")
    return sources


def prepare(source: Source, frame, job_dir: str, processing_resolution: int,
            index: int) -> inputs.PreparedInput:
    """One frame (or the image) as the worker's input, read by Blender and not kept in the file."""
    if source.kind == MOVIE:
        if source._reader is None:  # kept open: the next frames decode from where it is
            source._reader = inputs.MovieFrames(source._movie)
        return source._reader.prepare(frame, job_dir, processing_resolution, index, source.name)
    path = source.file_for(frame)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise inputs.InputError(f"Missing or empty file: {path}")
    inputs.refuse_incomplete_exr(path)
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as ex:
        raise inputs.InputError(f"Cannot read {path}: {ex}") from None
    try:
        prepared = inputs.prepare_image(image, job_dir, processing_resolution, index,
                                        name=source.name, source_path=path)
    finally:
        bpy.data.images.remove(image)
    prepared.frame = frame
    return prepared


def release(sources: list[Source]) -> None:
    for source in sources:
        if source._reader is not None:
            source._reader.close()
            source._reader = None
        if source._movie is not None:
            try:
                bpy.data.images.remove(source._movie)
            except ReferenceError:
                pass
            source._movie = None
