"""Resumable and safe batches, with the command line running in child Blender processes as on a
farm: a run killed mid-range and started again finishes the range without rewriting finished
frames; two runs with overlapping ranges compute every frame once. Claims and partial files on
their own are checked without Blender."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli import PROGRESS, cli, write_frames  # noqa: F401 (the cli fixture)

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "cli_child.py"


@pytest.fixture
def node(tiny_checkpoints, tmp_path):
    """Starts `cli_child.py` (a farm node) with the tiny checkpoints; returns a Popen factory."""
    started = []

    def start(*argv, machine="a"):
        # Each machine has its own Blender user folders (its add-on copy, worker log, jobs).
        config = {"repo": str(tmp_path / machine / "repo"), "output": str(tmp_path / "unused"),
                  "depth": str(tiny_checkpoints[("G", "disparity")]),
                  "normal": str(tiny_checkpoints[("G", "normal")])}
        env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / machine / "user"),
                   PYTHONUNBUFFERED="1")
        process = subprocess.Popen([sys.executable, str(CHILD), json.dumps(config), *argv],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env, cwd=str(ROOT))
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _statuses(text):
    return [(m.group(5), m.group(6)) for m in map(PROGRESS.match, text.splitlines()) if m]


def _identity(path):
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@pytest.mark.blender
def test_killed_run_resumes_without_rewriting(node, tmp_path):
    plates = write_frames(tmp_path / "plates", "shot", range(1, 9))
    out = tmp_path / "maps"
    argv = ["predict", str(plates / "shot_####.png"), "--frames", "1-8", "--task", "both",
            "-o", str(out)]
    first = node(*argv)
    computed = []
    for line in first.stdout:  # kill it, as a farm preempts a node, after three frames
        match = PROGRESS.match(line)
        if match and match.group(6) == "computed":
            computed.append(int(match.group(5)))
            if len(computed) == 3:
                break
    finished = {name: _identity(out / name) for name in os.listdir(out)
                if not name.startswith(".")}
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert sorted(finished) == [f"shot_depth_{f:04d}.exr" for f in computed]
    assert [n for n in os.listdir(out) if n.endswith(".lotus-claim")]  # the frames in flight
    # Its job folder stays behind, named by the rule the panel's pruning reads: it is the
    # killed process's, so any Blender may prune it.
    from lotus_blender.blender.job_folders import folder_pid
    left = [p for p in (tmp_path / "a" / "user").rglob("jobs/*") if p.is_dir()]
    assert [folder_pid(p.name) for p in left] == [first.pid], left

    second = node(*argv)
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "LOTUS waiting" not in stdout  # the killed run's claims were taken over at once
    statuses = _statuses(stdout)
    assert [frame for frame, status in statuses if status == "skipped"] == \
        [str(f) for f in computed]
    assert len(statuses) == 16 and all(s in ("computed", "skipped") for _, s in statuses)
    names = sorted(os.listdir(out))
    assert names == sorted([f"shot_depth_{f:04d}.exr" for f in range(1, 9)]
                           + [f"shot_normal_{f:04d}.exr" for f in range(1, 9)]
                           + [f"shot_normal_opengl_{f:04d}.png" for f in range(1, 9)])
    for name, identity in finished.items():
        assert _identity(out / name) == identity, f"{name} was rewritten"


@pytest.mark.blender
def test_terminated_run_cleans_up(node, tmp_path):
    """SIGTERM (a farm cancelling a task): claims released, no partial files, status 1."""
    plates = write_frames(tmp_path / "plates", "term", range(1, 7))
    out = tmp_path / "maps"
    run = node("predict", str(plates / "term_####.png"), "-o", str(out))
    for line in run.stdout:
        if PROGRESS.match(line):
            break
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1 and "LOTUS stopped" in stderr
    left = os.listdir(out)
    assert not [n for n in left if n.startswith(".")], (left, stderr[-3000:])
    assert 1 <= len(left) < 6


@pytest.mark.blender
def test_overlapping_ranges_share_the_frames(node, tmp_path):
    plates = write_frames(tmp_path / "plates", "plate", range(1, 11))
    out = tmp_path / "maps"
    runs = [node("predict", str(plates / "plate_####.png"), "--frames", frames, "-o", str(out),
                 machine=machine) for frames, machine in (("1-7", "a"), ("4-10", "b"))]
    results = [run.communicate(timeout=600) for run in runs]
    for run, (stdout, stderr) in zip(runs, results):
        assert run.returncode == 0, stdout[-2000:] + stderr[-2000:]
    computed = [frame for stdout, _ in results for frame, status in _statuses(stdout)
                if status == "computed"]
    assert sorted(computed, key=int) == [str(f) for f in range(1, 11)]  # each frame once
    assert sorted(os.listdir(out)) == [f"plate_depth_{f:04d}.exr" for f in range(1, 11)]


def _claim(out, name, **owner):
    from lotus_blender.blender import batch_files
    path = batch_files.Claims.path_for(str(out / name))
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(dict(owner, token="theirs"), handle)
    return path


def test_requeue_after_sigkill_takes_over_claims_of_gone_processes_at_once(cli, capsys,
                                                                          tmp_path):
    """A farm's SIGKILL leaves claims behind. Requeued on the same host, the task finishes at
    once: here with the claims' process ids in use again (a container restarts the task with the
    same id; another process got the other), which the start time tells apart."""
    from lotus_blender.blender import batch_files, processes
    if not processes.process_start():
        pytest.skip("this system does not tell process start times")
    plates = write_frames(tmp_path / "plates", "req", [1, 2, 3])
    out = tmp_path / "maps"
    _claim(out, "req_depth_0001.exr", host=batch_files.HOST, pid=os.getpid(), start="1:1")
    _claim(out, "req_depth_0002.exr", host=batch_files.HOST, pid=os.getppid(), start="1:1")
    started = time.monotonic()
    assert cli.main(["predict", str(plates / "req_####.png"), "-o", str(out),
                     "--stale-claim", "600"]) == 0
    assert time.monotonic() - started < 300
    captured = capsys.readouterr()
    assert "LOTUS waiting" not in captured.out
    assert [status for _, status in _statuses(captured.out)] == ["computed"] * 3
    assert sorted(os.listdir(out)) == [f"req_depth_{f:04d}.exr" for f in (1, 2, 3)]


def test_claim_of_another_host_waits_with_one_line_then_is_taken_over(cli, capsys, tmp_path):
    """Another host's claim cannot be proven dead: the run says once that it waits, and takes
    the frame over when the claim has not been touched for --stale-claim seconds."""
    plates = write_frames(tmp_path / "plates", "far", [1, 2])
    out = tmp_path / "maps"
    _claim(out, "far_depth_0002.exr", host="render-node-7", pid=4242)
    assert cli.main(["predict", str(plates / "far_####.png"), "-o", str(out),
                     "--stale-claim", "3"]) == 0
    captured = capsys.readouterr()
    waiting = [line for line in captured.out.splitlines() if line.startswith("LOTUS waiting")]
    assert len(waiting) == 1, captured.out
    assert "1 frame(s) claimed by other runs (first: host render-node-7, process 4242" in \
        waiting[0] and "not touched for 3 s is taken over" in waiting[0]
    assert [frame for frame, _ in _statuses(captured.out)] == ["1", "2"]
    assert sorted(os.listdir(out)) == ["far_depth_0001.exr", "far_depth_0002.exr"]


# -- claims and partial files, without Blender -----------------------------------------------------

def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_claims(tmp_path):
    from lotus_blender.blender import batch_files
    final = str(tmp_path / "a_depth_0001.exr")
    mine, other = batch_files.Claims(), batch_files.Claims()
    assert mine.acquire(final)
    assert not other.acquire(final)           # held by a live process
    mine.heartbeat(force=True)
    claim = batch_files.Claims.path_for(final)
    assert os.path.basename(claim) == ".a_depth_0001.exr.lotus-claim"
    # Our claim, taken over as stale by someone else, is not removed by our release.
    os.utime(claim, (time.time() - 1000, time.time() - 1000))
    assert batch_files.claim_is_stale(claim, 300)
    assert other.acquire(final)
    mine.release(final)
    assert os.path.exists(claim)
    other.release(final)
    assert not os.path.exists(claim)
    # A claim of a process that is gone (same host) is stale at once.
    with open(claim, "w") as handle:
        json.dump({"host": batch_files.HOST, "pid": _dead_pid(), "token": "x"}, handle)
    assert batch_files.claim_is_stale(claim, 300)
    assert mine.acquire(final)
    mine.release_all()
    assert not os.path.exists(claim)



def test_process_alive_is_proven_by_id_and_start_time():
    from lotus_blender.blender import batch_files, processes
    me = processes.process_start()
    assert processes.process_alive(os.getpid(), me) and processes.process_alive(os.getppid())
    assert not processes.process_alive(_dead_pid()) and not processes.process_alive(0)
    if me:  # Linux, Windows: an id in use again by another process is told apart
        assert not processes.process_alive(os.getpid(), "1:1")
        assert processes.process_start(os.getppid()) not in ("", me)
    # A claim from a process namespace of its own (a container sharing the host name) is never
    # judged by its process id here.
    owner = {"host": batch_files.HOST, "pid": _dead_pid()}
    assert batch_files.owner_gone(owner)
    assert not batch_files.owner_gone(dict(owner, pid_space="pid:[1]"))
    assert not batch_files.owner_gone(dict(owner, host="render-node-7"))


def test_partial_files_and_commit(tmp_path):
    from lotus_blender.blender import batch_files
    finals = {"exr": str(tmp_path / "s_normal_0001.exr"), "png": str(tmp_path / "s_normal_opengl_0001.png")}
    partials = {k: batch_files.partial_path(v) for k, v in finals.items()}
    assert all(p.endswith(os.path.splitext(f)[1]) and os.path.basename(p).startswith(".")
               for p, f in zip(partials.values(), finals.values()))
    for path in partials.values():
        Path(path).write_bytes(b"data")
    assert not batch_files.finished(finals)
    batch_files.commit(partials, finals, "exr")
    assert batch_files.finished(finals) and not any(os.path.exists(p) for p in partials.values())
    # Left by a killed process: removed; ours (alive): kept.
    dead = tmp_path / f".x.exr.{batch_files._host_label()}.{_dead_pid()}.lotus-partial.exr"
    alive = Path(batch_files.partial_path(str(tmp_path / "y.exr")))
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    assert batch_files.remove_stale_partials(str(tmp_path)) == [str(dead)]
    assert alive.exists()
