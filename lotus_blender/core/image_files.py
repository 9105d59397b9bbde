"""Is an image file complete, and how many frames does it hold? Standard library only.

Blender reads a truncated JPEG without a word (the missing part comes out grey), crashes on a
truncated OpenEXR, and shows only the first frame of an animated GIF or a multi-page TIFF. These
checks read the files' structure, never their pixels, so they are cheap enough for every input and
every file the add-on writes.
"""

from __future__ import annotations

import os
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
EXR_MAGIC = b"\x76\x2f\x31\x01"
# OpenEXR scanlines per chunk by compression (NONE, RLE, ZIPS, ZIP, PIZ, PXR24, B44, B44A, DWAA, DWAB).
_EXR_LINES_PER_CHUNK = (1, 1, 1, 16, 32, 16, 32, 32, 32, 256)
_EXR_TILED, _EXR_DEEP, _EXR_MULTIPART = 0x200, 0x800, 0x1000


def png_complete(path: str) -> bool:
    """A PNG that ends with its IEND chunk (a write cut short does not)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != PNG_SIGNATURE:
                return False
            handle.seek(0, os.SEEK_END)
            if handle.tell() < 8 + len(PNG_END):
                return False
            handle.seek(-len(PNG_END), os.SEEK_END)
            return handle.read() == PNG_END
    except OSError:
        return False


def png_size(path: str) -> tuple[int, int] | None:
    """(width, height) from a PNG's header (its IHDR chunk), or None for anything else."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(24)
    except OSError:
        return None
    if len(header) < 24 or header[:8] != PNG_SIGNATURE or header[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", header[16:24])


def write_png_rgb16(path: str, width: int, height: int, strips) -> None:
    """A 16-bit RGB PNG written strip by strip: ``strips`` yields uint16 arrays (rows, width, 3),
    top row first, ``height`` rows in all. Blender's writer needs the whole picture as a float
    buffer and then two more full-size copies (colour-managed and 16-bit) at once; this holds one
    strip. Same pixels as Blender's 16-bit PNG of the same values (round to nearest)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(6)
    rows = 0
    with open(path, "wb") as handle:
        handle.write(PNG_SIGNATURE)
        handle.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)))
        for strip in strips:
            data = strip.astype(">u2").reshape(strip.shape[0], width * 3)
            rows += data.shape[0]
            # Filter type 0 (None) before every row.
            raw = b"".join(b"\x00" + row.tobytes() for row in data)
            compressed = compressor.compress(raw)
            if compressed:
                handle.write(chunk(b"IDAT", compressed))
        if rows != height:
            raise ValueError(f"{rows} rows given for a {height}-row picture")
        handle.write(chunk(b"IDAT", compressor.flush()))
        handle.write(PNG_END)


def _cstring(handle) -> bytes:
    chars = bytearray()
    while True:
        byte = handle.read(1)
        if not byte:
            raise EOFError
        if byte == b"\0":
            return bytes(chars)
        chars += byte


def _exr_attributes(handle):
    """(name, value) of each header attribute, for a file read past its magic number and flags;
    EOFError when the header is cut short."""
    while True:
        name = _cstring(handle)
        if not name:
            return
        _cstring(handle)  # attribute type
        length = struct.unpack("<i", handle.read(4))[0]
        value = handle.read(length)
        if len(value) != length:
            raise EOFError
        yield name, value


def exr_header(path: str) -> tuple[tuple[int, int] | None, list[str]]:
    """(width, height) of an OpenEXR's data window (None when it has none) and its channel
    names. ValueError when the file is no OpenEXR; OSError, EOFError or struct.error when it
    cannot be read."""
    size, channels = None, []
    with open(path, "rb") as handle:
        if handle.read(4) != EXR_MAGIC:
            raise ValueError("not an OpenEXR file")
        handle.read(4)  # version and flags
        for name, value in _exr_attributes(handle):
            if name == b"dataWindow":
                xmin, ymin, xmax, ymax = struct.unpack("<4i", value)
                size = (xmax - xmin + 1, ymax - ymin + 1)
            elif name == b"channels":
                # chlist: name\0 then 16 bytes (type, pLinear, reserved, xSampling, ySampling).
                offset = 0
                while offset < len(value) and value[offset] != 0:
                    end = value.index(b"\0", offset)
                    channels.append(value[offset:end].decode("latin-1"))
                    offset = end + 1 + 16
    return size, channels


def exr_complete(path: str) -> bool | None:
    """True when every scanline chunk of a single-part OpenEXR lies inside the file, False when the
    file is cut short, None for layouts not checked here (tiled, deep, multi-part)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if handle.read(4) != EXR_MAGIC:
                return False
            flags = struct.unpack("<I", handle.read(4))[0]
            if flags & (_EXR_TILED | _EXR_DEEP | _EXR_MULTIPART):
                return None
            window, compression = None, None
            for name, value in _exr_attributes(handle):
                if name == b"dataWindow":
                    window = struct.unpack("<4i", value)
                elif name == b"compression":
                    compression = value[0]
            if window is None or compression is None or compression >= len(_EXR_LINES_PER_CHUNK):
                return None if window is not None else False
            lines = _EXR_LINES_PER_CHUNK[compression]
            chunks = -(-(window[3] - window[1] + 1) // lines)
            table = handle.read(8 * chunks)
            if len(table) != 8 * chunks:
                return False
            offsets = struct.unpack(f"<{chunks}Q", table)
            if min(offsets) == 0 or max(offsets) + 8 > size:
                return False  # the writer fills the table last, or a chunk starts past the end
            handle.seek(max(offsets) + 4)
            data_size = struct.unpack("<i", handle.read(4))[0]
            return max(offsets) + 8 + data_size <= size
    except (OSError, EOFError, struct.error, ValueError):
        return False


def jpeg_complete(path: str) -> bool | None:
    """False when a JPEG's image data has no end marker (a cut download or copy), None when the file
    is not a JPEG. An embedded EXIF thumbnail's end marker comes before the image data, and the
    entropy-coded data never holds the marker (0xFF bytes are stuffed), so looking after the first
    start-of-scan is enough."""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"\xff\xd8":
                return None  # not read further: this may be a movie of several GB
            data = b"\xff\xd8" + handle.read()
    except OSError:
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if marker == 0xDA:  # start of scan: the image data follows
            return data.find(b"\xff\xd9", position + 2 + length) >= 0
        position += 2 + length
    return False


def gif_frame_count(path: str, stop_at: int = 1 << 16) -> int:
    """Frames (image descriptors) of a GIF, counting at most stop_at; 0 when not a GIF."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return 0
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return 0
    position = 13
    if data[10] & 0x80:  # global colour table
        position += 3 * (2 << (data[10] & 7))
    frames = 0
    while position < len(data) and frames < stop_at:
        block = data[position]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            position = _skip_sub_blocks(data, position + 2)
        elif block == 0x2C:  # image descriptor, local colour table, LZW code size, sub-blocks
            frames += 1
            if position + 10 > len(data):
                break
            packed = data[position + 9]
            position += 10
            if packed & 0x80:
                position += 3 * (2 << (packed & 7))
            position = _skip_sub_blocks(data, position + 1)
        else:
            break
    return frames


def _skip_sub_blocks(data: bytes, position: int) -> int:
    while position < len(data) and data[position] != 0:
        position += data[position] + 1
    return position + 1


def tiff_page_count(path: str, stop_at: int = 1 << 12) -> int:
    """Pages (the chained image file directories) of a TIFF, counting at most stop_at; 0 when not
    a TIFF."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None or len(head) < 8 or struct.unpack(order + "H", head[2:4])[0] != 42:
                return 0
            offset = struct.unpack(order + "I", head[4:8])[0]
            pages, seen = 0, set()
            while offset and offset not in seen and pages < stop_at:
                seen.add(offset)
                handle.seek(offset)
                count_bytes = handle.read(2)
                if len(count_bytes) < 2:
                    break
                pages += 1
                count = struct.unpack(order + "H", count_bytes)[0]
                handle.seek(offset + 2 + 12 * count)
                following = handle.read(4)
                offset = struct.unpack(order + "I", following)[0] if len(following) == 4 else 0
            return pages
    except (OSError, struct.error):
        return 0


def frame_count(path: str) -> int:
    """Frames of an animated GIF or pages of a TIFF (1 for anything else)."""
    lower = path.lower()
    if lower.endswith(".gif"):
        return max(1, gif_frame_count(path))
    if lower.endswith((".tif", ".tiff")):
        return max(1, tiff_page_count(path))
    return 1


# -- movies: does the container's own structure end where the file does? ------------------------

def _iso_boxes_complete(handle, size: int) -> bool:
    """ISO base media (MP4, MOV): the top-level boxes tile the file; the last one must not run
    past its end, and the index ("moov") must be there."""
    position, seen_index = 0, False
    while position + 8 <= size:
        handle.seek(position)
        length, kind = struct.unpack(">I4s", handle.read(8))
        if length == 1:
            length = struct.unpack(">Q", handle.read(8))[0]
        elif length == 0:  # "to the end of the file"
            length = size - position
        if length < 8:
            return False
        seen_index = seen_index or kind == b"moov"
        position += length
    return position == size and seen_index


def _ebml_number(handle, is_size: bool):
    """One EBML variable-length number: (value, is_unknown); ValueError when malformed."""
    first = handle.read(1)
    if not first:
        raise EOFError
    length = 1
    while length <= 8 and not first[0] & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError("bad EBML number")
    rest = handle.read(length - 1)
    if len(rest) != length - 1:
        raise EOFError
    value = int.from_bytes(first + rest, "big")
    if is_size:
        value &= (1 << (7 * length)) - 1
        return value, value == (1 << (7 * length)) - 1
    return value, False


def _matroska_complete(handle, size: int) -> bool | None:
    """Matroska and WebM: the header and the Segment must fit in the file (a Segment of unknown
    size, as live recorders write, cannot be checked)."""
    handle.seek(0)
    for expected in (0x1A45DFA3, 0x18538067):  # EBML header, then Segment
        element, _ = _ebml_number(handle, False)
        length, unknown = _ebml_number(handle, True)
        if element != expected:
            return None
        if unknown:
            return None
        if expected == 0x1A45DFA3:
            handle.seek(handle.tell() + length)
    return handle.tell() + length <= size


def _riff_complete(handle, size: int) -> bool:
    """AVI: its RIFF chunks (more than one past 1 GB, OpenDML) must fit in the file."""
    position = 0
    while position + 8 <= size:
        handle.seek(position)
        tag, length = struct.unpack("<4sI", handle.read(8))
        if tag != b"RIFF":
            break
        if position + 8 + length > size:
            return False
        position += 8 + length + (length & 1)  # chunks are padded to an even size
    return position > 0


def movie_complete(path: str) -> bool | None:
    """False when a movie file ends before its container says it does (a cut copy or download;
    FFmpeg then repeats the last frame it could decode, or Blender cannot open the file at all),
    True when it is whole, None for containers not checked here."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(12)
            if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free",
                                                  b"skip", b"pnot"):
                return _iso_boxes_complete(handle, size)
            if head[:4] == b"\x1a\x45\xdf\xa3":
                return _matroska_complete(handle, size)
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                return _riff_complete(handle, size)
            return None
    except (EOFError, struct.error, ValueError):
        return False
    except OSError:
        return None
