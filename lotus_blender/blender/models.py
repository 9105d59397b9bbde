"""Which checkpoint a job uses: the protocol MODEL dict, from the preferences (the panel) or from
a repo id / folder given on the command line, and the command line's check before any work."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import bpy

from .. import protocol
from ..worker import checkpoint  # standard library only: reads the checkpoint's files, no torch
from .job_folders import models_folder
from .preferences import BUNDLED_PREFIX, bundled_models, get_preferences


class ModelError(RuntimeError):
    """The chosen model cannot be used as it is (missing folder, offline and not downloaded)."""


def _snapshot(repo_id: str, cache_dir: str) -> str:
    """The downloaded snapshot folder of a repo in the models folder, or ""."""
    snapshots = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"), "snapshots")
    found = sorted(glob.glob(os.path.join(snapshots, "*", "unet", "config.json")))
    return os.path.dirname(os.path.dirname(found[-1])) if found else ""


def downloaded(repo_id: str, cache_dir: str) -> bool:
    return bool(_snapshot(repo_id, cache_dir))


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _kind_label(task: str) -> str:
    """The Model Output choices as the preferences show them: "Disparity or Depth"."""
    return " or ".join(kind.capitalize() for kind in protocol.kinds_for(task))


def unknown_kind_message(task: str, source: str) -> str:
    return (f"Lotus cannot tell what {source} predicts: set {task.capitalize()} Model Output "
            f"({_kind_label(task)}) in the Lotus add-on preferences")


def model_request(task: str, context=None) -> dict:
    """The protocol MODEL dict for a task, from the preferences; ModelError when unusable."""
    prefs = get_preferences(context)
    choice = getattr(prefs, f"{task}_model")
    cache_dir = models_folder()
    kind_choice = getattr(prefs, f"{task}_model_kind")
    kind = None if kind_choice == 'AUTO' else kind_choice.lower()
    if choice == 'LOCAL':
        folder = bpy.path.abspath(getattr(prefs, f"{task}_model_path"))
        if not folder or not os.path.isdir(folder):
            raise ModelError(f"The local {task} model folder does not exist: '{folder}'. "
                             f"Set it in the add-on preferences")
        # Without a kind the worker recognises it (lotus.json, a known repo's folder) or asks.
        return protocol.model_spec(os.path.normpath(folder), cache_dir, kind=kind)
    if choice.startswith(BUNDLED_PREFIX):
        folder = bundled_models(task).get(choice[len(BUNDLED_PREFIX):])
        if folder is None:
            raise ModelError(f"The bundled model {choice[len(BUNDLED_PREFIX):]} is missing from "
                             f"the extension; choose another model in the preferences")
        # The bundle's lotus.json says what it predicts.
        return protocol.model_spec(folder, cache_dir)
    if choice == 'REPO':
        choice = getattr(prefs, f"{task}_model_repo").strip()
        if not _REPO_ID.match(choice):
            raise ModelError(f"Set the {task} model's Hugging Face repo id (owner/name) in the "
                             f"Lotus add-on preferences (now '{choice}')")
        if kind is None and choice not in protocol.KNOWN_CHECKPOINTS:
            # Asked before any download: never guessed from the task.
            raise ModelError(unknown_kind_message(task, choice))
    else:
        kind = None  # a known checkpoint: the worker knows what it predicts
    online = bool(bpy.app.online_access)
    if not online and not downloaded(choice, cache_dir):
        raise ModelError(
            f"The model {choice} is not downloaded and Blender's online access is off. Enable "
            f"Edit > Preferences > System > Network > Allow Online Access to download it, "
            f"or choose a Local Folder model in the Lotus add-on preferences")
    return protocol.model_spec(choice, cache_dir, online, kind)


def preferences_model_label(task: str, context=None) -> str:
    """What the preferences choose for a task, as a person would name it: the repo id, the local
    folder or the bundle (the command line's --help shows it as the default)."""
    prefs = get_preferences(context)
    choice = getattr(prefs, f"{task}_model")
    if choice == 'LOCAL':
        folder = getattr(prefs, f"{task}_model_path")
        return f"the folder {bpy.path.abspath(folder)}" if folder else "a local folder, not set"
    if choice == 'REPO':
        return getattr(prefs, f"{task}_model_repo").strip() or "a repo id, not set"
    if choice.startswith(BUNDLED_PREFIX):
        return f"{choice[len(BUNDLED_PREFIX):]}, bundled"
    return choice


def model_from_argument(task: str, choice: str | None, kind: str | None = None) -> dict:
    """The protocol MODEL for a task: the preferences', or a repo id / folder given on the
    command line (``kind``: what a folder without lotus.json predicts)."""
    if not choice:
        return model_request(task)
    cache_dir = models_folder()
    if os.path.isdir(choice):
        return protocol.model_spec(os.path.abspath(choice), cache_dir, kind=kind)
    if not _REPO_ID.match(choice):
        raise ModelError(f"The {task} model {choice} is neither a folder nor a Hugging Face repo "
                         f"id (owner/name)")
    online = bool(bpy.app.online_access)
    if not online and not downloaded(choice, cache_dir):
        raise ModelError(f"The {task} model {choice} is not a folder, and as a Hugging Face repo "
                         f"it is not downloaded and online access is off: run once with "
                         f"Blender's --online-mode, or give a folder")
    return protocol.model_spec(choice, cache_dir, online, kind)


def check_model(task: str, model: dict, kind_option: str = "") -> None:
    """Before any work: the checkpoint exists, is a Lotus checkpoint and predicts ``task``, read
    from its files the way the worker reads them (worker.checkpoint). A repo that is not
    downloaded yet is checked by its id; its files are checked when it is downloaded.
    ``kind_option``: how the caller lets the user say what a model predicts. ModelError if not."""
    source = model["source"]
    kind = model.get("kind")
    try:
        if os.path.isdir(source):
            checkpoint.inspect_checkpoint(Path(source), task, kind_override=kind,
                                          prompt_cache_dir=Path(model["cache_dir"]))
            return
        folder = _snapshot(source, model["cache_dir"])
        if folder:
            checkpoint.inspect_checkpoint(Path(folder), task, repo_id=source, kind_override=kind,
                                          prompt_cache_dir=Path(model["cache_dir"]))
            return
        kind = kind or protocol.KNOWN_CHECKPOINTS.get(source)
        if kind is None:
            raise checkpoint.UnknownKindError(
                f"cannot tell what {source} predicts: it is not a known Lotus checkpoint", source)
        if kind not in protocol.kinds_for(task):
            raise checkpoint.CheckpointError(f"{source} predicts {kind}, it cannot be used for "
                                             f"{task}")
    except checkpoint.UnknownKindError as ex:
        hint = f" ({kind_option})" if kind_option else ""
        raise ModelError(f"The {task} model: {ex}{hint}") from None
    except checkpoint.CheckpointError as ex:
        raise ModelError(f"The {task} model: {ex}") from None
