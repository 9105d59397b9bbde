"""One Blender image with pixels -> the float32 ``.npy`` of display values the worker reads.

Packed, generated, edited and file images are read from Blender's pixels (the colour rules are in
the package's docstring); large images are reduced on the Blender side to what the worker needs
(twice the processing resolution), reading Blender's pixels once into one float32 buffer and
averaging it strip by strip, so no second full-size float copy is ever made.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import bpy
import numpy as np

from ...core import exif, image_files
from ...core.shading import linear_to_srgb
from .. import naming

# The worker never needs more than this many pixels per processing-resolution pixel of edge.
OVERSAMPLE = 2
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


JOB_STEM_CHARS = 40


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


def image_file_path(image: bpy.types.Image) -> str:
    """The absolute file an image reads its pixels from; "" for packed and generated images."""
    if image.source not in ('FILE', 'SEQUENCE', 'MOVIE') or not image.filepath or image.packed_file:
        return ""
    return os.path.normpath(bpy.path.abspath(image.filepath, library=image.library))


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
    full_name = name or naming.stem(image.name)
    name = naming.short_stem(full_name)
    # Job files are the worker's, never the artist's: a short name keeps the job folder's paths
    # (deep in the extension's user folder, plus the worker's "_normal.npy.partial") under
    # Windows' 260 characters; results take their names from ``name``.
    path = _write_npy(array, job_dir, f"{index:04d}_{naming.file_stem(name)[:JOB_STEM_CHARS]}")
    source_path = image_file_path(image) if source_path is None else source_path
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
        path = image_file_path(image)
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
