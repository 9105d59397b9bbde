"""First run with a worker Python that cannot run Lotus (a light build, a distro Blender's Python):
the first job fails with one line that says what is missing and how to fix it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lotus_blender import protocol
from tests.blender_side import Reports, drive, gradient, new_image, remove_images

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A Python with the standard library only: no numpy, no torch."""
    folder = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = subprocess.run([str(python), "-c", "import numpy"], capture_output=True)
    assert probe.returncode != 0  # really bare
    return python


def test_worker_names_the_modules_its_python_lacks(bare_python, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([str(bare_python), "-m", "lotus_blender.worker", "--log",
                                str(tmp_path / "worker.log")], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        ready = protocol.decode(process.stdout.readline())
        assert ready["event"] == protocol.EV_READY and ready["torch"] is None
        model = {"source": str(tmp_path), "cache_dir": str(tmp_path), "allow_network": False}
        for job_id in ("first", "second"):  # every job says it, the worker stays up
            process.stdin.write(protocol.encode(protocol.predict_request(
                job_id, "depth", model, [str(tmp_path / "in.npy")], str(tmp_path / "out"))))
            process.stdin.flush()
            error = protocol.decode(process.stdout.readline())
            assert error["event"] == protocol.EV_ERROR and error["id"] == job_id
            assert {"numpy", "torch", "diffusers"} <= set(error["missing"])
            assert "No module named" not in error["message"] and "torch" in error["message"]
        process.stdin.write(protocol.encode(protocol.shutdown_request()))
        process.stdin.flush()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_first_job_without_torch_says_how_to_fix_it(lotus, bare_python):
    import bpy
    prefs = bpy.context.preferences.addons[lotus.name].preferences
    prefs.python_path = str(bare_python)
    image = new_image("no_torch_src", gradient())
    try:
        reports = Reports()

        def gather(context, job_dir, resolution):
            return [lotus.inputs.prepare_image(image, job_dir, resolution, 0)], []
        built = lotus.operators.build_jobs(bpy.context, 'DEPTH', gather, reports)
        lotus.job_queue.manager.submit(built[0])
        assert drive(lotus.job_runner.JobRunner(built, reports)) == {'CANCELLED'}
        message = built[0].message
        assert message.startswith(f"PyTorch is not installed in the Worker Python {bare_python}")
        assert "set Worker Python (Lotus add-on preferences) to a Python with torch" in message
        assert "No module named" not in message and "\n" not in message
        # The panel's error line and the operator's report carry the same sentence.
        assert lotus.job_queue.manager.last_error.endswith(message)
        assert any(message in text for text in reports.texts('ERROR'))
        # Through the operator, as an artist's click: the same line (background mode raises it).
        with pytest.raises(RuntimeError, match="PyTorch is not installed in the Worker Python"):
            bpy.ops.lotus.predict_image(image=image.name, task='DEPTH')
    finally:
        prefs.python_path = ""
        remove_images("no_torch_src")


def test_advice_fits_how_the_python_was_chosen(lotus, monkeypatch):
    setup = lotus.package.blender.worker_setup
    # Light build, Blender's own Python: install the full build or choose a Python.
    monkeypatch.setattr(setup, "bundles_torch", lambda: False)
    text = setup.missing_packages_message(["torch", "diffusers"])
    assert "light build" in text and "full build" in text and "Worker Python" in text
    text = setup.missing_packages_message(["torch"], "/opt/py/bin/python3")
    assert "/opt/py/bin/python3" in text and "install the full Lotus build" in text
    # Full build whose bundled torch was not installed into Blender's Python.
    monkeypatch.setattr(setup, "bundles_torch", lambda: True)
    text = setup.missing_packages_message(["torch"])
    assert "bundled with Lotus is not installed" in text and "enable Lotus" in text
    text = setup.missing_packages_message(["torch"], "/opt/py/bin/python3")
    assert "clear it to use the PyTorch bundled with Lotus" in text
    # A chosen Python with torch but without the rest: name them and the pip command.
    text = setup.missing_packages_message(["diffusers", "huggingface_hub"], "/opt/py/bin/python3")
    assert "lacks diffusers, huggingface_hub" in text and "pip install diffusers huggingface-hub" in text
    text = setup.missing_packages_message(["diffusers"])
    assert "bundled with Lotus (diffusers) are not installed" in text and "enable Lotus" in text
    for text in (setup.missing_packages_message(m, c) for m in (["torch"], ["diffusers"])
                 for c in ("", "/x/python")):
        assert "\n" not in text and len(text) < 300
