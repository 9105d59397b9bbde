"""core.image_files: complete or cut-short files, frames and pages, from the files' structure."""

import io

import numpy as np
import pytest
from PIL import Image

from lotus_blender.core import image_files


def _picture(width=64, height=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_png_complete_only_up_to_its_end_chunk(tmp_path):
    path = tmp_path / "a.png"
    _picture().save(path)
    assert image_files.png_complete(str(path))
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 8, 0):
        path.write_bytes(data[:cut])
        assert not image_files.png_complete(str(path)), cut
    assert not image_files.png_complete(str(tmp_path / "missing.png"))


def test_png_size_from_the_header_only(tmp_path):
    path = tmp_path / "a.png"
    _picture(64, 48).save(path)
    assert image_files.png_size(str(path)) == (64, 48)
    path.write_bytes(path.read_bytes()[:30])   # the header is enough; the pixels are not read
    assert image_files.png_size(str(path)) == (64, 48)
    _picture(64, 48).save(tmp_path / "a.jpg")
    assert image_files.png_size(str(tmp_path / "a.jpg")) is None
    path.write_bytes(path.read_bytes()[:20])
    assert image_files.png_size(str(path)) is None
    assert image_files.png_size(str(tmp_path / "missing.png")) is None


def test_jpeg_without_its_end_marker_is_incomplete(tmp_path):
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x8769] = {0xA405: 26}
    _picture(256, 192).save(path, quality=90, exif=exif)
    assert image_files.jpeg_complete(str(path)) is True
    data = path.read_bytes()
    for fraction in (0.3, 0.6, 0.99):
        (tmp_path / "cut.jpg").write_bytes(data[:int(len(data) * fraction)])
        assert image_files.jpeg_complete(str(tmp_path / "cut.jpg")) is False, fraction
    # Bytes after the end marker (some cameras add them) do not matter; a PNG is not a JPEG.
    (tmp_path / "tail.jpg").write_bytes(data + b"\0" * 100)
    assert image_files.jpeg_complete(str(tmp_path / "tail.jpg")) is True
    _picture().save(tmp_path / "a.png")
    assert image_files.jpeg_complete(str(tmp_path / "a.png")) is None


def test_frames_of_animated_gif_and_pages_of_tiff(tmp_path):
    frames = [_picture(seed=seed) for seed in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100,
                   loop=0)
    frames[0].save(tmp_path / "still.gif")
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "one.tif")
    frames[0].save(tmp_path / "two.tif", save_all=True, append_images=frames[1:2],
                   tiffinfo={}, compression=None)
    assert image_files.gif_frame_count(str(tmp_path / "anim.gif")) == 3
    assert image_files.frame_count(str(tmp_path / "anim.gif")) == 3
    assert image_files.frame_count(str(tmp_path / "still.gif")) == 1
    assert image_files.tiff_page_count(str(tmp_path / "pages.tif")) == 3
    assert image_files.frame_count(str(tmp_path / "two.tif")) == 2
    assert image_files.frame_count(str(tmp_path / "one.tif")) == 1
    assert image_files.frame_count(str(tmp_path / "anim.png")) == 1


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def _ebml(element: int, payload: bytes) -> bytes:
    size = bytes([0x01]) + len(payload).to_bytes(7, "big")  # an 8-byte EBML size
    return element.to_bytes(4, "big") + size + payload


def test_movie_cut_short_or_without_its_index(tmp_path):
    """Containers as their writers lay them out: ISO boxes (MP4, MOV), a Matroska Segment, AVI's
    RIFF chunks. Blender's own movies are checked in test_blender_inputs and test_cli."""
    path = tmp_path / "movie"
    mp4 = _box(b"ftyp", b"isom" * 4) + _box(b"mdat", bytes(5000)) + _box(b"moov", bytes(300))
    mkv = _ebml(0x1A45DFA3, bytes(20)) + _ebml(0x18538067, bytes(6000))
    avi = b"RIFF" + (4 + 7000).to_bytes(4, "little") + b"AVI " + bytes(7000)
    for data in (mp4, mkv, avi):
        path.write_bytes(data)
        assert image_files.movie_complete(str(path)) is True
        for cut in (len(data) - 1, int(len(data) * 0.6), 30):
            path.write_bytes(data[:cut])
            assert image_files.movie_complete(str(path)) is False, (data[:8], cut)
    path.write_bytes(_box(b"ftyp", b"isom" * 4) + _box(b"mdat", bytes(5000)))
    assert image_files.movie_complete(str(path)) is False  # no index ("moov")
    unknown = _ebml(0x1A45DFA3, bytes(20)) + (0x18538067).to_bytes(4, "big") + b"\x01" \
        + b"\xff" * 7 + bytes(100)
    path.write_bytes(unknown)
    assert image_files.movie_complete(str(path)) is None  # a live recording: size unknown
    path.write_bytes(b"OggS" + bytes(100))
    assert image_files.movie_complete(str(path)) is None


def test_16bit_png_written_strip_by_strip(tmp_path):
    import struct
    import zlib
    values = np.random.default_rng(2).integers(0, 65536, (37, 23, 3), dtype=np.uint16)
    path = tmp_path / "n.png"
    image_files.write_png_rgb16(str(path), 23, 37, (values[i:i + 5] for i in range(0, 37, 5)))
    assert image_files.png_complete(str(path))
    data = path.read_bytes()
    position, idat, header = 8, b"", None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[position + 8 + length:
                                                                   position + 12 + length])[0]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        position += 12 + length
    assert struct.unpack(">IIBBBBB", header) == (23, 37, 16, 2, 0, 0, 0)
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(37, 1 + 23 * 6)
    assert (rows[:, 0] == 0).all()
    decoded = rows[:, 1:].copy().view(">u2").reshape(37, 23, 3)
    assert (decoded == values).all()
    with pytest.raises(ValueError):
        image_files.write_png_rgb16(str(path), 23, 37, iter([values[:10]]))
