"""Fill Behind proven on ground truth (issue 18): a representative subset of benchmarks/bench_fill.py.

The "room" scene (furniture before tiled walls and floor), emission-only, 192x144, exact maps: the
2.5D scene must reproduce the photo through its own camera (Tear on or off, whole frame including
the border), and after an orbit of 3 degrees the filled background must beat every baseline on the
pixels the move reveals (by the issue's 3 dB) while staying within 0.5 dB of them on the pixels
the photo shows. (The goal at every move, scene and error level is measured by the benchmark; it
holds on some only: see README, "Camera moves: Fill Behind".)
"""

import pytest

from tests import fill_scenes

RESOLUTION = (192, 144)   # as the benchmark
MOVE = "orbit 3 deg"


@pytest.fixture(scope="module")
def room_views(blender_addon):
    return fill_scenes.render_truth("room", {MOVE: fill_scenes.MOVES[MOVE]}, resolution=RESOLUTION)


@pytest.fixture(scope="module")
def renders(blender_addon, room_views):
    """{variant: (own-camera render, moved render)} from the exact maps."""
    photo = room_views["photo"]
    lotus = fill_scenes.lotus_maps(photo)
    out = {}
    for variant in fill_scenes.VARIANTS:
        built = fill_scenes.BuiltScene(blender_addon, photo, variant, lotus, tag="gt")
        try:
            out[variant] = (built.render(photo.matrix_world), built.render(room_views[MOVE].matrix_world))
        finally:
            built.remove()
    return out


def test_own_camera_reproduces_the_photo(room_views, renders):
    photo = room_views["photo"].combined[..., :3]
    scores = {variant: fill_scenes.psnr(own, photo) for variant, (own, _moved) in renders.items()}
    print("own camera PSNR", scores)
    for variant, score in scores.items():
        assert score >= 45.0, (variant, score)


def test_orbit_reveals_filled_background(room_views, renders):
    photo, view = room_views["photo"], room_views[MOVE]
    truth = view.combined[..., :3]
    revealed, outside = fill_scenes.disoccluded(photo, view)
    assert 0.002 < revealed.mean() < 0.1
    scores = {variant: {"revealed": fill_scenes.psnr(moved, truth, revealed),
                        "visible": fill_scenes.psnr(moved, truth, ~revealed & ~outside),
                        "ssim_revealed": fill_scenes.ssim(moved, truth, revealed)}
              for variant, (_own, moved) in renders.items()}
    print(MOVE, scores)
    best = {key: max(scores[b][key] for b in fill_scenes.BASELINES) for key in scores["fill"]}
    assert scores["fill"]["revealed"] >= best["revealed"] + 3.0     # the goal (measured: +3.70)
    assert scores["fill"]["ssim_revealed"] >= best["ssim_revealed"]
    assert scores["fill"]["visible"] >= best["visible"] - 0.5
    assert scores["holes"]["revealed"] < scores["fill"]["revealed"] - 5.0    # the holes it fills
