"""Install the extension into the bpy module the way Blender itself does."""

import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ID = "lotus_blender"
TEST_REPO_MODULE = "lotus_test"


def worker_python_preference() -> str:
    """The Worker Python preference for tests: empty (Blender's own Python) when it has the
    worker's packages, else the worker environment's Python that tests/run.py names."""
    worker = os.environ.get("LOTUS_TEST_WORKER_PYTHON", "")
    if not worker or os.path.abspath(worker) == os.path.abspath(sys.executable):
        return ""
    return worker


def stage_extension(dest: Path) -> Path:
    """Copy the package and its manifest into dest/lotus_blender, as an installed extension looks."""
    target = dest / PACKAGE_ID
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(REPO_ROOT / PACKAGE_ID, target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO_ROOT / "blender_manifest.toml", target / "blender_manifest.toml")
    return target


def install_extension(repo_dir: Path) -> str:
    import bpy  # first: bpy puts Blender's own modules (addon_utils) on sys.path
    import addon_utils

    repos = bpy.context.preferences.extensions.repos
    repo = next((r for r in repos if r.module == TEST_REPO_MODULE), None)
    if repo is None:
        repo = repos.new(name="Lotus Test", module=TEST_REPO_MODULE,
                         custom_directory=str(repo_dir), source='USER')
    stage_extension(Path(repo.directory))
    module_name = f"bl_ext.{TEST_REPO_MODULE}.{PACKAGE_ID}"
    addon_utils.extensions_refresh(ensure_wheels=True, addon_modules_pending=[module_name])
    mod = addon_utils.enable(module_name, default_set=True, handle_error=_raise)
    if mod is None:
        raise RuntimeError(f"could not enable {module_name}")
    return module_name


def disable_extension(module_name: str) -> None:
    import bpy  # noqa: F401
    import addon_utils
    addon_utils.disable(module_name, default_set=True, handle_error=_raise)


def _raise(ex):
    raise ex


def worker_processes() -> list[int]:
    """PIDs of live Lotus worker processes started by this test process (Linux /proc)."""
    import os
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # Field 4 of /proc/PID/stat is the parent PID; state Z (zombie) means already exited.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and "lotus_blender.worker" in cmdline:
            pids.append(int(entry.name))
    return pids


def compat():
    """The installed add-on's compatibility module (Blender API differences 4.2 .. 5.2), which
    the tests use too for what differs between the Blender versions they run on."""
    import importlib
    return importlib.import_module(f"bl_ext.{TEST_REPO_MODULE}.{PACKAGE_ID}.blender.compat")


def exit_child(code: int = 0) -> None:
    """End a child Blender process once it has printed its report, skipping the bpy module's own
    shutdown: PyPI bpy 4.2.x can segfault there once an extension registered, and 4.5.x hangs
    after load_scripts(reload_scripts=True). The parent judges what the child reported."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
