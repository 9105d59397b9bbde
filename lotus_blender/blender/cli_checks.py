"""The command line's checks before any work: each finds one kind of bad usage and says it in one
line (UsageError, or models.ModelError for a model), so that a farm task fails at once with exit
status 2 instead of frame by frame."""

from __future__ import annotations

import os
import re
import tempfile

import bpy

from .. import protocol
from . import cli_sources, models

# What a farm manager passes for a value it does not have (Flamenco's worker: "<nil>").
PLACEHOLDERS = ("", "<nil>", "none", "null", "undefined")


class UsageError(ValueError):
    """Bad usage of the command, found before any work: one line, exit status 2."""


def output_folder(text: str) -> str:
    """The absolute output folder; UsageError when it is not set (empty or a farm's placeholder)
    or is a file. Nothing is created."""
    if (text or "").strip().lower() in PLACEHOLDERS:
        raise UsageError(f"The output folder is not set (--output {text!r}): give the folder the "
                         f"maps are written to")
    folder = os.path.abspath(bpy.path.abspath(text.strip()))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"The output folder {folder} is a file, not a folder")
    return folder


def make_output_folder(folder: str) -> None:
    """Create the output folder and write a file into it; UsageError naming it when it fails."""
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".lotus-write-check-", dir=folder)
        os.close(handle)
        os.remove(probe)
    except OSError as ex:
        raise UsageError(f"Cannot write to the output folder {folder}: "
                         f"{ex.strerror or ex}") from None


def check_frames_apply(frames_text: str | None, paths: list[str],
                       sources: list[cli_sources.Source]) -> None:
    """--frames picks frames of sequences and movies: given with a single image (a frame picked
    in a file browser: shot_1001.exr), it would be ignored, so it is a usage error."""
    if not frames_text:
        return
    wanted = {os.path.abspath(path) for path in paths}
    for source in sources:
        if source.kind == cli_sources.IMAGE and source.path in wanted:
            folder, filename = os.path.split(source.path)
            stem, extension = os.path.splitext(filename)
            match = re.match(r"^(.*?)(\d+)(\D*)$", stem)
            hint = "give a sequence (NAME_####.EXT), its folder or a movie"
            if match:
                prefix, digits, suffix = match.groups()
                pattern = f"{prefix}{'#' * len(digits)}{suffix}{extension}"
                hint = f"give the sequence as {os.path.join(folder, pattern)}"
            raise UsageError(f"--frames {frames_text} picks frames of sequences and movies, but "
                             f"{source.path} is a single image: {hint}")
    if not any(source.is_clip for source in sources):
        raise UsageError(f"--frames {frames_text} picks frames of sequences and movies, and the "
                         f"inputs hold single images only")


def resolve_models(args, tasks: list[str]) -> dict:
    """Every task's model, resolved and checked (exists, is a Lotus checkpoint, predicts the
    task) before the first frame; ModelError when one is not usable."""
    chosen = {}
    for task in tasks:
        kind = args.depth_kind if task == protocol.TASK_DEPTH else None
        chosen[task] = models.model_from_argument(task, getattr(args, f"{task}_model"), kind)
        models.check_model(task, chosen[task],
                           "say it with --depth-kind" if task == protocol.TASK_DEPTH else "")
    return chosen
