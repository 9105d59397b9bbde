#!/usr/bin/env python3
"""Run the whole test suite on every supported Blender line, each in its own virtual environment.

    python3 tests/run.py [--blender VERSION ...] [pytest arguments]

Environments (created on first use, reinstalled only when their requirements change):

- ``.venv/``: the worker environment (CPython 3.11: torch 2.13.0 CPU, diffusers, ...) with PyPI
  ``bpy`` 5.0.1. It runs every test: the numpy core, the worker and engine, the build, and the
  Blender side on 5.0.1. It is also the worker Python of every other Blender below, so torch is
  installed once (CPython 3.13 has only a multi-GB CUDA torch on PyPI).
- ``.venv-blender/<version>/``: PyPI ``bpy`` of that version with pytest and Pillow only. These run
  the tests that exercise Blender (see tests/conftest.py) with the worker environment's Python as the
  add-on's Worker Python.
- ``.venv-openjd/``: the farm tools the OpenJD tests run (openjd-cli, Deadline Cloud's client),
  created when the worker line runs; its bin folder is passed on as LOTUS_TEST_OPENJD_BIN.

Each session writes a JUnit report; the closing lines sum them up per Blender version. The exit
status is non-zero when any version has a failure or an error, or did not report at all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER_VENV = ROOT / ".venv"
BLENDER_VENVS = ROOT / ".venv-blender"
WORKER_REQUIREMENTS = ROOT / "tests" / "requirements.txt"
BLENDER_REQUIREMENTS = ROOT / "tests" / "requirements-blender.txt"
# The farm tools (openjd-cli, Deadline Cloud's client) for tests/test_openjd.py, kept apart.
OPENJD_VENV = ROOT / ".venv-openjd"
OPENJD_REQUIREMENTS = ROOT / "tests" / "requirements-openjd.txt"

# The Blender lines under test: the newest PyPI bpy of each, and the CPython it is built for.
WORKER_BLENDER = "5.0.1"
BLENDERS = {
    "4.2.23": "3.11",  # 4.2 LTS
    "4.5.15": "3.11",  # 4.5 LTS
    WORKER_BLENDER: "3.11",
    "5.1.2": "3.13",   # 5.1 moved to CPython 3.13
    "5.2.3": "3.13",   # 5.2
    "5.3.0": "3.13",   # 5.3, the current release
}
# Run only when asked for (--blender): the releases between the LTS lines.
ON_REQUEST = {"4.3.0": "3.11", "4.4.0": "3.11"}


def venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_interpreter(version: str) -> str | None:
    """A CPython of the given "3.X" version that really runs: the running one, pyenv's, or one
    on PATH (a pyenv shim on PATH may point at another version, hence the check)."""
    if "%d.%d" % sys.version_info[:2] == version:
        return sys.executable
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin",
                                               f"python{version}")), reverse=True)
    candidates.append(shutil.which(f"python{version}"))
    if os.name == "nt" and shutil.which("py"):
        candidates.append(f"py -{version}")
    for candidate in filter(None, candidates):
        command = candidate.split(" ") if candidate.startswith("py -") else [candidate]
        probe = subprocess.run([*command, "-c", "import sys; print('%d.%d' % sys.version_info[:2], "
                                "sys.executable)"], capture_output=True, text=True)
        found = probe.stdout.split(" ", 1) if probe.returncode == 0 else []
        if found and found[0] == version:
            return found[1].strip()
    return None


def ensure_venv(folder: Path, python_version: str, requirements: list[str], label: str) -> Path:
    """The environment at folder with exactly these requirement lines, (re)installed when they change."""
    wanted = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
    stamp = folder / ".requirements.sha256"
    python = venv_python(folder)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    if not python.exists():
        interpreter = find_interpreter(python_version)
        if interpreter is None:
            raise RuntimeError(f"{label} needs CPython {python_version}: none found on PATH or "
                               "under pyenv")
        if folder.exists():
            shutil.rmtree(folder)  # a broken environment (no interpreter)
        print(f"creating {folder.relative_to(ROOT)} (CPython {python_version}) for {label}",
              flush=True)
        subprocess.run([interpreter, "-m", "venv", str(folder)], check=True)
    print(f"installing the requirements of {label} into {folder.relative_to(ROOT)}", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
    try:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", handle.name], check=True)
    finally:
        os.unlink(handle.name)
    stamp.write_text(wanted)
    return python


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def junit_counts(path: Path) -> dict | None:
    """passed/failed/errors/skipped from a JUnit report, or None when pytest wrote none."""
    if not path.exists():
        return None
    suites = ET.parse(path).getroot()
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": counts["failures"], "errors": counts["errors"], "skipped": counts["skipped"]}


def run_session(blender: str, python: Path, worker_python: Path, pytest_args: list[str],
                report_dir: Path, openjd_python: Path | None) -> dict:
    report = report_dir / f"junit-{blender}.xml"
    env = dict(os.environ, LOTUS_TEST_WORKER_PYTHON=str(worker_python))
    if openjd_python is not None:
        env["LOTUS_TEST_OPENJD_BIN"] = str(openjd_python.parent)
    if blender != WORKER_BLENDER:
        env["LOTUS_TEST_BLENDER_ONLY"] = "1"  # the core, worker and build tests ran with 5.0.1
    # The whole suite unless the arguments name test files or folders of their own.
    names_tests = any(not arg.startswith("-") and os.path.exists(arg.split("::")[0])
                      for arg in pytest_args)
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}",
           *([] if names_tests else [str(ROOT / "tests")]), *pytest_args]
    print(f"\n=== Blender {blender}: {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    returncode = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    counts = junit_counts(report)
    result = {"blender": blender, "returncode": returncode, "seconds": time.monotonic() - started,
              "counts": counts}
    # pytest exits 5 when the selection holds no test: not a failure of this version.
    result["ok"] = counts is not None and counts["failed"] == 0 and counts["errors"] == 0 \
        and returncode in (0, 5)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    parser.add_argument("--blender", action="append", choices=sorted({**BLENDERS, **ON_REQUEST}),
                        help="run only these Blender versions (repeatable; default: "
                             f"{', '.join(BLENDERS)})")
    args, pytest_args = parser.parse_known_args(argv)
    chosen = args.blender or list(BLENDERS)
    try:
        worker_python = ensure_venv(WORKER_VENV, BLENDERS[WORKER_BLENDER],
                                    requirement_lines(WORKER_REQUIREMENTS), "the worker environment")
        pythons = {WORKER_BLENDER: worker_python}
        # The OpenJD tests run with the worker line only (they need no other Blender).
        openjd_python = ensure_venv(OPENJD_VENV, BLENDERS[WORKER_BLENDER],
                                    requirement_lines(OPENJD_REQUIREMENTS),
                                    "the farm tools") if WORKER_BLENDER in chosen else None
        # Downloads dominate on a fresh machine: prepare the Blender environments side by side.
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            futures = {blender: pool.submit(
                ensure_venv, BLENDER_VENVS / blender, {**BLENDERS, **ON_REQUEST}[blender],
                [f"bpy=={blender}", *requirement_lines(BLENDER_REQUIREMENTS)], f"Blender {blender}")
                for blender in chosen if blender != WORKER_BLENDER}
            for blender, future in futures.items():
                pythons[blender] = future.result()
    except (RuntimeError, subprocess.CalledProcessError) as ex:
        print(f"error: preparing the test environments failed: {ex}", file=sys.stderr)
        return 2

    results = []
    with tempfile.TemporaryDirectory(prefix="lotus-junit-") as report_dir:
        for blender in chosen:
            results.append(run_session(blender, pythons[blender], worker_python, pytest_args,
                                       Path(report_dir), openjd_python))

    print("\n=== Summary per Blender version", flush=True)
    totals = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for result in results:
        counts = result["counts"]
        if counts is None:
            print(f"Blender {result['blender']}: no report (pytest exited {result['returncode']})")
            totals["errors"] += 1
            continue
        for key in totals:
            totals[key] += counts[key]
        verdict = "ok" if result["ok"] else f"FAILED (exit {result['returncode']})"
        print(f"Blender {result['blender']}: {counts['passed']} passed, {counts['failed']} failed, "
              f"{counts['errors']} errors, {counts['skipped']} skipped in {result['seconds']:.0f} s: "
              f"{verdict}")
    failed = totals["failed"] + totals["errors"]
    print(f"{totals['passed']} passed, {failed} failed, {totals['skipped']} skipped", flush=True)
    return 0 if results and all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
