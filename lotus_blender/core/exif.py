"""The focal length of a photo from its EXIF data, standard library only.

Blender has no EXIF reader and the Blender side cannot import Pillow, so this reads the few tags
needed from JPEG (APP1 "Exif") and TIFF files: FocalLengthIn35mmFilm (0xA405), or else
FocalLength (0x920A) with the focal-plane resolution (0xA20E, 0xA210) and the image width, which
give the sensor width.
"""

from __future__ import annotations

import math
import struct

_EXIF_IFD_POINTER = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405
_PIXEL_X_DIMENSION = 0xA002
_PIXEL_Y_DIMENSION = 0xA003
_FOCAL_PLANE_X_RESOLUTION = 0xA20E
_FOCAL_PLANE_UNIT = 0xA210
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # inch, cm, mm, micrometre
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8, 11: 4, 12: 8}
_FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


def _tiff_tags(tiff: bytes) -> dict:
    """Tags of IFD0 and the Exif IFD of a TIFF structure: tag -> first value (number)."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or struct.unpack(order + "H", tiff[2:4])[0] != 42:
        return {}

    def read_ifd(offset):
        tags = {}
        if offset + 2 > len(tiff):
            return tags
        (count,) = struct.unpack_from(order + "H", tiff, offset)
        for entry in range(count):
            start = offset + 2 + entry * 12
            if start + 12 > len(tiff):
                break
            tag, kind, number = struct.unpack_from(order + "HHI", tiff, start)
            size = _TYPE_SIZES.get(kind, 0) * number
            where = start + 8 if size <= 4 else struct.unpack_from(order + "I", tiff, start + 8)[0]
            if kind not in _TYPE_SIZES or number == 0 or where + _TYPE_SIZES[kind] > len(tiff):
                continue
            if kind == 3:
                tags[tag] = struct.unpack_from(order + "H", tiff, where)[0]
            elif kind in (4, 9):
                tags[tag] = struct.unpack_from(order + ("I" if kind == 4 else "i"), tiff, where)[0]
            elif kind in (5, 10):
                numerator, denominator = struct.unpack_from(order + ("II" if kind == 5 else "ii"), tiff, where)
                tags[tag] = numerator / denominator if denominator else 0.0
            elif kind in (11, 12):
                tags[tag] = struct.unpack_from(order + ("f" if kind == 11 else "d"), tiff, where)[0]
        return tags

    (first,) = struct.unpack_from(order + "I", tiff, 4)
    tags = read_ifd(first)
    if _EXIF_IFD_POINTER in tags:
        tags.update(read_ifd(int(tags[_EXIF_IFD_POINTER])))
    return tags


def _exif_block(data: bytes) -> bytes | None:
    """The TIFF structure holding the EXIF data of a JPEG or TIFF file's bytes."""
    if data[:2] in (b"II", b"MM"):
        return data
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        (length,) = struct.unpack_from(">H", data, position + 2)
        segment = data[position + 4:position + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            return segment[6:]
        if marker == 0xDA:  # start of scan: no metadata after this
            return None
        position += 2 + length
    return None


def focal_35mm_from_bytes(data: bytes) -> float | None:
    """35 mm-equivalent focal length (mm) of a JPEG/TIFF, or None when the file does not say."""
    block = _exif_block(data)
    tags = _tiff_tags(block) if block else {}
    if tags.get(_FOCAL_35MM):
        return float(tags[_FOCAL_35MM])
    focal = tags.get(_FOCAL_LENGTH)
    resolution = tags.get(_FOCAL_PLANE_X_RESOLUTION)
    unit_mm = _UNIT_MM.get(tags.get(_FOCAL_PLANE_UNIT, 2))
    width, height = tags.get(_PIXEL_X_DIMENSION), tags.get(_PIXEL_Y_DIMENSION)
    if focal and resolution and unit_mm and width and height:
        sensor_diagonal_mm = math.hypot(width, height) / resolution * unit_mm
        return float(focal * _FULL_FRAME_DIAGONAL_MM / sensor_diagonal_mm)
    return None


def focal_35mm_from_file(path: str, max_bytes: int = 1 << 20) -> float | None:
    """Like focal_35mm_from_bytes for a file (reads only its first megabyte); None if unreadable."""
    try:
        with open(path, "rb") as handle:
            return focal_35mm_from_bytes(handle.read(max_bytes))
    except (OSError, struct.error):
        return None
