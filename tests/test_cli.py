"""The command line (``blender -b -c lotus predict ...``): cli.main called directly with the real
worker and the tiny checkpoints, and the real registration of the command in a fresh Blender."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests import blender_env
from tests.blender_side import gradient, moving_frames, write_movie

PROGRESS = re.compile(r"^LOTUS +(\d+\.\d)% (\d+)/(\d+) (depth|normal) frame (\S+) "
                      r"(computed|skipped|failed) ([\d.]+)s")


def write_frames(folder, name, frames, width=32, height=24):
    """A small moving picture as PNG files name_####.png."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        picture = np.roll(gradient(width, height), frame % 7 * 2, axis=1)[..., :3]
        Image.fromarray(np.round(picture * 255).astype(np.uint8)).save(
            folder / f"{name}_{frame:04d}.png")
    return folder


def progress_lines(text):
    return [PROGRESS.match(line).groups() for line in text.splitlines() if PROGRESS.match(line)]


def png_bit_depth(path) -> int:
    with open(path, "rb") as handle:
        return handle.read(26)[24]


@pytest.fixture
def cli(lotus):
    import importlib
    return importlib.import_module(f"{lotus.name}.blender.cli")


def test_help_and_usage_errors(cli, capsys, tmp_path):
    assert cli.main(["predict", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--frames", "--task", "--output", "--depth-model", "--normal-model",
                   "--device", "--precision", "--resolution", "--tiled", "--seamless",
                   "--stabilize", "exit status", "LOTUS 36.4%"):
        assert option in text
    assert cli.main(["--help"]) == 0 and "predict" in capsys.readouterr().out
    assert cli.main(["predict", str(tmp_path / "x.png"), "--task", "bogus"]) == 2
    assert cli.main(["predict", str(tmp_path / "nothing_here.png"), "-o", str(tmp_path)]) == 2
    assert "Not found" in capsys.readouterr().err
    write_frames(tmp_path / "in", "a", [1])
    assert cli.main(["predict", str(tmp_path / "in" / "a_0001.png"), "--frames", "9-3",
                     "-o", str(tmp_path)]) == 2
    assert cli.main(["predict", str(tmp_path / "in" / "a_0001.png"), "-o", str(tmp_path),
                     "--depth-model", str(tmp_path / "no-such-model")]) == 2


def test_usage_errors_are_one_line_before_any_work(cli, lotus, capsys, tmp_path, monkeypatch,
                                                   tiny_checkpoints):
    """Every usage error exits 2 with one line, before any frame is computed or folder made."""
    import shutil
    plates = write_frames(tmp_path / "plates", "shot", [1001, 1002])
    image = str(plates / "shot_1001.png")
    out = tmp_path / "out"
    work = tmp_path / "cwd"  # the node's working directory: maps must never land there
    work.mkdir()
    monkeypatch.chdir(work)

    def usage(*argv) -> str:
        assert cli.main(["predict", *argv]) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("LOTUS error: "), captured.err
        assert "usage:" not in captured.out + captured.err and not progress_lines(captured.out)
        return lines[0]

    assert "invalid choice: 'bogus'" in usage(image, "--task", "bogus", "-o", str(out))
    assert "--frobnicate" in usage(image, "--frobnicate", "-o", str(out))
    assert "not a frame range" in usage(image, "--frames", "<nil>", "-o", str(out))
    # Outputs: empty or a farm's placeholder, a file, a folder that cannot be made.
    for unset in ("", "<nil>", " "):
        assert "The output folder is not set" in usage(image, "--output", unset)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert usage(image, "-o", str(a_file)).endswith(f"The output folder {a_file} is a file, "
                                                     f"not a folder")
    assert f"Cannot write to the output folder {a_file / 'maps'}: Not a directory" in \
        usage(image, "-o", str(a_file / "maps"))
    # A frame picked in a file browser, with --frames: its sequence is suggested.
    line = usage(image, "--frames", "1001-1002", "-o", str(out))
    assert "is a single image" in line and str(plates / "shot_####.png") in line
    # Models: checked before the first frame, for every task of the run.
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    assert "not a Lotus checkpoint" in usage(image, "-o", str(out), "--depth-model",
                                             str(not_a_model))
    normal, depth = tiny_checkpoints[("G", "normal")], tiny_checkpoints[("G", "disparity")]
    assert "predicts normal, it cannot be used for depth" in usage(
        image, "-o", str(out), "--depth-model", str(normal))
    assert "predicts disparity, it cannot be used for normal" in usage(
        image, "-o", str(out), "--task", "both", "--normal-model", str(depth))
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(depth, unlabelled)
    (unlabelled / "lotus.json").unlink()
    assert "--depth-kind" in usage(image, "-o", str(out), "--depth-model", str(unlabelled))
    assert "not downloaded" in usage(image, "-o", str(out), "--depth-model", "someone/lotus-x")
    assert "neither a folder nor" in usage(image, "-o", str(out), "--depth-model", "no such")
    assert "(--python) is not found" in usage(image, "-o", str(out), "--python", "<nil>")
    assert not out.exists() and not os.listdir(work)


def test_help_shows_the_real_model_defaults(cli, lotus, capsys):
    assert cli.main(["predict", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "LOCAL" not in text and "now " not in text
    assert "(default, from the preferences: the folder" in text


def test_sequence_both_tasks_then_resume(cli, lotus, capsys, tmp_path):
    plates = write_frames(tmp_path / "plates", "shot", range(1001, 1006))
    out = tmp_path / "maps"
    argv = ["predict", str(plates / "shot_####.png"), "--frames", "1001-1004", "--task", "both",
            "--output", str(out)]
    assert cli.main(argv) == 0
    lines = progress_lines(capsys.readouterr().out)
    assert [(task, frame, status) for _, _, _, task, frame, status, _ in lines] == \
        [("depth", str(f), "computed") for f in range(1001, 1005)] + \
        [("normal", str(f), "computed") for f in range(1001, 1005)]
    assert [float(line[0]) for line in lines] == [12.5, 25.0, 37.5, 50.0, 62.5, 75.0, 87.5, 100.0]
    names = sorted(os.listdir(out))
    assert names == sorted([f"shot_depth_{f}.exr" for f in range(1001, 1005)]
                           + [f"shot_normal_{f}.exr" for f in range(1001, 1005)]
                           + [f"shot_normal_opengl_{f}.png" for f in range(1001, 1005)])
    assert png_bit_depth(out / "shot_normal_opengl_1002.png") == 16
    depth = lotus.outputs.read_map(str(out / "shot_depth_1003.exr"))
    assert depth.shape == (24, 32) and np.isfinite(depth).all() and depth.std() > 0
    stamps = {name: os.stat(out / name).st_mtime_ns for name in names}

    # The same command again: everything is finished, nothing is rewritten.
    assert cli.main(argv) == 0
    lines = progress_lines(capsys.readouterr().out)
    assert {line[5] for line in lines} == {"skipped"} and len(lines) == 8
    assert {name: os.stat(out / name).st_mtime_ns for name in names} == stamps
    # A wider range computes only the new frame; printf-style patterns work too.
    assert cli.main(["predict", str(plates / "shot_%04d.png"), "--frames", "1003-1005",
                     "--output", str(out)]) == 0
    statuses = [(line[4], line[5]) for line in progress_lines(capsys.readouterr().out)]
    assert statuses == [("1003", "skipped"), ("1004", "skipped"), ("1005", "computed")]
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no claims or partial files left


def test_stabilization_is_the_core_alignment(cli, lotus, tmp_path, capsys):
    from lotus_blender.core import temporal
    plates = write_frames(tmp_path / "plates", "clip", range(1, 6))
    plain, steady = tmp_path / "plain", tmp_path / "steady"
    assert cli.main(["predict", str(plates / "clip_####.png"), "-o", str(plain),
                     "--no-stabilize"]) == 0
    assert cli.main(["predict", str(plates / "clip_####.png"), "-o", str(steady)]) == 0
    capsys.readouterr()
    raw = [lotus.outputs.read_map(str(plain / f"clip_depth_{f:04d}.exr")) for f in range(1, 6)]
    got = [lotus.outputs.read_map(str(steady / f"clip_depth_{f:04d}.exr")) for f in range(1, 6)]
    # The stabilizer is also given each frame's picture as the worker saw it (8-bit PNGs smaller
    # than the processing resolution: their values / 255, top row first).
    from PIL import Image
    pictures = [np.asarray(Image.open(plates / f"clip_{f:04d}.png"), np.float32) / 255.0
                for f in range(1, 6)]
    expected, fits = temporal.stabilize_sequence(raw, photos=pictures)
    assert any(abs(fit.scale - 1.0) > 1e-4 or abs(fit.shift) > 1e-4 for fit in fits[1:])
    for mine, theirs in zip(got, expected):
        np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_folder_images_a_gap_and_a_failed_frame(cli, lotus, tmp_path, capsys):
    """A missing frame is skipped with one warning (as in the panel); an unreadable one fails."""
    from PIL import Image
    folder = tmp_path / "in"
    write_frames(folder, "seq", [1, 2, 4])  # frame 3 is missing, frame 5 is not a picture
    (folder / "seq_0005.png").write_bytes(b"not a picture at all" * 10)
    Image.fromarray(np.round(gradient()[..., :3] * 255).astype(np.uint8)).save(folder / "still.png")
    out = tmp_path / "out"
    code = cli.main(["predict", str(folder), "--frames", "1-6", "-o", str(out),
                     "--normal-convention", "directx", "--task", "both"])
    captured = capsys.readouterr()
    assert code == 1
    warnings = [line for line in captured.err.splitlines() if line.startswith("LOTUS warning")]
    assert warnings == ["LOTUS warning: seq_####.png: frames 3, 6 missing, skipped "
                        "(4 frames used)"]
    assert "frame 5" in captured.err and "seq_0005.png" in captured.err
    statuses = {(task, frame): status for _, _, _, task, frame, status, _ in
                progress_lines(captured.out)}
    assert statuses[("depth", "5")] == "failed" and statuses[("normal", "5")] == "failed"
    assert ("depth", "3") not in statuses
    assert statuses[("depth", "-")] == "computed"  # the still image
    for name in ("seq_depth_0001.exr", "seq_depth_0004.exr", "seq_normal_directx_0002.png",
                 "still_depth.exr", "still_depth_preview.png", "still_normal.exr",
                 "still_normal_directx.png"):
        assert (out / name).is_file(), name
    assert not (out / "seq_depth_0003.exr").exists()
    assert "LOTUS done: 10 maps, 8 computed, 0 skipped (finished), 2 failed" in captured.out
    # Without --frames: from the first file to the last, the gap reported the same way.
    code = cli.main(["predict", str(folder / "seq_####.png"), "-o", str(out)])
    assert code == 1  # frame 5 still fails
    assert "LOTUS warning: seq_####.png: frame 3 missing, skipped (4 frames used)" \
        in capsys.readouterr().err


def test_worker_crash_fails_the_frames_in_flight_then_a_new_worker_goes_on(cli, lotus, capsys,
                                                                          tmp_path, monkeypatch):
    """The command line's worker session (the panel's): a worker that dies takes the requests in
    flight with it; the next frame starts a fresh worker."""
    plates = write_frames(tmp_path / "plates", "crash", range(1, 5))
    out = tmp_path / "out"

    class CrashingSession(lotus.worker_session.WorkerSession):
        sent = 0

        def send(self, request, settings, keep=None):
            super().send(request, settings, keep)
            CrashingSession.sent += 1
            if CrashingSession.sent == 2:  # both requests in flight: the worker dies
                self.client.process.kill()

    monkeypatch.setattr(cli, "WorkerSession", CrashingSession)
    argv = ["predict", str(plates / "crash_####.png"), "-o", str(out)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert [(line[4], line[5]) for line in progress_lines(captured.out)] == [
        ("1", "failed"), ("2", "failed"), ("3", "computed"), ("4", "computed")]
    assert "the worker stopped (exit code -9)" in captured.err
    assert cli.main(argv) == 0  # the failed frames are computed again, the others skipped
    assert sorted((line[4], line[5]) for line in progress_lines(capsys.readouterr().out)) == [
        ("1", "computed"), ("2", "computed"), ("3", "skipped"), ("4", "skipped")]


def test_movie_frames_each_from_its_own_pixels(cli, tmp_path, capsys, monkeypatch):
    """``predict movie --frames 1,3,5`` sends each frame's own pixels (issue 15: all were the
    first frame); a movie cut short is one usage error; frames past its end are skipped."""
    import bpy
    if not bpy.app.build_options.codec_ffmpeg:
        pytest.skip("this Blender build has no FFmpeg")
    pictures = moving_frames(6)
    movie = write_movie(str(tmp_path / "take_"), pictures)
    sent = {}
    prepare = cli.cli_sources.prepare

    def recording(source, frame, *args):
        prepared = prepare(source, frame, *args)
        sent[frame] = np.load(prepared.npy_path)
        return prepared
    monkeypatch.setattr(cli.cli_sources, "prepare", recording)
    out = tmp_path / "out"
    assert cli.main(["predict", movie, "--frames", "1,3,5,9", "-o", str(out)]) == 0
    stem = os.path.splitext(os.path.basename(movie))[0]
    assert sorted(os.listdir(out)) == [f"{stem}_depth_{f:04d}.exr" for f in (1, 3, 5)]
    captured = capsys.readouterr()
    assert [line[4] for line in progress_lines(captured.out)] == ["1", "3", "5"]
    assert f"LOTUS warning: {os.path.basename(movie)}: frame 9 missing, skipped" in captured.err
    for frame in (1, 3, 5):
        distances = [np.abs(sent[frame] - picture).mean() for picture in pictures]
        assert int(np.argmin(distances)) == frame - 1 and distances[frame - 1] < 0.02
    assert not [i for i in bpy.data.images if i.filepath.endswith(os.path.basename(movie))]
    data = open(movie, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    assert cli.main(["predict", str(cut), "-o", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "LOTUS error" in line]
    assert errors == ["LOTUS error: cut.mp4 is incomplete (the file ends before the movie does, "
                      "or its index is missing); copy or render it again"]


def test_over_long_name_one_warning(cli, tmp_path, capsys):
    from PIL import Image
    stem = ("take with a very long descriptive name " * 7)[:236]
    Image.fromarray(np.round(gradient()[..., :3] * 255).astype(np.uint8)).save(
        tmp_path / f"{stem}.png")
    out = tmp_path / "out"
    assert cli.main(["predict", str(tmp_path / f"{stem}.png"), "-o", str(out)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("LOTUS warning")]
    assert len(warnings) == 1 and "too long" in warnings[0]
    short = warnings[0].rsplit("'", 2)[1]
    assert sorted(os.listdir(out)) == [f"{short}_depth.exr", f"{short}_depth_preview.png"]


# The bpy module has no -c: check in a fresh Blender that enabling the add-on registers the
# "lotus" command (registering the id again is refused with a warning) and disabling removes it.
REGISTRATION_SCRIPT = r"""
import os, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import bpy
from tests import blender_env

def probe(label):
    print("PROBE " + label, flush=True)
    handle = bpy.utils.register_cli_command("lotus", lambda argv: 0)
    print("", flush=True)
    bpy.utils.unregister_cli_command(handle)

name = blender_env.install_extension(Path(tempfile.mkdtemp()))
cli = sys.modules[name + ".blender.cli"]
print("HANDLE", cli._handle is not None, cli.main.__module__ == name + ".blender.cli", flush=True)
probe("enabled")
blender_env.disable_extension(name)
probe("disabled")
blender_env.exit_child()
"""


@pytest.mark.blender
def test_command_registered_with_blender(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    run = subprocess.run([sys.executable, "-c", REGISTRATION_SCRIPT, root],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         timeout=300)
    text = run.stdout
    assert run.returncode == 0, text[-3000:]
    assert "HANDLE True True" in text
    enabled = text.split("PROBE enabled")[1].split("PROBE disabled")[0]
    disabled = text.split("PROBE disabled")[1]
    assert 'duplicate command "lotus"' in enabled
    assert "duplicate" not in disabled


def test_panel_sequences_are_stabilized_unless_turned_off(lotus, tmp_path):
    """The add-on's own sequence path (panel / operator) uses the same alignment, on by default."""
    import bpy

    from lotus_blender.core import temporal
    from tests.blender_side import remove_images
    assert bpy.context.scene.lotus_predict.stabilize is True
    plates = write_frames(tmp_path / "plates", "pan", range(1, 5))
    image = bpy.data.images.load(str(plates / "pan_0001.png"))
    image.source = 'SEQUENCE'
    # The stabilizer is given each frame's picture (the job's input file) for its motion mask.
    import importlib
    stabilizer = importlib.import_module(f"{lotus.name}.core.temporal").TemporalStabilizer
    align, pictures = stabilizer.align, []

    def recording(self, frame, raw, photo=None):
        pictures.append(None if photo is None else np.array(photo))
        return align(self, frame, raw, photo)

    maps = {}
    stabilizer.align = recording
    try:
        for stabilize in (False, True):
            assert bpy.ops.lotus.predict_image(image=image.name, task='DEPTH', frame_start=1,
                                               frame_end=4, stabilize=stabilize) == {'FINISHED'}
            stem = "pan_depth" if not stabilize else "pan_depth_001"  # never overwritten: _001
            maps[stabilize] = [lotus.outputs.read_map(str(lotus.out / f"{stem}_{f:04d}.exr"))
                               for f in range(1, 5)]
    finally:
        stabilizer.align = align
    from PIL import Image
    plates_seen = [np.asarray(Image.open(plates / f"pan_{f:04d}.png"), np.float32) / 255.0
                   for f in range(1, 5)]
    assert len(pictures) == 4 and all(p is not None for p in pictures)
    for seen, plate in zip(pictures, plates_seen):
        np.testing.assert_allclose(seen, plate, atol=1e-6)
    expected, _ = temporal.stabilize_sequence(maps[False], photos=plates_seen)
    for got, wanted in zip(maps[True], expected):
        np.testing.assert_allclose(got, wanted, atol=1e-5)
    assert not np.allclose(maps[True][3], maps[False][3], atol=1e-4)
    bpy.data.images.remove(image)
    remove_images("pan")
