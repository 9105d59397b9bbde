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


# The pixels the photo shows are never worse than with the best baseline (within the benchmark's
# 0.1 dB): outdoors (a tree before a narrow tower before the sky), where the fill was worst
# before (exact maps, orbit 3 deg: -1.39 dB, the tree's limb and the ground behind the tower
# bleeding onto its edge; model-like maps, dolly 10%: -0.62 dB, layers placed on soft edges).
OUTDOOR_CASES = {0.0: "orbit 3 deg", 1.0: "dolly 10%"}


@pytest.fixture(scope="module")
def outdoor(blender_addon):
    moves = {move: fill_scenes.MOVES[move] for move in set(OUTDOOR_CASES.values())}
    views = fill_scenes.render_truth("outdoor", moves, resolution=RESOLUTION)
    photo = views["photo"]
    out = {}
    for severity, move in OUTDOOR_CASES.items():
        lotus = fill_scenes.lotus_maps(photo, severity, seed=0)
        for variant in fill_scenes.VARIANTS:
            built = fill_scenes.BuiltScene(blender_addon, photo, variant, lotus, tag=f"vis{severity:g}")
            try:
                out[(severity, variant)] = (built.render(views[move].matrix_world),
                                            built.camera.get("lotus_camera_report", ""))
            finally:
                built.remove()
    return views, out


@pytest.mark.parametrize("severity", sorted(OUTDOOR_CASES))
def test_visible_pixels_never_worse_than_the_baselines(outdoor, severity):
    views, out = outdoor
    view = views[OUTDOOR_CASES[severity]]
    revealed, outside = fill_scenes.disoccluded(views["photo"], view)
    visible = ~revealed & ~outside
    truth = view.combined[..., :3]
    scores = {variant: fill_scenes.psnr(out[(severity, variant)][0], truth, visible)
              for variant in fill_scenes.VARIANTS}
    print(severity, OUTDOOR_CASES[severity], scores)
    assert scores["fill"] >= max(scores[base] for base in fill_scenes.BASELINES) - 0.1
    # Model-like maps: the edges are too soft to place a layer behind; the build says so.
    report = out[(severity, "fill")][1]
    assert ("unfilled" in report) == (severity > 0), report


# A shaded photo (Lambert surfaces lit by a sun: Suzanne and a sphere whose shading ramps toward
# their silhouettes, tests/fill_scenes.py): the exact maps' curved silhouettes must not be taken
# for soft steps to place (core.fill.snap_soft_steps moves nothing), the own camera reproduces the
# photo, and an orbit's revealed pixels are filled (bench_fill.py, orbit 3 deg: +3.5 dB).
@pytest.fixture(scope="module")
def shaded(blender_addon):
    views = fill_scenes.render_truth("shaded", {MOVE: fill_scenes.MOVES[MOVE]}, resolution=RESOLUTION)
    photo = views["photo"]
    lotus = fill_scenes.lotus_maps(photo)
    out = {"placed": fill_scenes.placed_maps(photo, lotus)[1]}
    for variant in fill_scenes.VARIANTS:
        built = fill_scenes.BuiltScene(blender_addon, photo, variant, lotus, tag="shaded")
        try:
            out[variant] = (built.render(photo.matrix_world), built.render(views[MOVE].matrix_world))
        finally:
            built.remove()
    return views, out


def test_shaded_photo_exact_maps(shaded):
    views, out = shaded
    photo, view = views["photo"], views[MOVE]
    assert out["placed"] == 0
    own = {variant: fill_scenes.psnr(out[variant][0], photo.combined[..., :3]) for variant in fill_scenes.VARIANTS}
    print("shaded, own camera PSNR", own)
    assert min(own.values()) >= 45.0, own
    revealed, outside = fill_scenes.disoccluded(photo, view)
    truth = view.combined[..., :3]
    scores = {variant: {"revealed": fill_scenes.psnr(out[variant][1], truth, revealed),
                        "visible": fill_scenes.psnr(out[variant][1], truth, ~revealed & ~outside)}
              for variant in fill_scenes.VARIANTS}
    print("shaded", MOVE, scores)
    best = {key: max(scores[b][key] for b in fill_scenes.BASELINES) for key in scores["fill"]}
    assert scores["fill"]["revealed"] >= best["revealed"] + 2.5
    assert scores["fill"]["visible"] >= best["visible"] - 0.5
