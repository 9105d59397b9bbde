"""One naming rule for everything the add-on makes, in Blender and on disk.

A source is known by its image name, which every result, object and light rig records in its
"lotus_source" property (source_name, source_photo), and named after its stem: the image's name
without its file extension, accents, spaces and case kept ("café photo 01.jpg" -> "café photo 01"). Results add a suffix ("café photo 01_depth",
"café photo 01_height"); files carry the same name plus their extension ("café photo 01_height.png"),
with only the characters file systems refuse replaced. A result's Blender name that the artist's own
image already holds gets one suffix, " (Lotus)", and that name is reused by the next run.
"""

from __future__ import annotations

import hashlib
import re

import bpy

from . import compat

TAKEN_SUFFIX = " (Lotus)"
_BLENDER_DUPLICATE = re.compile(r"\.\d{3}$")  # "photo.png.001": Blender's copy of a name
_SEPARATORS = "_-. "  # what may stand around a frame number
_NOT_IN_FILE_NAMES = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
# Room a stem leaves for the longest suffix a result gets ("_shadow_catcher (Lotus)",
# "_normal_directx_0001.png").
_SUFFIX_BYTES = 26
# File names hold 255 bytes; hidden partial files add ".HOST.PID.lotus-partial" around a name.
_FILE_STEM_BYTES = 150


def _has_media_extension(name: str) -> bool:
    stem, dot, extension = name.rpartition(".")
    return bool(dot and stem) and \
        "." + extension.lower() in (bpy.path.extensions_image | bpy.path.extensions_movie)


def stem(name: str) -> str:
    """The name without an image or movie file extension ("photo.png.001" -> "photo")."""
    if _BLENDER_DUPLICATE.search(name) and _has_media_extension(name[:-4]):
        name = name[:-4]
    return name.rpartition(".")[0] if _has_media_extension(name) else name


def source_name(image) -> str:
    """The image name of the photo an image is, or that a Lotus result was made from: what the
    "lotus_source" property holds on every result, object and light rig the add-on makes."""
    return image.get("lotus_source") or image.name


def source_photo(image):
    """The photo an image is, or that a Lotus result was made from (when it is in this file)."""
    return bpy.data.images.get(source_name(image), image)


def source_stem(image) -> str:
    """The stem of the photo an image is, or that a Lotus result was made from."""
    return stem(source_name(image))


def short_stem(name: str) -> str:
    """The stem as results can carry it: cut so that every result's Blender name (63 bytes up to
    Blender 4.5) and file name (255 bytes) holds it whole, ending in "~" and four hex digits of
    the full name, so that two long names stay apart; short names as they are."""
    limit = min(compat.MAX_ID_NAME_BYTES - _SUFFIX_BYTES, _FILE_STEM_BYTES)
    data = name.encode("utf-8")
    if len(data) <= limit:
        return name
    head = data[:limit - 5].decode("utf-8", "ignore").rstrip(" ._-")
    return f"{head}~{hashlib.sha1(data).hexdigest()[:4]}"


def shortened_note(name: str, short: str) -> str:
    """The one line that says a name was cut."""
    shown = name if len(name) <= 40 else name[:39] + "\u2026"
    return (f"The name '{shown}' ({len(name)} characters) is too long for Blender's and the file "
            f"system's names: its results are called '{short}'")


def file_stem(name: str) -> str:
    """The name as a file name: only characters file systems refuse become "_" (accents stay)."""
    cleaned = _NOT_IN_FILE_NAMES.sub("_", name).strip(" .")
    return cleaned or "image"


def sequence_name(prefix: str, suffix: str, fallback: str) -> str:
    """A sequence's name, the panel's and the command line's: its file stem without the frame
    number, the separators around the number made one ("shot_" + "" -> "shot", "clip_" + "_a" ->
    "clip_a", "plate." + ".left" -> "plate.left"); ``fallback`` when nothing is left."""
    head, tail = prefix.rstrip(_SEPARATORS), suffix.lstrip(_SEPARATORS).rstrip(_SEPARATORS)
    around = prefix[len(head):] + suffix[:len(suffix) - len(suffix.lstrip(_SEPARATORS))]
    joiner = (around[:1] or "_") if head and tail else ""
    name = head + joiner + tail
    return file_stem(name) if name else fallback


def result_file_name(name: str, suffix: str, extension: str = "", frame: int | None = None) -> str:
    """The file name of one result of a source (the panel's outputs and the command line):
    "<name>_<suffix>[_<frame as 4 digits>]<extension>" with file-system-safe characters. Without
    an extension: the stem that the panel's unique_path / unique_sequence_stem start from."""
    number = "" if frame is None else f"_{frame:04d}"
    return f"{file_stem(f'{name}_{suffix}')}{number}{extension}"


def frame_file_name(stem: str, frame: int, extension: str) -> str:
    """A frame's file of a sequence whose stem is already chosen: "<stem>_<frame as 4 digits>"."""
    return f"{stem}_{frame:04d}{extension}"


def result_image_name(name: str, is_ours) -> str:
    """The Blender name for a result: ``name``, unless an image that ``is_ours(image)`` rejects
    holds it; then ``name (Lotus)``, the same every run, so nothing piles up."""
    image = bpy.data.images.get(name)
    if image is None or is_ours(image):
        return name
    return name + TAKEN_SUFFIX


def claim_image(name: str, is_ours):
    """(name, our existing image or None) for a result called ``name`` (see result_image_name)."""
    name = result_image_name(name, is_ours)
    image = bpy.data.images.get(name)
    return name, (image if image is not None and is_ours(image) else None)


def made_by_lotus(kind: str, source: str):
    """An ``is_ours`` test: a Lotus image of that kind made from that source."""
    def is_ours(image) -> bool:
        return image.get("lotus_kind") == kind and image.get("lotus_source") == source \
            and image.library is None
    return is_ours
