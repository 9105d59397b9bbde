"""Where results' files go: the output folder (a temporary one while the .blend is unsaved), names
that never overwrite a file, and what saving the .blend does with results still in the temporary
folder (moved next to it) or packing does (into the .blend)."""

from __future__ import annotations

import os
import shutil
import tempfile

import bpy

from ..files import OutputError, ensure_folder

SUFFIX_LIMIT = 999


def temporary_output_folder() -> str:
    # Not bpy.app.tempdir: Blender deletes that one on exit, and the images point at these files.
    return os.path.join(tempfile.gettempdir(), "lotus_blender")


def resolve_output_folder(preferred: str) -> tuple[str, bool]:
    """The absolute output folder, and whether it is a temporary one (unsaved .blend)."""
    preferred = preferred or "//lotus/"
    if preferred.startswith("//") and not bpy.data.filepath:
        return temporary_output_folder(), True
    return os.path.normpath(bpy.path.abspath(preferred)), False


def unique_path(folder: str, stem: str, extension: str) -> str:
    """folder/stem.ext, or stem_001.ext, stem_002.ext... when taken: never overwrite a file."""
    candidate = os.path.join(folder, stem + extension)
    number = 0
    while os.path.exists(candidate):
        number += 1
        if number > SUFFIX_LIMIT:
            raise OutputError(os.path.join(folder, stem + extension),
                              f"too many files named {stem}_NNN{extension}")
        candidate = os.path.join(folder, f"{stem}_{number:03d}{extension}")
    return candidate


def unique_sequence_stem(folder: str, stem: str, extension: str, frames: list[int]) -> str:
    """A stem such that none of stem_FFFF.ext exists for the given frames."""
    number = 0
    candidate = stem
    while any(os.path.exists(os.path.join(folder, f"{candidate}_{f:04d}{extension}")) for f in frames):
        number += 1
        if number > SUFFIX_LIMIT:
            raise OutputError(os.path.join(folder, stem + extension),
                              f"too many {stem} sequences")
        candidate = f"{stem}_{number:03d}"
    return candidate


def stored_path(path: str) -> str:
    """A path as the .blend keeps it: relative to the .blend when it is saved."""
    return bpy.path.relpath(path) if bpy.data.filepath else path


def pack_results() -> int:
    """Pack every Lotus result image into the .blend (for unsaved files written to a temp folder)."""
    count = 0
    for image in bpy.data.images:
        if ("lotus_kind" in image or _in_temporary_folder(image)) and image.packed_file is None \
                and image.source in ('FILE', 'GENERATED'):
            image.pack()
            count += 1
    return count


def _in_temporary_folder(image) -> str:
    """The absolute file of an image that still lives in the temporary output folder, else ""."""
    if image.packed_file is not None or image.source not in ('FILE', 'SEQUENCE') \
            or not image.filepath:
        return ""
    path = os.path.normpath(bpy.path.abspath(image.filepath, library=image.library))
    temporary = os.path.normpath(temporary_output_folder())
    return path if path.startswith(temporary + os.sep) else ""


def results_in_temporary_folder() -> list:
    """The images whose files are in the temporary folder, which the system cleans."""
    return [image for image in bpy.data.images if _in_temporary_folder(image)]


def _move_file(source: str, dest: str) -> None:
    """Copy under a partial name beside dest, rename into place, then remove the source: dest
    is whole or absent, and the source stays until it is."""
    partial = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.{os.getpid()}.partial")
    try:
        shutil.copy2(source, partial)
        os.replace(partial, dest)
    except OSError:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    os.remove(source)


def move_temporary_results(blend_path: str, preferred: str) -> list[str]:
    """Saving the .blend at blend_path: results still in the temporary folder move to the output
    folder it resolves to (``//lotus/`` next to it by default), and their images point there
    (absolute here; Blender's save makes them relative). Returns what could not be moved, one
    line each: those images keep their files where they are (and the panel keeps warning)."""
    preferred = preferred or "//lotus/"
    base = os.path.dirname(os.path.abspath(blend_path))
    folder = os.path.normpath(os.path.join(base, preferred[2:]) if preferred.startswith("//")
                              else bpy.path.abspath(preferred))
    if folder.startswith(os.path.normpath(temporary_output_folder())):
        return []
    moved, problems = {}, []
    for image in results_in_temporary_folder():
        source = _in_temporary_folder(image)
        try:
            if source not in moved:
                ensure_folder(folder)
                moved[source] = _move_result_files(image, source, folder)
        except (OSError, OutputError) as ex:
            problems.append(f"{image.name}: could not move {source} to {folder}: {ex}")
            continue
        image.filepath_raw = moved[source]  # the same pixels: no reload
    return problems


def _move_result_files(image, source: str, folder: str) -> str:
    """Move an image's file (every frame of a sequence) into folder; the new path."""
    stem, extension = os.path.splitext(os.path.basename(source))
    if image.source != 'SEQUENCE' or not stem[-4:].isdigit() or stem[-5:-4] != "_":
        dest = unique_path(folder, stem, extension)
        _move_file(source, dest)
        return dest
    base, frames = stem[:-5], []
    for name in os.listdir(os.path.dirname(source)):
        frame = name[len(base) + 1:-len(extension)] if name.endswith(extension) else ""
        if name.startswith(base + "_") and len(frame) == 4 and frame.isdigit():
            frames.append(int(frame))
    new_base = unique_sequence_stem(folder, base, extension, frames)
    for frame in sorted(frames):
        _move_file(os.path.join(os.path.dirname(source), f"{base}_{frame:04d}{extension}"),
                   os.path.join(folder, f"{new_base}_{frame:04d}{extension}"))
    return os.path.join(folder, f"{new_base}{stem[-5:]}{extension}")
