#!/usr/bin/env python3
"""Run the whole test suite in its own virtual environment.

    python3 tests/run.py [pytest arguments]

Creates .venv/ at the repository root with the pinned dependencies of tests/requirements.txt
(bpy 5.0.1 needs CPython 3.11), reinstalling only when that file changes, then runs pytest.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
REQUIREMENTS = ROOT / "tests" / "requirements.txt"
STAMP = VENV / ".requirements.sha256"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> Path:
    if sys.version_info[:2] != (3, 11):
        print(f"note: bpy 5.0.1 needs CPython 3.11; this is {sys.version.split()[0]}", flush=True)
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if venv_python().exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return venv_python()
    if not venv_python().exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    py = str(venv_python())
    print("installing test dependencies (tests/requirements.txt)", flush=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    STAMP.write_text(wanted)
    return venv_python()


def main(argv: list[str]) -> int:
    try:
        python = ensure_venv()
    except subprocess.CalledProcessError as ex:
        print(f"error: installing the test dependencies failed ({ex})", file=sys.stderr)
        return 2
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "tests"), *argv]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
