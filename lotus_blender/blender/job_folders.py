"""The extension's per-user folders (models, logs, jobs) and the job folders in them.

Every run, from the panel or the command line, keeps its inputs and the worker's arrays in a job
folder named by one rule (``new_job_folder``), so that any Blender can tell whose a leftover
folder is and prune those of processes that are gone.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import sys
import time

import bpy

from .preferences import ADDON_ID
from .processes import process_alive

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_folder(*parts: str) -> str:
    """The extension's per-user folder (models, logs, jobs), created on demand."""
    path = bpy.utils.extension_path_user(ADDON_ID, path=os.path.join(*parts) if parts else "",
                                         create=True)
    return path


def jobs_folder() -> str:
    return user_folder("jobs")


def models_folder() -> str:
    return user_folder("models")


def log_path() -> str:
    return os.path.join(user_folder("logs"), "worker.log")


def extension_site_packages() -> str:
    """Where Blender installs the wheels extensions bundle (shared by all extensions)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return os.path.join(bpy.utils.user_resource('EXTENSIONS', path=".local"), "lib", version,
                        "site-packages")


# -- job folders ----------------------------------------------------------------------------------

# Folders of runs whose files could not be written keep their arrays; at most this many are
# kept, older ones (and any left by a crash or a killed Blender) go when the next run starts.
KEEP_JOB_FOLDERS = 3
# "<date>-<time>-<pid>-<n>", then "-<tag>" for the command line's ("-cli"): the pid says whose.
_JOB_FOLDER = re.compile(r"^\d{8}-\d{6}-(?P<pid>\d+)-\d+(?:-[a-z]+)?$")
_folder_numbers = itertools.count(1)


def job_folder_name(tag: str = "") -> str:
    """A new job folder's name for this process (the rule ``folder_pid`` reads back)."""
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_folder_numbers)}"
    return f"{name}-{tag}" if tag else name


def new_job_folder(tag: str = "") -> str:
    """Create a job folder of this process under the jobs folder; returns its path."""
    return user_folder("jobs", job_folder_name(tag))


def folder_pid(name: str) -> int:
    """The process id in a job folder's name; 0 when the name does not follow the rule."""
    match = _JOB_FOLDER.match(name)
    return int(match.group("pid")) if match else 0


# Windows reuses process ids soonest: there a folder whose process id runs still counts as a
# leftover this long after it last changed.
OTHER_PROCESS_GRACE_S = 24 * 3600


def _owner_running(path: str) -> bool:
    pid = folder_pid(os.path.basename(path))
    if pid == os.getpid() or not process_alive(pid):
        return False  # ours (not in use, see prune) or gone
    return os.name != "nt" or time.time() - os.path.getmtime(path) < OTHER_PROCESS_GRACE_S


def prune_job_folders(in_use=(), keep: int = KEEP_JOB_FOLDERS) -> list[str]:
    """Remove leftover job folders beyond the ``keep`` newest. Folders in ``in_use`` (this
    Blender's queued or running jobs) and those of other running processes (Blenders, command-line
    runs) are left alone. Returns the removed paths."""
    root = jobs_folder()
    active = {os.path.normpath(folder) for folder in in_use}
    try:
        entries = [os.path.join(root, name) for name in os.listdir(root)]
    except OSError:
        return []
    leftovers = [path for path in entries if os.path.isdir(path)
                 and os.path.normpath(path) not in active and not _owner_running(path)]
    leftovers.sort(key=lambda path: os.path.getmtime(path), reverse=True)
    removed = []
    for path in leftovers[keep:]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
