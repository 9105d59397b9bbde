"""Image files written safely with Blender's own writers.

Every file is written under a temporary name in its final folder (".photo_depth.<pid>-<n>.partial.exr")
and renamed only once it is complete: flushed to disk and, for PNG and OpenEXR, checked to end where
its own structure says. A full disk or a refused write therefore never leaves a truncated or empty
file under a real name (Blender crashes on truncated EXRs and shows 0-byte PNGs as missing).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil

import bpy

from ..core import image_files

_partial_numbers = itertools.count(1)
# Below this many free bytes a failed write is put down to a full disk.
LOW_SPACE_BYTES = 1 << 20


class OutputError(RuntimeError):
    """A file or folder could not be written; what was being made stays in Blender."""

    def __init__(self, path: str, reason: str, action: str = "write"):
        self.path, self.reason, self.action = path, reason, action
        super().__init__(f"Cannot {action} {path}: {reason}")


def save_render(image, path: str, scene) -> None:
    """Blender writes the image with the scene's image settings (tests replace this to fail)."""
    image.save_render(path, scene=scene)


def save_as(image, path: str) -> None:
    """Blender writes the image's own buffer in its file_format, untouched by any view transform
    (a float buffer as 16-bit PNG); its file path stays as it is (tests replace this to fail)."""
    image.save(filepath=path)


def write_image_copy(image, path: str, file_format: str = 'PNG') -> str:
    """The image's pixels as they are into path, atomically (see write_atomically)."""
    image.file_format = file_format
    return write_atomically(path, file_format, lambda temporary: save_as(image, temporary))


def partial_path(path: str) -> str:
    folder, filename = os.path.split(path)
    stem, extension = os.path.splitext(filename)
    return os.path.join(folder, f".{stem}.{os.getpid()}-{next(_partial_numbers)}.partial{extension}")


def _low_space(folder: str) -> bool:
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def failure_reason(error: BaseException, folder: str) -> str:
    """A short reason for a failed write, in words an artist can act on."""
    if _low_space(folder):
        return "the disk is full"
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):
        return "no permission to write there"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    # Blender's messages look like "Error: Could not write image: <why>, '<path>'".
    text = re.sub(r"^(error:\s*)?(could not (write|save) image:?\s*)?", "", str(error).strip(),
                  flags=re.IGNORECASE)
    text = re.sub(r",?\s*'[^']*'\s*$", "", text).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else "the file could not be written"


def _complete(path: str, file_format: str) -> bool:
    if os.path.getsize(path) == 0:
        return False
    if file_format == 'PNG':
        return image_files.png_complete(path)
    if file_format == 'OPEN_EXR':
        return image_files.exr_complete(path) is not False
    return True


def _flush_to_disk(path: str) -> None:
    """Errors the file system only reports when the data reaches the disk surface here."""
    with open(path, "ab") as handle:
        os.fsync(handle.fileno())


def write_atomically(path: str, file_format: str, write) -> str:
    """``write(temporary_path)`` then rename to ``path``; OutputError, with nothing left behind,
    when anything fails or the file comes out incomplete."""
    temporary = partial_path(path)
    folder = os.path.dirname(path)
    try:
        write(temporary)
        if not os.path.isfile(temporary):
            raise OutputError(path, "the file could not be written")
        _flush_to_disk(temporary)
        if not _complete(temporary, file_format):
            raise OutputError(path, "the disk is full" if _low_space(folder)
                              else "the file came out incomplete")
        os.replace(temporary, path)
    except OutputError:
        raise
    except (OSError, RuntimeError) as ex:
        raise OutputError(path, failure_reason(ex, folder)) from None
    finally:
        if os.path.exists(temporary):
            try:
                os.remove(temporary)
            except OSError:
                pass
    return path


class WriterScene:
    """A throwaway scene whose image settings say how Blender writes a file. Its view transform
    is Standard with no look: a new scene's default (AgX from Blender 4.0) would change the
    colours of 8-bit files such as the depth preview (by up to 35/255), and the file would
    differ from the image the .blend holds."""

    def __enter__(self):
        self.scene = bpy.data.scenes.new("lotus_write")
        view = self.scene.view_settings
        view.view_transform = 'Standard'
        view.look = 'None'
        view.exposure, view.gamma = 0.0, 1.0
        view.use_curve_mapping = False
        return self

    def write(self, image, path: str, file_format: str, depth: str, mode: str = 'RGB') -> str:
        settings = self.scene.render.image_settings
        settings.file_format = file_format
        settings.color_mode = mode
        settings.color_depth = depth
        if file_format == 'OPEN_EXR':
            settings.exr_codec = 'ZIP'
        return write_atomically(path, file_format,
                                lambda temporary: save_render(image, temporary, self.scene))

    def __exit__(self, *exc):
        bpy.data.scenes.remove(self.scene)
        return False


def ensure_folder(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as ex:
        raise OutputError(folder, (ex.strerror or str(ex)).lower(), "create the folder") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(folder, "no permission to write there", "write into")


def describe_failures(failures: list[OutputError], kept: str) -> str:
    """One message for every file of a run that could not be written, grouped by folder and
    reason: "Could not write 3 files in /out (the disk is full): a.exr, b.png, c.png. <kept>"."""
    if not failures:
        return ""
    groups: dict[tuple, list[str]] = {}
    for failure in failures:
        if failure.action != "write":
            key = (failure.action, failure.path, failure.reason)
            groups.setdefault(key, [])
            continue
        key = ("write", os.path.dirname(failure.path), failure.reason)
        name = os.path.basename(failure.path)
        if name not in groups.setdefault(key, []):
            groups[key].append(name)
    parts = []
    for (action, where, reason), names in groups.items():
        if action != "write":
            parts.append(f"Could not {action} {where} ({reason})")
        else:
            count = f"{len(names)} files" if len(names) > 1 else "a file"
            parts.append(f"Could not write {count} in {where} ({reason}): {', '.join(names)}")
    return "; ".join(parts) + (f". {kept}" if kept else "")
