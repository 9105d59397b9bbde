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
    _movie: object = None            # the movie's Blender image, loaded once

    @property
    def is_clip(self) -> bool:
        return self.kind in (SEQUENCE, MOVIE)

    def file_for(self, frame) -> str:
        return self.path % frame if self.kind == SEQUENCE else self.path


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
    """"shot_" + "" -> "shot": the add-on's rule (frame number removed, separators trimmed)."""
    return naming.file_stem((prefix.rstrip("_-. ") + suffix.lstrip("_-. ")) or "frames")


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
    if frames is None:
        regex = _pattern_regex(filename)
        found = sorted(int(m.group(1)) for m in
                       (regex.match(entry) for entry in (os.listdir(folder)
                                                         if os.path.isdir(folder) else []))
                       if m)
        if not found:
            raise inputs.InputError(f"No files match {pattern}")
        frames = found
    return Source(name=name, kind=SEQUENCE, path=pattern, frames=list(frames))


def _movie(path: str, frames: list[int] | None) -> Source:
    path = os.path.abspath(path)
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as ex:
        raise inputs.InputError(f"Cannot open movie {path}: {ex}") from None
    if image.source != 'MOVIE':
        bpy.data.images.remove(image)
        raise inputs.InputError(f"Blender does not read {path} as a movie")
    first, last = inputs.frame_range(image)
    name = naming.file_stem(os.path.splitext(os.path.basename(path))[0])
    return Source(name=name, kind=MOVIE, path=path,
                  frames=list(frames) if frames is not None else list(range(first, last + 1)),
                  _movie=image)


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
        wanted = sorted(n for n, _ in members) if frames is None else frames
        sources.append(Source(name=_base_name(prefix, suffix), kind=SEQUENCE, path=pattern,
                              frames=list(wanted)))
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
        return inputs.prepare_frames(source._movie, frame, frame, job_dir, processing_resolution,
                                     start_index=index)[0]
    path = source.file_for(frame)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise inputs.InputError(f"Missing or empty file: {path}")
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
        if source._movie is not None:
            try:
                bpy.data.images.remove(source._movie)
            except ReferenceError:
                pass
            source._movie = None
