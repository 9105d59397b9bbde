"""A sequence computed in chunks (a farm, a resumed run) gives the maps of one run: the G model's
noise depends on the seed alone, not on the frames computed before (worker/engine.py), and the
stabilizer of a later chunk continues from the frames already on disk."""

from __future__ import annotations

import numpy as np

from tests.test_cli import cli, progress_lines, write_frames  # noqa: F401 (fixture)

FRAMES = range(1, 7)


def _maps(lotus, folder):
    return [lotus.outputs.read_map(str(folder / f"clip_depth_{frame:04d}.exr")) for frame in FRAMES]


def _run(cli, plates, out, frames, *extra):
    assert cli.main(["predict", str(plates / "clip_####.png"), "--frames", frames, "--task", "depth",
                     "-o", str(out), *extra]) == 0


def test_chunks_give_the_maps_of_one_run(cli, lotus, tmp_path, capsys):
    plates = write_frames(tmp_path / "plates", "clip", FRAMES)
    # Raw maps: the same whichever frames a run started from (to float precision: multithreaded
    # float32 CPU math is not bit-exact from run to run, README; the noise blended with the
    # previous frame's latent used to move a chunk's first frame by 0.03).
    _run(cli, plates, tmp_path / "whole", "1-6", "--no-stabilize")
    _run(cli, plates, tmp_path / "chunks", "1-3", "--no-stabilize")
    _run(cli, plates, tmp_path / "chunks", "4-6", "--no-stabilize")
    for one, chunked in zip(_maps(lotus, tmp_path / "whole"), _maps(lotus, tmp_path / "chunks")):
        assert np.abs(one - chunked).max() <= 1e-5
    # Stabilized: the second chunk reads frames 1-3 back as its references (chained chunks).
    _run(cli, plates, tmp_path / "steady", "1-6")
    _run(cli, plates, tmp_path / "steady_chunks", "1-3")
    capsys.readouterr()
    # ... and the pictures of those frames, read again, for its motion mask.
    import importlib
    stabilizer = importlib.import_module(f"{lotus.name}.core.temporal").TemporalStabilizer
    add_photo, given = stabilizer.add_photo, []
    stabilizer.add_photo = lambda self, frame, photo: (given.append(frame),
                                                       add_photo(self, frame, photo))
    try:
        _run(cli, plates, tmp_path / "steady_chunks", "4-6")
    finally:
        stabilizer.add_photo = add_photo
    assert {1, 2, 3} <= set(given)
    lines = progress_lines(capsys.readouterr().out)
    assert [(line[4], line[5]) for line in lines] == [(str(f), "computed") for f in (4, 5, 6)]
    whole, chunked = _maps(lotus, tmp_path / "steady"), _maps(lotus, tmp_path / "steady_chunks")
    spread = float(np.ptp(np.stack(whole)))
    for one, other in zip(whole, chunked):
        assert np.abs(one - other).max() <= 1e-3 * spread
