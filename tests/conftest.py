"""Shared fixtures.

Blender is the PyPI ``bpy`` module. Its user folders are redirected to a throwaway directory
before bpy is first imported, so tests never touch the real user's configuration.

tests/run.py runs this suite once per Blender version. With LOTUS_TEST_BLENDER_ONLY set, only the
tests that exercise Blender run (those using the ``blender_addon`` fixture, or marked ``blender``
because they start a Blender process of their own); the core, worker and build tests ran already.
LOTUS_TEST_WORKER_PYTHON names the worker Python (torch, diffusers) when this one has no torch.
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # tests import core/protocol directly (never inside Blender)

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="lotus-blender-user-"))


# The worker's own tests need torch in this interpreter; the Blender-only sessions do not collect
# them at all (they ran in the worker environment).
collect_ignore_glob = ["test_engine*.py", "test_warm_models.py"] if os.environ.get("LOTUS_TEST_BLENDER_ONLY") else []


def pytest_configure(config):
    config.addinivalue_line("markers", "blender: starts a Blender (bpy) process of its own")


def is_blender_test(item) -> bool:
    return "blender_addon" in getattr(item, "fixturenames", ()) or \
        item.get_closest_marker("blender") is not None


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("LOTUS_TEST_BLENDER_ONLY"):
        return
    keep = [item for item in items if is_blender_test(item)]
    config.hook.pytest_deselected(items=[item for item in items if not is_blender_test(item)])
    items[:] = keep


def pytest_sessionfinish(session, exitstatus):
    session.config.lotus_exitstatus = int(exitstatus)


def pytest_unconfigure(config):
    # The bpy module's own shutdown can crash (PyPI bpy 4.2.x segfaults at exit once an extension
    # registered) or hang (4.5.x after load_scripts(reload_scripts=True)). Everything this run
    # reports (summary, JUnit file) is written by now, so leave without running it.
    if "bpy" in sys.modules and hasattr(config, "lotus_exitstatus"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.lotus_exitstatus)


@pytest.fixture(scope="session")
def blender_addon(tmp_path_factory):
    """The extension installed the way Blender installs it: a repository + addon_utils.enable.

    Yields the add-on's module name, ``bl_ext.lotus_test.lotus_blender``.
    """
    from tests import blender_env
    repo_dir = tmp_path_factory.mktemp("extension-repo")
    module_name = blender_env.install_extension(repo_dir)
    yield module_name
    blender_env.disable_extension(module_name)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Tiny random-weight Lotus checkpoints (real diffusers layout), built once per session.

    Keys are (variant, kind): ("G"|"D", "disparity"|"depth"|"normal"); values are folders, each
    with a ``lotus.json`` recording its kind (a local folder has no repo id to recognise).
    """
    from tests.tiny_lotus import make_tiny_checkpoints
    root = tmp_path_factory.mktemp("tiny-lotus")
    wanted = [("G", "disparity"), ("D", "disparity"), ("G", "normal"), ("D", "normal"),
              ("G", "depth")]
    return make_tiny_checkpoints(root, wanted)


@pytest.fixture(scope="session")
def ground_truth_scene(blender_addon):
    """The known Cycles scene (tests/ground_truth.py), rendered once per session; its datablocks are gone."""
    from tests.ground_truth import render_ground_truth
    return render_ground_truth()


@pytest.fixture
def lotus(blender_addon, tiny_checkpoints, tmp_path):
    """The Blender side's live modules, preferences set to the tiny checkpoints; maps go to
    ``lotus.out``."""
    from tests.blender_side import configure, live
    out = tmp_path / "maps"
    configure(blender_addon, tiny_checkpoints, str(out))
    modules = live(blender_addon)
    modules.out = out
    modules.name = blender_addon
    return modules


@pytest.fixture
def fresh_data(blender_addon):
    """Removes every datablock a test creates (objects, meshes, materials, images, ...)."""
    import bpy
    kinds = ("objects", "meshes", "materials", "images", "cameras", "lights", "worlds", "scenes",
             "node_groups")
    before = {kind: set(getattr(bpy.data, kind)) for kind in kinds}
    yield
    for kind in kinds:
        collection = getattr(bpy.data, kind)
        for block in [b for b in collection if b not in before[kind]]:
            collection.remove(block)
