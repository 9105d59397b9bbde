"""build.py: the light build (--torch none) end to end, the wheel cache, the repository, and failures.

The light build still resolves and bundles the worker's non-torch wheels from the package index, so
these tests exercise the real pip resolution (no torch: no multi-GB downloads).
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


# An environment in which pip cannot reach any index: proves a build downloads nothing.
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "",
               "PIP_INDEX_URL": "file:///nonexistent-index"}


@pytest.fixture(scope="module")
def light_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("build")
    cache, dist = base / "wheels", base / "dist"
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


def test_light_build_zip(light_build):
    proc, zips = light_build["proc"], light_build["zips"]
    assert len(zips) == 1 and zips[0].name.endswith("linux_x64-torch-none.zip")
    assert str(zips[0]) in proc.stdout and "MiB" in proc.stdout and "Install from Disk" in proc.stdout
    with zipfile.ZipFile(zips[0]) as zf:
        names = zf.namelist()
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    wheels = [n for n in names if n.startswith("wheels/") and n.endswith(".whl")]
    assert any(n.startswith("wheels/diffusers-") for n in wheels)
    assert not any(n.startswith(("wheels/numpy-", "wheels/torch-")) for n in wheels)
    assert sorted("./" + w for w in wheels) == sorted(manifest["wheels"])
    assert manifest["platforms"] == ["linux-x64"]
    assert manifest["blender_version_max"] == "5.1.0"  # cp311 wheels only: not for Blender 5.1+
    assert "__init__.py" in names and "worker/__init__.py" in names and "protocol.py" in names
    assert not any("__pycache__" in n for n in names)
    # The source manifest was not touched by the build.
    assert "wheels" not in tomllib.loads((ROOT / "blender_manifest.toml").read_text())


def test_light_build_validates_and_installs(light_build, tmp_path):
    zip_path = light_build["zips"][0]
    tool = str(blender_ext())
    proc = subprocess.run([sys.executable, tool, "validate", "--valid-tags", str(official_tags()),
                           str(zip_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    repo = tmp_path / "repo"
    repo.mkdir()
    proc = subprocess.run([sys.executable, tool, "install-files", "--local-dir", str(repo),
                           "--blender-version", "5.0.1", "--python-version", "3.11.13", str(zip_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = repo / "lotus_blender"
    assert (installed / "__init__.py").is_file()
    assert (installed / "blender_manifest.toml").is_file()
    assert any((installed / "wheels").glob("diffusers-*.whl"))


def test_second_build_downloads_nothing(light_build):
    dist2 = light_build["base"] / "dist2"
    proc = run_build("--torch", "none", "--wheel-cache", str(light_build["cache"]),
                     "--output-dir", str(dist2), env=OFFLINE_PIP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resolving wheels" not in proc.stdout
    assert len(list(dist2.glob("*.zip"))) == 1


def test_repo_command_writes_static_repository(light_build):
    repo = light_build["base"] / "static-repo"
    proc = run_build("repo", str(repo), "--torch", "none", "--wheel-cache", str(light_build["cache"]),
                     env=OFFLINE_PIP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = json.loads((repo / "index.json").read_text())
    entries = index["data"]
    assert [e["id"] for e in entries] == ["lotus_blender"]
    assert entries[0]["platforms"] == ["linux-x64"]
    assert (repo / "index.html").is_file()
    assert (repo / entries[0]["archive_url"].removeprefix("./")).is_file()


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
                     str(dist), "--bundle-model", str(tiny_checkpoints[("G", "disparity")]),
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
subprocess.run([sys.executable, tool, "install-files", "--local-dir", repo_dir, "--blender-version",
                "5.0.1", "--python-version", "3.11.13", zip_path], check=True, capture_output=True)
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
print("REPORT " + json.dumps(report))
"""


def test_light_build_runs_a_job_in_blender_with_a_chosen_python(light_build, tiny_checkpoints,
                                                                  tmp_path):
    """Install the light zip the way Blender does (wheels into its extension site-packages) and run
    a job whose worker Python has only numpy and torch: everything else comes from the bundle."""
    torch_python = tmp_path / "torch-python"
    subprocess.run([sys.executable, "-m", "venv", str(torch_python)], check=True)
    python = torch_python / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy==1.26.4", "torch==2.13.0"],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    proc = subprocess.run([sys.executable, "-c", LIGHT_BUILD_JOB, str(light_build["zips"][0]),
                           str(tiny_checkpoints[("G", "disparity")]), str(python), str(blender_ext())],
                          capture_output=True, text=True, env=env, timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(line[0][len("REPORT "):])
    assert report["status"] == ["FINISHED"]
    assert report["size"] == [40, 30] and report["kind"] == "disparity"
    assert "photo_depth.exr" in report["files"]
    assert "diffusers" in report["bundled"] and "numpy" not in report["bundled"]
