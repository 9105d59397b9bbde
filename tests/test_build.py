"""build.py: the default build installed and enabled by the Blender under test, the light build
(--torch none) end to end, the wheel cache, the repository, and failures.

The light builds still resolve and bundle the worker's non-torch wheels from the package index, so
these tests exercise the real pip resolution. The default build uses the repository's wheel cache
(wheels/): after the first build it downloads nothing and takes seconds.
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build.py"


def run_build(*args, env=None, cwd=ROOT, script=BUILD, python_flags=()):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, *python_flags, str(script), *args], cwd=cwd,
                          capture_output=True, text=True, env=full_env, timeout=900)


def blender_ext():
    import importlib.util
    bpy_dir = Path(list(importlib.util.find_spec("bpy").submodule_search_locations)[0])
    return sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))[-1]


def official_tags():
    import importlib.util
    bpy_dir = Path(list(importlib.util.find_spec("bpy").submodule_search_locations)[0])
    return sorted(bpy_dir.glob("*/scripts/modules/_bpy_internal/extensions/tags.py"))[-1]


def this_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def python_tag(python: str) -> str:
    return "cp" + python.replace(".", "")


def wheel_pythons(name: str) -> set:
    """The Python tags of a wheel file name: {'cp311'}, {'py3'}, {'cp310-abi3'}, ..."""
    python, abi = name[:-len(".whl")].split("-")[-3:-1]
    return {f"{tag}-abi3" if abi == "abi3" else tag for tag in python.split(".")}


def assert_wheels_only_for(python: str, wheels: list[str]) -> None:
    """Every bundled wheel runs on this Python, and some are specific to it (so Blender reads the
    zip's Python version from them)."""
    tag = python_tag(python)
    specific = [w for w in wheels if tag in wheel_pythons(w)]
    assert specific, wheels
    for wheel in wheels:
        tags = wheel_pythons(wheel)
        assert tag in tags or tags & {"py3", "py2"} or any(t.endswith("-abi3") for t in tags), wheel


# What each default zip's build line says it installs on.
INSTALLS_ON = {"3.11": "installs on Blender 4.2 to 5.0 on Python 3.11",
               "3.13": "installs on official Blender 5.1 and newer (Python 3.13) and Linux distro "
                       "builds of Blender 4.2+ on Python 3.13",
               "3.14": "installs on Linux distro builds of Blender 4.2+ on Python 3.14"}
DEFAULT_PYTHONS = tuple(INSTALLS_ON)


def zip_manifest(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return tomllib.loads(zf.read("blender_manifest.toml").decode())


# An environment in which pip cannot reach any index: proves a build downloads nothing.
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "",
               "PIP_INDEX_URL": "file:///nonexistent-index"}


@pytest.fixture(scope="module")
def light_build(tmp_path_factory):
    # The repository's wheel cache, as the default build uses: on a fresh machine (CI) the first
    # run resolves from the index, every later run (another Blender version) reuses it.
    base = tmp_path_factory.mktemp("build")
    cache, dist = ROOT / "wheels", base / "dist"
    proc = run_build("--torch", "none", "--wheel-cache", str(cache), "--output-dir", str(dist))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zips = sorted(dist.glob("*.zip"))
    return {"proc": proc, "cache": cache, "dist": dist, "zips": zips, "base": base}


def test_source_manifest_passes_strict_validation(tmp_path):
    from tests.blender_env import stage_extension
    staged = stage_extension(tmp_path)
    proc = subprocess.run([sys.executable, str(blender_ext()), "validate", "--valid-tags",
                           str(official_tags()), str(staged)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert manifest["id"] == "lotus_blender"
    assert len(manifest["tagline"]) <= 64 and manifest["tagline"][-1].isalnum()
    assert manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert set(manifest["platforms"]) >= {"windows-x64", "macos-arm64", "linux-x64"}
    assert set(manifest["permissions"]) == {"files", "network"}
    assert "wheels" not in manifest  # the source manifest stays clean; builds write their own


def test_light_build_zips(light_build):
    """One light zip per Blender Python, each with only that Python's wheels."""
    proc, zips = light_build["proc"], light_build["zips"]
    assert [z.name for z in zips] == [f"lotus_blender-0.1.0-linux_x64-{python_tag(python)}-torch-none.zip"
                                      for python in DEFAULT_PYTHONS]
    assert "Install from Disk" in proc.stdout
    for zip_path, python in zip(zips, DEFAULT_PYTHONS):
        line = next(ln for ln in proc.stdout.splitlines() if str(zip_path) in ln)
        assert "MiB" in line and "light" in line
        assert INSTALLS_ON[python] in line
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
        manifest = zip_manifest(zip_path)
        wheels = [n for n in names if n.startswith("wheels/") and n.endswith(".whl")]
        assert any(n.startswith("wheels/diffusers-") for n in wheels)
        assert not any(n.startswith(("wheels/numpy-", "wheels/torch-")) for n in wheels)
        assert sorted("./" + w for w in wheels) == sorted(manifest["wheels"])
        assert_wheels_only_for(python, [w.split("/")[-1] for w in wheels])
        assert manifest["platforms"] == ["linux-x64"]
        assert manifest["blender_version_min"] == "4.2.0"
        # Official 5.1+ run Python 3.13: the cp311 zip is refused there at install time. The cp313
        # and cp314 zips have no maximum and also serve distro builds of 4.x on their Python.
        assert manifest.get("blender_version_max") == ("5.1.0" if python == "3.11" else None)
        assert "__init__.py" in names and "worker/__init__.py" in names and "protocol.py" in names
        assert not any("__pycache__" in n for n in names)
    # The source manifest was not touched by the build.
    assert "wheels" not in tomllib.loads((ROOT / "blender_manifest.toml").read_text())


def test_light_build_zips_validate(light_build):
    for zip_path in light_build["zips"]:
        proc = subprocess.run([sys.executable, str(blender_ext()), "validate", "--valid-tags",
                               str(official_tags()), str(zip_path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_second_build_downloads_nothing(light_build):
    dist2 = light_build["base"] / "dist2"
    proc = run_build("--torch", "none", "--wheel-cache", str(light_build["cache"]),
                     "--output-dir", str(dist2), env=OFFLINE_PIP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resolving wheels" not in proc.stdout
    assert len(list(dist2.glob("*.zip"))) == len(DEFAULT_PYTHONS)


def test_repo_serves_each_blender_the_zip_for_its_python(light_build, tmp_path):
    """`build.py repo DIR` lists every zip under one id; Blender's own tool, syncing from it,
    installs the cp311 zip on 4.2-5.0, the cp313 zip on 5.1+ and on a 4.x built on Python 3.13,
    the cp314 zip on a distro build on Python 3.14, and nothing on a Blender whose Python no zip
    serves."""
    import bpy
    repo = light_build["base"] / "static-repo"
    proc = run_build("repo", str(repo), "--torch", "none", "--wheel-cache", str(light_build["cache"]),
                     env=OFFLINE_PIP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "each Blender picks the zip" in proc.stdout
    entries = json.loads((repo / "index.json").read_text())["data"]
    assert [e["id"] for e in entries] == ["lotus_blender"] * len(DEFAULT_PYTHONS)
    assert sorted(tuple(e["python_versions"]) for e in entries) == [(p,) for p in DEFAULT_PYTHONS]
    assert all(e["platforms"] == ["linux-x64"] for e in entries)
    assert (repo / "index.html").is_file()
    assert all((repo / e["archive_url"].removeprefix("./")).is_file() for e in entries)

    tool = str(blender_ext())
    url = (repo / "index.json").as_uri()
    this_blender = "%d.%d.%d" % bpy.app.version
    this = "%d.%d.%d" % sys.version_info[:3]
    # (Blender, its Python, whether a zip serves it): this Blender, official builds, distro builds
    # (4.3 on Python 3.13, Debian unstable's 5.2 on 3.14), and a 5.1 on Python 3.11 that no zip
    # serves.
    cases = [(this_blender, this, True), ("4.2.23", "3.11.7", True), ("5.0.1", "3.11.13", True),
             ("5.2.3", "3.13.0", True), ("4.3.2", "3.13.1", True), ("5.2.2", "3.14.2", True),
             ("5.1.1", "3.11.7", False)]
    for number, (blender, python, served) in enumerate(cases):
        local = tmp_path / f"local{number}"
        local.mkdir()
        sync = subprocess.run([sys.executable, tool, "sync", "--remote-url", url, "--local-dir",
                               str(local)], capture_output=True, text=True)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        install = subprocess.run([sys.executable, tool, "install", "--remote-url", url, "--local-dir",
                                  str(local), "--local-cache", "0", "--blender-version", blender,
                                  "--python-version", python, "lotus_blender"],
                                 capture_output=True, text=True)
        manifest = local / "lotus_blender" / "blender_manifest.toml"
        if not served:
            assert "not compatible" in install.stdout and not manifest.exists(), install.stdout
            continue
        assert manifest.is_file(), (blender, python, install.stdout + install.stderr)
        assert_wheels_only_for(".".join(python.split(".")[:2]),
                               [w.split("/")[-1] for w in tomllib.loads(manifest.read_text())["wheels"]])


def _assert_clean_failure(proc, dist, needle):
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), proc.stderr
    assert needle in err[0], err[0]
    assert not list(Path(dist).glob("*.zip")) if Path(dist).exists() else True


def test_no_wheel_for_platform_is_one_clear_error(tmp_path):
    empty_links = tmp_path / "links"
    empty_links.mkdir()
    env = dict(OFFLINE_PIP, PIP_FIND_LINKS=str(empty_links))
    dist = tmp_path / "dist"
    proc = run_build("--torch", "none", "--wheel-cache", str(tmp_path / "cache"),
                     "--output-dir", str(dist), env=env)
    _assert_clean_failure(proc, dist, "no wheel of diffusers")
    assert not dist.exists()


def test_asked_for_cpu_torch_that_cannot_be_had_is_one_clear_error(tmp_path):
    """`--torch cpu` never falls back to a light zip: no torch wheel reachable is an error."""
    empty_links = tmp_path / "links"
    empty_links.mkdir()
    dist = tmp_path / "dist"
    proc = run_build("--torch", "cpu", "--python", "3.13", "--wheel-cache", str(tmp_path / "cache"),
                     "--output-dir", str(dist), env=dict(OFFLINE_PIP, PIP_FIND_LINKS=str(empty_links)))
    _assert_clean_failure(proc, dist, "no CPU build of torch 2.13.0 for linux-x64 / Python 3.13")
    assert "--torch auto for a light zip" in proc.stderr
    assert not dist.exists()


def test_pip_failure_is_one_clear_error(tmp_path):
    bad_config = tmp_path / "pip.conf"
    bad_config.write_text("this is [not an ini file\n")
    dist = tmp_path / "dist"
    proc = run_build("--torch", "none", "--wheel-cache", str(tmp_path / "cache"),
                     "--output-dir", str(dist), env={"PIP_CONFIG_FILE": str(bad_config)})
    _assert_clean_failure(proc, dist, "pip download failed")


def copy_sources(dest: Path) -> Path:
    dest.mkdir()
    shutil.copy2(BUILD, dest / "build.py")
    shutil.copy2(ROOT / "blender_manifest.toml", dest / "blender_manifest.toml")
    shutil.copytree(ROOT / "lotus_blender", dest / "lotus_blender",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_missing_blender_tool_is_one_clear_error(tmp_path):
    dist = tmp_path / "dist"
    copy = copy_sources(tmp_path / "src")
    # -S: no site-packages, and the copy has no .venv/: no bpy module, so no blender_ext.py.
    proc = run_build("--torch", "none", "--output-dir", str(dist), python_flags=("-S",),
                     script=copy / "build.py", cwd=copy)
    _assert_clean_failure(proc, dist, "extension tool not found")
    proc = run_build("--torch", "none", "--output-dir", str(dist), "--blender", str(tmp_path / "nope"))
    _assert_clean_failure(proc, dist, "no such program")


def test_invalid_manifest_is_one_clear_error(tmp_path):
    copy = copy_sources(tmp_path / "src")
    text = (ROOT / "blender_manifest.toml").read_text()
    tagline = tomllib.loads(text)["tagline"]
    # Blender rejects a tagline ending with punctuation.
    (copy / "blender_manifest.toml").write_text(text.replace(tagline, tagline + "."))
    dist = tmp_path / "dist"
    proc = run_build("--torch", "none", "--output-dir", str(dist), "--wheel-cache", str(tmp_path / "c"),
                     script=copy / "build.py", cwd=copy)
    _assert_clean_failure(proc, dist, "validate failed")
    assert not (tmp_path / "c").exists()  # rejected before any download


def test_bundled_model_ships_inside_the_zip(light_build, tiny_checkpoints, tmp_path):
    """--bundle-model: a compact fp16 checkpoint (no text encoder) inside the extension."""
    dist = tmp_path / "dist"
    proc = run_build("--torch", "none", "--wheel-cache", str(light_build["cache"]), "--output-dir",
                     str(dist), "--python", "3.11",
                     "--bundle-model", str(tiny_checkpoints[("G", "disparity")]),
                     "--bundle-kind", "disparity", env=OFFLINE_PIP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (zip_path,) = dist.glob("*.zip")
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        bundles = {n.split("/")[1] for n in names if n.startswith("models/")}
        assert len(bundles) == 1
        bundle = "models/" + bundles.pop() + "/"
        meta = json.loads(zf.read(bundle + "lotus.json"))
    assert meta["kind"] == "disparity" and meta["weights"] == "fp16"
    assert bundle + "unet/diffusion_pytorch_model.safetensors" in names
    assert bundle + "vae/diffusion_pytorch_model.safetensors" in names
    assert not any(n.startswith(bundle + "text_encoder/") for n in names)


LIGHT_BUILD_JOB = r"""
import glob, json, os, subprocess, sys, tempfile
from pathlib import Path
zip_path, checkpoint, worker_python, tool = sys.argv[1:5]
import bpy
import addon_utils
import numpy as np
repo_dir = tempfile.mkdtemp(prefix="lotus-installed-")
# The real versions of this Blender: install-files refuses a zip not made for them (exit code 0).
install = subprocess.run([sys.executable, tool, "install-files", "--local-dir", repo_dir,
                          "--blender-version", "%d.%d.%d" % bpy.app.version,
                          "--python-version", "%d.%d.%d" % sys.version_info[:3], zip_path],
                         check=True, capture_output=True, text=True)
assert "ERROR" not in install.stdout, install.stdout
bpy.context.preferences.extensions.repos.new(name="Installed", module="installed",
                                             custom_directory=repo_dir, source='USER')
name = "bl_ext.installed.lotus_blender"
# Blender installs the bundled wheels into its shared extension site-packages here.
addon_utils.extensions_refresh(ensure_wheels=True, addon_modules_pending=[name])
assert addon_utils.enable(name, default_set=True)
site = glob.glob(os.path.join(bpy.utils.user_resource('EXTENSIONS', path=".local"),
                              "lib", "python3*", "site-packages"))
prefs = bpy.context.preferences.addons[name].preferences
prefs.depth_model = 'LOCAL'
prefs.depth_model_path = checkpoint
prefs.depth_model_kind = 'DISPARITY'
prefs.processing_resolution = 64
prefs.device = 'CPU'
prefs.python_path = worker_python
prefs.output_dir = tempfile.mkdtemp()
image = bpy.data.images.new("photo", 40, 30)
image.pixels.foreach_set(np.random.default_rng(0).random(40 * 30 * 4).astype(np.float32))
status = bpy.ops.lotus.predict_image(image="photo", task='DEPTH')
depth = bpy.data.images["photo_depth"]
report = {"status": sorted(status), "size": list(depth.size), "kind": depth["lotus_kind"],
          "files": sorted(os.listdir(prefs.output_dir)),
          "bundled": sorted(os.listdir(site[0])) if site else []}
addon_utils.disable(name, default_set=True)
print("REPORT " + json.dumps(report), flush=True)
os._exit(0)  # PyPI bpy 4.2 can crash in its own shutdown once an extension was registered
"""


def test_light_build_runs_a_job_in_blender_with_a_chosen_python(light_build, tiny_checkpoints,
                                                                  tmp_path):
    """Install the light zip the way Blender does (wheels into its extension site-packages) and run
    a job whose worker Python has only numpy and torch: everything else comes from the bundle."""
    if this_python() != "3.11":
        pytest.skip("needs a CPU torch wheel for Blender's Python; PyPI has one for CPython 3.11 "
                    f"only (Python {this_python()}: only the multi-GB CUDA build)")
    (zip_path,) = [z for z in light_build["zips"] if f"-{python_tag(this_python())}-" in z.name]
    torch_python = tmp_path / "torch-python"
    subprocess.run([sys.executable, "-m", "venv", str(torch_python)], check=True)
    python = torch_python / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy==1.26.4", "torch==2.13.0"],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    try:
        proc = subprocess.run([sys.executable, "-c", LIGHT_BUILD_JOB, str(zip_path),
                               str(tiny_checkpoints[("G", "disparity")]), str(python),
                               str(blender_ext())],
                              capture_output=True, text=True, env=env, timeout=600)
    finally:
        # A venv with torch is over 1 GB: do not leave it to pytest's temp-folder rotation.
        shutil.rmtree(torch_python, ignore_errors=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(line[0][len("REPORT "):])
    assert report["status"] == ["FINISHED"]
    assert report["size"] == [40, 30] and report["kind"] == "disparity"
    assert "photo_depth.exr" in report["files"]
    assert "diffusers" in report["bundled"] and "numpy" not in report["bundled"]


# ----------------------------------------------------------------------------- the default build

@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    """`python build.py` as a user runs it (the repository's wheel cache, wheels/)."""
    dist = tmp_path_factory.mktemp("default-dist")
    proc = run_build("--output-dir", str(dist))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"proc": proc, "zips": {python: next(dist.glob(f"*-{python_tag(python)}*.zip"), None)
                                   for python in DEFAULT_PYTHONS}}


def test_default_build_makes_one_zip_per_blender_python(default_build):
    """Every Blender Python (official 3.11 and 3.13, distro 3.14), each zip with its own wheels
    and a line saying which Blenders install it; a zip without torch only where the build said in
    one line that no CPU torch could be had, and what its users get instead."""
    out = default_build["proc"].stdout.splitlines()
    for python, zip_path in default_build["zips"].items():
        assert zip_path is not None, out
        line = next(ln for ln in out if ln.startswith(f"built {zip_path} ("))
        assert " MiB): " in line and INSTALLS_ON[python] in line
        wheels = [w.split("/")[-1] for w in zip_manifest(zip_path)["wheels"]]
        assert_wheels_only_for(python, wheels)
        assert_blender_serves_only(zip_path, python)
        has_torch = any(w.startswith("torch-") for w in wheels)
        notes = [ln for ln in out if ln.startswith("note: ") and f"Python {python}" in ln]
        if has_torch:
            assert zip_path.name == f"lotus_blender-0.1.0-linux_x64-{python_tag(python)}.zip"
            assert "+cpu" in next(w for w in wheels if w.startswith("torch-"))
            assert not any(w.startswith("nvidia-") for w in wheels) and not notes
            assert "torch (CPU) bundled" in line
        else:
            assert zip_path.name.endswith(f"-{python_tag(python)}-torch-none.zip")
            assert len(notes) == 1 and "no CPU build of torch" in notes[0], out
            assert "Worker Python" in notes[0] and "Worker Python" in line
    # This machine's pip finds a CPU torch for CPython 3.11 (tests/requirements.txt installs it).
    assert default_build["zips"]["3.11"].name.endswith("-cp311.zip")


INSTALL_AND_ENABLE = r"""
import glob, json, os, sys
zip_path, as_python = sys.argv[1], sys.argv[2]
import bpy
import addon_utils
name = "bl_ext.user_default.lotus_blender"
real_version = sys.version_info
if as_python:
    # A Blender on another Python: everything Blender's extension code judges (the zip's
    # python_versions, which wheels to install, the --python-version given to its tool) reads
    # sys.version_info; only while it installs and enables.
    import collections
    version_info = collections.namedtuple("version_info", "major minor micro releaselevel serial")
    sys.version_info = version_info(*map(int, as_python.split(".")), 0, "final", 0)
report = {"blender": "%d.%d.%d" % bpy.app.version, "python": "%d.%d" % sys.version_info[:2]}
try:
    # Install from Disk, as in Preferences > Get Extensions: Blender's own tool with this
    # Blender's real version and Python, then the wheels, then enable.
    report["status"] = sorted(bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True))
except RuntimeError as ex:
    report["error"] = str(ex)
finally:
    sys.version_info = real_version
report["enabled"] = name in bpy.context.preferences.addons
report["loaded"] = addon_utils.check(name)[1]
report["operators"] = hasattr(bpy.types, "LOTUS_OT_predict_files")
site = glob.glob(os.path.join(bpy.utils.user_resource('EXTENSIONS', path=".local"),
                              "lib", "python3*", "site-packages"))
report["site"] = site[0] if site else None
report["site_packages"] = sorted(os.listdir(site[0])) if site else []
# Compiled modules of the installed wheels (the shared libraries they bundle live in *.libs/).
report["extension_modules"] = sorted(
    os.path.basename(path) for path in glob.glob(os.path.join(site[0], "**", "*.so"), recursive=True)
    if ".libs" + os.sep not in path) if site else []
print("REPORT " + json.dumps(report), flush=True)
os._exit(0)  # PyPI bpy 4.2 can crash in its own shutdown once an extension was registered
"""


def install_and_enable(zip_path: Path, user_dir: Path, as_python: str = "") -> tuple[dict, str]:
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user_dir))
    proc = subprocess.run([sys.executable, "-c", INSTALL_AND_ENABLE, str(zip_path), as_python],
                          capture_output=True, text=True, env=env, timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[0][len("REPORT "):]), proc.stdout + proc.stderr


def test_default_build_installs_and_enables_in_this_blender(default_build, tmp_path):
    """The zip for this Blender's Python installs with Blender's own Install from Disk and is
    enabled, its wheels installed; the other zip is refused with Blender's own reason."""
    python = this_python()
    if python not in default_build["zips"]:
        pytest.skip(f"no build target for Blender's Python {python} "
                    f"({', '.join(DEFAULT_PYTHONS)} only)")
    ours = default_build["zips"][python]
    try:
        _install_ours_then_the_other(default_build, python, ours, tmp_path)
    finally:
        # An installed torch is over 1 GB: do not leave it to pytest's temp-folder rotation.
        shutil.rmtree(tmp_path, ignore_errors=True)


def _install_ours_then_the_other(default_build, python, ours, tmp_path):
    import bpy
    report, output = install_and_enable(ours, tmp_path / "user")
    assert report["blender"] == "%d.%d.%d" % bpy.app.version and report["python"] == python
    assert "error" not in report and report["status"] == ["FINISHED"], output
    assert report["enabled"] and report["loaded"] and report["operators"], output
    assert "diffusers" in report["site_packages"] and "numpy" not in report["site_packages"]
    if "-torch-" not in ours.name:
        assert "torch" in report["site_packages"]

    other = default_build["zips"]["3.13" if python == "3.11" else "3.11"]
    report, output = install_and_enable(other, tmp_path / "user-other")
    assert not report["enabled"] and not report["loaded"], output
    # 5.1+ refuse the cp311 zip at install (its maximum version); Python 3.11 Blenders install
    # the cp313 zip but will not enable it (its wheels are for another Python).
    reason = "maximum version (5.1.0)" if python != "3.11" else "Python version (3.11) isn't compatible"
    assert reason in output, output


@pytest.fixture(scope="module")
def distro_build(tmp_path_factory):
    """What the default build makes for Python 3.13 and 3.14 (the same options, only those
    Pythons: the repository's wheel cache makes it quick after the first time)."""
    if sys.version_info < (3, 12):
        pytest.skip("Blender's extension code on Python 3.11 picks standard-library calls by "
                    "sys.version_info (shutil.rmtree's onexc): it cannot judge as 3.14 here")
    dist = tmp_path_factory.mktemp("distro-dist")
    proc = run_build("--python", "3.13,3.14", "--output-dir", str(dist))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {python: next(dist.glob(f"*-{python_tag(python)}*.zip")) for python in ("3.13", "3.14")}


@pytest.mark.blender
def test_python_314_blender_enables_the_zip_meant_for_it(distro_build, tmp_path):
    """Debian unstable's Blender 5.2 runs Python 3.14 (no PyPI bpy does): this Blender's own
    Install from Disk, wheel selection and enable, judging as a Python 3.14 Blender (the version
    Blender's extension code reads, sys.version_info, set to 3.14 while it installs), enable the
    cp314 zip with wheels whose compiled modules are for 3.14, and refuse the cp313 zip with the
    message Debian's Blender gave. On Blender 5.2.3 this is Debian's 5.2 extension code; the real
    Debian Blender gives the same (tests/gui/install_check.sh)."""
    report, output = install_and_enable(distro_build["3.14"], tmp_path / "user", as_python="3.14")
    assert report["python"] == "3.14" and "error" not in report, output
    assert report["status"] == ["FINISHED"], output
    assert report["enabled"] and report["loaded"] and report["operators"], output
    assert report["site"].endswith(os.path.join("python3.14", "site-packages")), report["site"]
    for package in ("diffusers", "transformers", "safetensors", "tokenizers", "PIL", "yaml", "regex"):
        assert package in report["site_packages"], (package, report["site_packages"])
    assert report["extension_modules"], report
    for module in report["extension_modules"]:
        assert ".abi3." in module or ".cpython-314-" in module, module

    report, output = install_and_enable(distro_build["3.13"], tmp_path / "user-cp313",
                                        as_python="3.14")
    assert not report["enabled"] and not report["loaded"], output
    assert "This Python version (3.14) isn't compatible with (3.13)" in output, output


def blender_ext_module():
    """Blender's extension tool as a module (plain standard-library Python)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("lotus_test_blender_ext", blender_ext())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_blender_serves_only(zip_path: Path, python: str) -> None:
    """Blender's own reading of the zip: the Python versions its wheels give (what Install from
    Disk and repositories compare with the running Python), and which Pythons it accepts."""
    tool = blender_ext_module()
    manifest = zip_manifest(zip_path)
    versions = tool.python_versions_from_wheels(manifest["wheels"])
    assert versions == {tuple(map(int, python.split(".")))}, (zip_path.name, versions)
    item = dict(manifest, python_versions=[python])
    for other in ("3.11", "3.12", "3.13", "3.14", "3.15"):
        skipped = []
        tool.repository_filter_skip(
            item, filter_blender_version=(4, 5, 0) if other == "3.11" else (5, 2, 2),
            filter_platform="linux-x64", filter_python_version=(3, int(other[2:]), 1),
            skip_message_fn=skipped.append, error_fn=pytest.fail)
        assert bool(skipped) == (other != python), (zip_path.name, other, skipped)


def test_any_python_3x_is_built_when_its_wheels_exist(light_build, tmp_path):
    """--python takes any 3.X from 3.11 (Blender 4.2's) and checks that wheels exist for it: a
    Python no wheel serves is one clear error naming it (here offline, from the cp314 cache)."""
    cached = light_build["cache"] / "linux-x64-cp314-torch-none"
    dist = tmp_path / "dist"
    proc = run_build("--torch", "none", "--python", "3.20", "--wheel-cache", str(tmp_path / "cache"),
                     "--output-dir", str(dist), env=dict(OFFLINE_PIP, PIP_FIND_LINKS=str(cached)))
    _assert_clean_failure(proc, dist, "for linux-x64 / Python 3.20")
    assert "error: no wheel of " in proc.stderr
    for bad in ("3.10", "3.x", "2.7"):
        proc = run_build("--python", bad, "--output-dir", str(dist))
        _assert_clean_failure(proc, dist, f"unknown Python '{bad}'")
