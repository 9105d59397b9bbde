#!/usr/bin/env python3
"""Build the Lotus for Blender extension.

    python build.py                      # this platform's zips, one per Blender Python, into dist/
    python build.py --torch none         # light builds: no torch, the worker runs in a Python you choose
    python build.py --platform all --torch cpu
    python build.py repo DIR [options]   # a static extension repository a studio can host
    python build.py --bundle-model SOURCE  # ship a compact fp16 Lotus checkpoint inside the zip

One zip per platform and Blender Python (cp311: Blender 4.2-5.0, cp313: Blender 5.1+, cp314: Linux
distro builds on Python 3.14; --python takes any 3.x from 3.11), each holding only its own wheels:
Blender picks the one matching its Python from a repository and refuses the others. Wheels are resolved per target platform and Python with ``pip download --only-binary`` and cached
under wheels/, so a second build downloads nothing. numpy is never bundled (Blender ships its own).
The zip is built and validated by Blender's own extension tool (blender_ext.py from the installed
``bpy`` package, or ``blender --command extension`` with --blender).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "lotus_blender"
MANIFEST = ROOT / "blender_manifest.toml"

# What the worker needs besides torch. Pinned so every build of a version bundles the same code.
WORKER_REQUIREMENTS = [
    "diffusers==0.42.1",
    "transformers==5.23.0",
    "huggingface_hub==2.4.0",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "Pillow==13.0.0",
]
TORCH_REQUIREMENT = "torch==2.13.0"
# Blender ships numpy (1.x up to 5.0, 2.x from 5.1); a bundled copy would shadow it for every add-on.
NEVER_BUNDLED = {"numpy"}

# Blender platform name -> pip platform tags (pip matches tags exactly, so list the usual ones).
PLATFORM_TAGS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                  "manylinux2014_x86_64", "manylinux1_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64",
                    "macosx_11_0_arm64", "macosx_10_9_universal2"],
}
# Blender's Python per release line: official builds run CPython 3.11 up to 5.0 and 3.13 from
# 5.1. Linux distributions build Blender on their system Python (3.11 to 3.14: Debian unstable's
# 5.2 runs 3.14), so only the cp311 zip gets a maximum version: official 5.1+ then refuse it at
# install time instead of after; Blender itself refuses a zip whose wheels are for another Python
# (python_versions, read from the wheels' tags).
BLENDER_VERSION_MAX = {"3.11": "5.1.0"}
OFFICIAL_BLENDERS = {"3.13": "official Blender 5.1 and newer"}
# Blender 4.2, the oldest this extension supports, runs Python 3.11.
OLDEST_PYTHON = (3, 11)
DEFAULT_PYTHONS = "3.11,3.13,3.14"


def check_python(python: str) -> str:
    """A Blender Python as "3.X", or a BuildError saying what is accepted."""
    match = re.fullmatch(r"3\.(\d+)", python.strip())
    if not match or (3, int(match.group(1))) < OLDEST_PYTHON:
        raise BuildError(f"unknown Python {python!r}: give Blender's Python as 3.X, 3.11 or newer "
                         "(3.11 for Blender 4.2-5.0, 3.13 for 5.1+, 3.14 for distro builds on it)")
    return f"3.{int(match.group(1))}"


def blenders_for(python: str) -> str:
    """Which Blenders install the zip for this Python (told to the user)."""
    if python in BLENDER_VERSION_MAX:
        return f"Blender 4.2 to 5.0 on Python {python} (official and distro builds)"
    distro = f"Linux distro builds of Blender 4.2+ on Python {python}"
    official = OFFICIAL_BLENDERS.get(python)
    return f"{official} (Python {python}) and {distro}" if official else distro
# Where CPU-only torch builds live for platforms whose PyPI torch is the CUDA build.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"


class BuildError(Exception):
    """A problem the user can act on: printed as one line, exit status 1."""


class TorchUnavailable(BuildError):
    """No torch wheel of the asked variant for a platform and Python (the default build falls
    back to a light zip for that target and says so)."""


# ----------------------------------------------------------------------------- Blender's tool

def this_platform() -> str:
    plat = sysconfig.get_platform()
    if plat.startswith("linux") and plat.endswith("x86_64"):
        return "linux-x64"
    if plat.startswith("win") and plat.endswith("amd64"):
        return "windows-x64"
    if plat.startswith("macosx") and (plat.endswith("arm64") or plat.endswith("universal2")):
        return "macos-arm64"
    raise BuildError(f"this platform ({plat}) has no build target; pass --platform "
                     f"({', '.join(PLATFORM_TAGS)})")


class ExtensionTool:
    """Blender's extension command line: blender_ext.py standalone, or `blender --command extension`."""

    def __init__(self, blender: str | None):
        if blender:
            exe = shutil.which(blender) or blender
            if not Path(exe).is_file():
                raise BuildError(f"--blender {blender}: no such program")
            self.prefix = [exe, "--factory-startup", "--command", "extension"]
            self.tags_file = self._find_tags(Path(exe).resolve().parent)
        else:
            bpy_dir = self._find_bpy()
            tools = sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
            if not tools:
                raise BuildError(f"bpy at {bpy_dir} has no blender_ext.py; pass --blender PATH")
            # blender_ext.py is plain standard-library Python: any Python 3.11+ runs it.
            self.prefix = [sys.executable, str(tools[-1])]
            self.tags_file = self._find_tags(bpy_dir)

    @staticmethod
    def _find_bpy() -> Path:
        """The bpy package of this interpreter, else of the test environment (.venv/)."""
        spec = importlib.util.find_spec("bpy")
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
        for candidate in sorted(ROOT.glob(".venv/lib/python3*/site-packages/bpy")) + \
                [ROOT / ".venv" / "Lib" / "site-packages" / "bpy"]:
            if candidate.is_dir():
                return candidate
        raise BuildError("Blender's extension tool not found: install the bpy module "
                         "(pip install bpy==5.0.1, CPython 3.11; python3 tests/run.py does) "
                         "or pass --blender PATH")

    @staticmethod
    def _find_tags(base: Path) -> Path | None:
        found = sorted(base.glob("*/scripts/modules/_bpy_internal/extensions/tags.py"))
        return found[-1] if found else None

    def run(self, *args: str) -> str:
        cmd = [*self.prefix, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stdout + proc.stderr).strip().splitlines()
            raise BuildError(f"blender extension {args[0]} failed: {' / '.join(detail[-3:]) or proc.returncode}")
        return proc.stdout

    def _tags(self) -> list[str]:
        return ["--valid-tags", str(self.tags_file)] if self.tags_file else []

    def validate(self, path: Path) -> None:
        self.run("validate", *self._tags(), str(path))

    def build(self, source: Path, output_dir: Path, split: bool) -> None:
        self.run("build", "--source-dir", str(source), "--output-dir", str(output_dir), *self._tags(),
                 *(["--split-platforms"] if split else []))

    def server_generate(self, repo_dir: Path) -> None:
        self.run("server-generate", "--repo-dir", str(repo_dir), "--html")


# ----------------------------------------------------------------------------- wheels

def _pip_download(requirements: list[str], dest: Path, platform: str, python: str,
                  extra_index: str | None, no_deps: bool = False, retries: int | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
           *(["--no-deps"] if no_deps else []), *(["--retries", str(retries)] if retries is not None else []),
           "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
           "--abi", "cp" + python.replace(".", ""), "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for tag in PLATFORM_TAGS[platform]:
        cmd += ["--platform", tag]
    if extra_index:
        cmd += ["--extra-index-url", extra_index]
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        missing = re.search(r"No matching distribution found for (\S+)", out)
        if missing:
            raise BuildError(f"no wheel of {missing.group(1)} for {platform} / Python {python} "
                             f"(pip download found none)")
        last = [ln for ln in out.strip().splitlines() if ln.strip()]
        raise BuildError(f"pip download failed for {platform} / Python {python}: "
                         f"{last[-1] if last else proc.returncode}")


def _wheel_project(filename: str) -> str:
    return filename.split("-", 1)[0].lower().replace("_", "-")


@contextlib.contextmanager
def _locked(folder: Path):
    """One build at a time resolves into a cache folder (test runs may build side by side)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: builds there are run by hand, one at a time
        yield
        return
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def resolve_wheels(cache: Path, platform: str, python: str, torch: str,
                   torch_index: str | None) -> list[Path]:
    """The wheels to bundle for one target, downloaded once into cache/<target>/ and then reused."""
    target_dir = cache / f"{platform}-cp{python.replace('.', '')}-torch-{torch}"
    with _locked(target_dir):
        return _resolve_wheels(target_dir, platform, python, torch, torch_index)


def _resolve_wheels(target_dir: Path, platform: str, python: str, torch: str,
                    torch_index: str | None) -> list[Path]:
    requirements = list(WORKER_REQUIREMENTS)
    extra_index = None
    if torch != "none":
        requirements.append(TORCH_REQUIREMENT)
        # PyPI's Linux torch is a CUDA build and its Windows torch is CPU-only; the other
        # combinations live on PyTorch's own indexes. macOS has one build (CPU + Metal).
        if platform == "linux-x64" and torch == "cpu":
            extra_index = torch_index or TORCH_CPU_INDEX
        elif platform == "windows-x64" and torch == "cuda":
            extra_index = torch_index or TORCH_CUDA_INDEX
        else:
            extra_index = torch_index
    key = hashlib.sha256(json.dumps([requirements, extra_index, 2]).encode()).hexdigest()[:12]
    lock = target_dir / "lock.json"
    if lock.is_file():
        locked = json.loads(lock.read_text())
        files = [target_dir / name for name in locked.get("files", [])]
        if locked.get("key") == key and all(f.is_file() for f in files):
            return files

    print(f"resolving wheels for {platform}, Python {python}, torch {torch} ...", flush=True)
    download_dir = target_dir / "download"
    if download_dir.exists():
        shutil.rmtree(download_dir)
    download_dir.mkdir(parents=True)
    if torch != "none":
        # torch alone from its index (one slow query at most when that index is out of reach),
        # then its dependencies from the main index by naming the downloaded wheel itself.
        # On Linux the CPU build is asked for by its local version (+cpu), so pip never fetches
        # the multi-GB CUDA build that PyPI serves under the plain version.
        cpu_only = torch == "cpu" and platform == "linux-x64"
        wanted_torch = TORCH_REQUIREMENT + "+cpu" if cpu_only else TORCH_REQUIREMENT
        try:
            # Few retries: an unreachable torch index (a proxy, an offline mirror) would otherwise
            # cost every build ~8 s of pip's back-off before the light fallback.
            _pip_download([wanted_torch], download_dir, platform, python, extra_index, no_deps=True,
                          retries=2)
        except BuildError as ex:
            shutil.rmtree(download_dir, ignore_errors=True)
            variant = "CPU build of torch" if torch == "cpu" else f"torch ({torch})"
            where = " (PyPI has only the CUDA build, ~3 GB)" if cpu_only else ""
            raise TorchUnavailable(f"no {variant} {TORCH_REQUIREMENT.split('==')[1]} for "
                                   f"{platform} / Python {python}{where}") from ex
        torch_wheels = sorted(download_dir.glob("torch-*.whl"))
        requirements = [r for r in requirements if r != TORCH_REQUIREMENT] + [str(torch_wheels[0])]
    _pip_download(requirements, download_dir, platform, python, None)
    # Keep exactly the files of this resolution (a stale download folder may hold older ones).
    wanted = {}
    for wheel in sorted(download_dir.glob("*.whl")):
        project = _wheel_project(wheel.name)
        if project in NEVER_BUNDLED or (torch == "none" and project == "torch"):
            continue
        if project.startswith("nvidia-") and torch != "cuda":
            continue
        wanted[project] = wheel
    files = []
    for wheel in wanted.values():
        final = target_dir / wheel.name
        shutil.move(str(wheel), final)
        files.append(final)
    shutil.rmtree(download_dir, ignore_errors=True)
    lock.write_text(json.dumps({"key": key, "files": [f.name for f in files]}, indent=1))
    return files


# ----------------------------------------------------------------------------- staging

def staged_manifest(text: str, platforms: list[str], wheels: list[str], python: str | None) -> str:
    """The source manifest with this build's platforms, wheel list and Blender range written in."""
    text = re.sub(r"(?m)^platforms\s*=.*$", "platforms = " + json.dumps(platforms), text)
    extra = ""
    if wheels:
        extra += "wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in wheels) + "]\n"
        top = BLENDER_VERSION_MAX.get(python) if python else None
        if top:
            extra += f'blender_version_max = "{top}"\n'
    if not re.search(r"(?m)^blender_version_min\s*=", text):
        raise BuildError("blender_manifest.toml has no blender_version_min")
    text = re.sub(r"(?m)^(blender_version_min\s*=.*)$", lambda m: m.group(1) + "\n" + extra, text, count=1)
    tomllib.loads(text)  # raises on a broken edit rather than shipping it
    return text


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)  # torch alone is ~190 MB: no need to copy it into every stage
    except OSError:
        shutil.copy2(source, dest)


def stage_source(stage: Path, platforms: list[str], python: str | None, wheels: list[Path],
                 model_bundle: Path | None) -> None:
    shutil.copytree(PACKAGE, stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if wheels:
        (stage / "wheels").mkdir()
        for wheel in wheels:
            _link_or_copy(wheel, stage / "wheels" / wheel.name)
    if model_bundle is not None:
        shutil.copytree(model_bundle, stage / "models" / model_bundle.name)
    try:
        text = MANIFEST.read_text(encoding="utf-8")
    except OSError as ex:
        raise BuildError(f"cannot read {MANIFEST.name}: {ex}") from ex
    (stage / "blender_manifest.toml").write_text(
        staged_manifest(text, platforms, sorted({w.name for w in wheels}), python), encoding="utf-8")


def bundle_model(source: str, work: Path, allow_network: bool, kind: str | None) -> Path:
    """Convert a checkpoint to the compact fp16 bundle (needs torch + diffusers in this Python)."""
    out = work / "bundle"
    cmd = [sys.executable, "-m", "lotus_blender.worker.bundle", source, str(out)]
    if allow_network:
        cmd.append("--allow-network")
    if kind:
        cmd += ["--kind", kind]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        raise BuildError(f"--bundle-model {source}: {lines[-1] if lines else 'failed'}")
    bundles = [p for p in out.iterdir() if p.is_dir()]
    if len(bundles) != 1:
        raise BuildError(f"--bundle-model {source}: expected one bundle folder in {out}")
    return bundles[0]


# ----------------------------------------------------------------------------- commands

@dataclass
class BuiltZip:
    path: Path
    platform: str
    python: str
    torch: str  # what it bundles: cpu, cuda or none

    def summary(self) -> str:
        size = self.path.stat().st_size / 2**20
        torch_text = {"cpu": "torch (CPU) bundled", "cuda": "torch (CUDA) bundled",
                      "none": "light: no torch, the worker needs a Python with torch "
                              "(Preferences > Worker Python)"}[self.torch]
        return f"built {self.path} ({size:.1f} MiB): installs on {blenders_for(self.python)}; {torch_text}"


def _torch_fallback_note(ex: TorchUnavailable, python: str) -> str:
    tag = "cp" + python.replace(".", "")
    return (f"note: {ex}: the {tag} zip ({blenders_for(python)}) is a light build instead; its "
            f"users set Worker Python to a Python with torch (or build it with --torch cuda)")


def build(args) -> list[BuiltZip]:
    platforms = list(PLATFORM_TAGS) if args.platform == ["all"] else (args.platform or [this_platform()])
    for platform in platforms:
        if platform not in PLATFORM_TAGS:
            raise BuildError(f"unknown platform {platform!r} (choose from {', '.join(PLATFORM_TAGS)}, all)")
    # Wheels for each Python are checked when they are resolved: a Python that PyPI has no
    # wheel of some requirement for is one clear error naming it.
    pythons = list(dict.fromkeys(check_python(python) for python in args.python.split(",")))
    tool = ExtensionTool(args.blender)
    output_dir = Path(args.output_dir).resolve()
    cache = Path(args.wheel_cache).resolve()

    with tempfile.TemporaryDirectory(prefix="lotus-build-") as tmp:
        tmp = Path(tmp)
        # Fail early, before any download, on a manifest Blender rejects.
        precheck = tmp / "precheck" / "lotus_blender"
        stage_source(precheck, platforms, None, [], None)
        tool.validate(precheck)
        model = bundle_model(args.bundle_model, tmp, args.allow_network, args.bundle_kind) if args.bundle_model else None
        built: list[BuiltZip] = []
        # One zip per platform and Python: each Blender installs only the wheels of its own
        # Python, so a zip holding both sets would be twice the download for nothing.
        for platform in platforms:
            for python in pythons:
                torch = "cpu" if args.torch == "auto" else args.torch
                try:
                    wheels = resolve_wheels(cache, platform, python, torch, args.torch_index)
                except TorchUnavailable as ex:
                    if args.torch != "auto":
                        raise TorchUnavailable(f"{ex}; pass --torch-index URL, --torch cuda, or "
                                               f"--torch auto for a light zip there") from ex
                    print(_torch_fallback_note(ex, python), flush=True)
                    torch = "none"
                    wheels = resolve_wheels(cache, platform, python, torch, args.torch_index)
                name = f"{platform}-cp{python.replace('.', '')}"
                stage = tmp / f"stage-{name}" / "lotus_blender"
                stage_source(stage, [platform], python, wheels, model)
                tool.validate(stage)
                zips = tmp / f"zips-{name}"
                zips.mkdir()
                tool.build(stage, zips, split=True)
                for zip_path in zips.glob("*.zip"):
                    tool.validate(zip_path)
                    suffix = f"-cp{python.replace('.', '')}" + ("" if torch == "cpu" else f"-torch-{torch}")
                    built.append(BuiltZip(zip_path.rename(zip_path.with_name(zip_path.stem + suffix + ".zip")),
                                          platform, python, torch))
                shutil.rmtree(stage.parent)
        if not built:
            raise BuildError("Blender's extension tool produced no zip")
        # Only now, with every zip validated, do they appear in the output folder.
        output_dir.mkdir(parents=True, exist_ok=True)
        for item in built:
            dest = output_dir / item.path.name
            shutil.move(str(item.path), dest)
            item.path = dest
    return built


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["build", "repo"], default="build",
                        help="build (default): zips into --output-dir; repo: a static extension repository")
    parser.add_argument("repo_dir", nargs="?", help="with 'repo': the repository folder to write")
    parser.add_argument("--torch", choices=["auto", "cpu", "cuda", "none"], default="auto",
                        help="torch variant to bundle: auto (default) = the CPU build where one can be "
                             "had, else a light zip for that target (said in one line); cpu = fail "
                             "instead; none = light builds, worker Python chosen by the user")
    parser.add_argument("--platform", action="append",
                        help=f"target platform, repeatable: {', '.join(PLATFORM_TAGS)} or all "
                             "(default: this machine's)")
    parser.add_argument("--python", default=DEFAULT_PYTHONS,
                        help="Blender Python version(s), comma separated, one zip each: "
                             "3.11 (Blender 4.2-5.0), 3.13 (Blender 5.1+), 3.14 (distro builds), "
                             f"or any 3.X from 3.11; default {DEFAULT_PYTHONS}")
    parser.add_argument("--torch-index", help="extra package index for torch wheels")
    parser.add_argument("--blender", help="a blender binary to use instead of the bpy module's tool")
    parser.add_argument("--output-dir", default=str(ROOT / "dist"))
    parser.add_argument("--wheel-cache", default=str(ROOT / "wheels"))
    parser.add_argument("--bundle-model", metavar="SOURCE",
                        help="ship this checkpoint (local folder or repo id) as a compact fp16 bundle")
    parser.add_argument("--bundle-kind", choices=["depth", "disparity", "normal"],
                        help="with --bundle-model: what a local folder predicts (known repos are recognised)")
    parser.add_argument("--allow-network", action="store_true",
                        help="with --bundle-model: allow downloading a repo id")
    args = parser.parse_args(argv)
    if args.platform and "all" in args.platform:
        args.platform = ["all"]
    if args.command == "repo" and not args.repo_dir:
        parser.error("repo needs a folder: python build.py repo DIR")
    if args.command == "repo":
        args.output_dir = args.repo_dir
    try:
        zips = build(args)
        if args.command == "repo":
            ExtensionTool(args.blender).server_generate(Path(args.repo_dir))
    except BuildError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 1
    for item in zips:
        print(item.summary())
    if args.command == "repo":
        print(f"extension repository written to {Path(args.repo_dir).resolve()} (index.json, index.html): "
              "serve it over HTTP and add its URL in Blender: Preferences > Get Extensions > Repositories; "
              "each Blender picks the zip for its own version and Python")
    else:
        print("install: Blender > Edit > Preferences > Get Extensions > (menu) Install from Disk... "
              "and pick the zip for your Blender")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
