"""Stabilize Depth (core.temporal) on model-like shots (tests/stabilize_cases.py): per-frame Lotus
disparity with the error model's drifting errors at severities 0, 0.5 and 1, over seeds.

A representative subset; benchmarks/bench_stabilize.py runs every case, severity and seed and its
table is in the README. Each case prints raw / stabilized / oracle (best per-frame affine fit to
the truth) figures. The goal (issue 14): the stabilized shot's AbsRel is not worse than the raw
shot's, no frame worse than its raw version by more than 10 %, and flicker at least 3x lower than
raw, or down to the oracle's where even a perfect per-frame scale and shift cannot remove 3x (the
model's own per-frame errors flicker too).
"""

from __future__ import annotations

import numpy as np
import pytest

from lotus_blender.core import temporal
from tests import stabilize_cases

RUNS = [(severity, 0) for severity in (0.0, 0.5)] + [(1.0, 0), (1.0, 1)]


def _run(shot, severity, seed, photos=False):
    raw = stabilize_cases.raw_frames(shot, severity, seed)
    pictures = stabilize_cases.photo_frames(shot, seed) if photos else None
    stabilized, fits = temporal.stabilize_sequence(raw, photos=pictures)
    return stabilize_cases.measure(shot, raw, stabilized), fits


def _print(name, severity, seed, m):
    print(f"\n{name} severity {severity} seed {seed}: flicker raw {m['raw']['flicker']:.4f} -> "
          f"{m['stabilized']['flicker']:.4f} (oracle {m['oracle']['flicker']:.4f}); AbsRel raw "
          f"{m['raw']['absrel']:.4f} -> {m['stabilized']['absrel']:.4f} (oracle "
          f"{m['oracle']['absrel']:.4f}); worst frame {m['raw']['worst_frame_absrel']:.3f} -> "
          f"{m['stabilized']['worst_frame_absrel']:.3f}, worst ratio to raw "
          f"{m['worst_frame_ratio']:.2f}; scale drift {m['stabilized']['scale_drift']:.3f}")


def _flicker_goal(m):
    return m["stabilized"]["flicker"] <= max(m["raw"]["flicker"] / 3.0, 1.1 * m["oracle"]["flicker"])


@pytest.fixture(scope="module")
def shots():
    return {name: make() for name, make in stabilize_cases.CASES.items() if name != "long_take"}


@pytest.mark.parametrize("name", ["hard_cuts", "closeup_cuts", "fade_through_black", "glitches"])
@pytest.mark.parametrize("severity, seed", RUNS)
def test_cuts_fades_and_bad_frames_meet_the_goal(shots, name, severity, seed):
    shot = shots[name]
    m, fits = _run(shot, severity, seed)
    _print(name, severity, seed, m)
    assert m["stabilized"]["absrel"] <= m["raw"]["absrel"]
    assert m["worst_frame_ratio"] <= 1.1
    assert _flicker_goal(m)
    statuses = [fit.status for fit in fits]
    if name.endswith("cuts"):
        # Each hard cut is found (one frame late: the frame at the cut is held until the next one
        # confirms it) and starts a new alignment at the cut.
        cuts = [fit.segment_start for fit in fits if fit.status == temporal.CUT]
        assert cuts == [int(np.flatnonzero(np.diff(shot.segment))[k]) + 1 for k in range(2)] or \
            severity == 1.0 and len(cuts) >= 1, cuts
    if name == "fade_through_black":
        # The black frames keep the previous scale and are never references.
        assert all(statuses[i] == temporal.FLAT for i in np.flatnonzero(shot.blank))


@pytest.mark.parametrize("name", ["hard_cuts", "closeup_cuts", "fade_through_black", "glitches",
                                  "closeup"])
def test_photos_never_make_cuts_fades_and_close_ups_worse(shots, name):
    """With each frame's photo (a plain wall, noise, exposure changes, the fade dimming the
    picture), the shots that meet the goal from the depth alone still do, and are within a
    hair of their figures without photos (where the photos show nothing moving, or say nothing,
    the depth test decides)."""
    for severity, seed in [(0.5, 0), (1.0, 0)]:
        m, fits = _run(shots[name], severity, seed, photos=True)
        plain, plain_fits = _run(shots[name], severity, seed)
        _print(name + " with photos", severity, seed, m)
        assert m["stabilized"]["absrel"] <= plain["stabilized"]["absrel"] + 0.001
        assert m["worst_frame_ratio"] <= plain["worst_frame_ratio"] + 0.02
        assert [f.status for f in fits] == [f.status for f in plain_fits]
        if name != "closeup":
            assert m["stabilized"]["absrel"] <= m["raw"]["absrel"] and m["worst_frame_ratio"] <= 1.1
            assert _flicker_goal(m)


def test_photos_keep_the_fit_off_a_large_moving_object(shots):
    """The ball filling 50-75 % of the frame moving across the room, severity 0.5: from the depth
    alone the scale follows the ball (AbsRel 0.074, a frame 2.05x worse than raw); the photos
    show what moves, the fit keeps to the room (0.050, 1.25x; README: the mean of 2 seeds)."""
    plain, _ = _run(shots["object_across"], 0.5, 0)
    m, _ = _run(shots["object_across"], 0.5, 0, photos=True)
    _print("object_across with photos", 0.5, 0, m)
    assert m["stabilized"]["absrel"] <= 0.8 * plain["stabilized"]["absrel"]
    assert m["worst_frame_ratio"] <= 1.4 < plain["worst_frame_ratio"]
    assert _flicker_goal(m) and m["stabilized"]["scale_drift"] < 0.08


def test_a_close_up_does_not_crush_the_scale(shots):
    """One surface filling 80 % of the frame: the scale stays that of the first frame (it used to
    collapse to 1e-33, flat maps) and the shot is within half a percent of a perfect per-frame fit."""
    for severity, seed in RUNS:
        m, fits = _run(shots["closeup"], severity, seed)
        _print("closeup", severity, seed, m)
        assert all(0.5 < fit.scale < 2.0 for fit in fits)
        assert m["stabilized"]["absrel"] <= min(m["raw"]["absrel"], m["oracle"]["absrel"] + 0.005)
        assert _flicker_goal(m)
        assert m["worst_frame_ratio"] <= 1.15  # goal 1.1: met at severity 0; 1.10 / 1.14 at 0.5 / 1 (README)


@pytest.mark.parametrize("name", ["object_across", "object_approaching"])
def test_large_moving_objects_never_pop(shots, name):
    """A foreground object filling 50-70 % of the frame: the fit is made on the static background,
    so on exact maps the shot is as good as a perfect per-frame fit; with the model's errors it is
    never worse than raw, whole shot or worst frame, and flickers far less. (The 10 % per-frame
    goal is not met at severity 1, nor 3x less flicker for every seed: README.)"""
    for severity, seed in RUNS:
        m, fits = _run(shots[name], severity, seed)
        _print(name, severity, seed, m)
        assert m["stabilized"]["absrel"] <= m["raw"]["absrel"]
        assert m["stabilized"]["worst_frame_absrel"] <= m["raw"]["worst_frame_absrel"]
        assert m["flicker_reduction"] >= 2.0
        if severity == 0.0:
            # It used to follow the object: AbsRel 0.040 / 0.056 against the oracle's 0.002.
            assert m["stabilized"]["absrel"] <= m["oracle"]["absrel"] + 0.005
        if severity == 0.0 or (name == "object_approaching" and severity == 0.5):
            assert m["worst_frame_ratio"] <= 1.1 and _flicker_goal(m)


def test_where_the_per_frame_bar_is_out_of_reach(shots):
    """The 10 % per-frame bar against raw frames (some of which are right by luck) is out of reach
    where even fits to the truth miss it: a ball filling 70 % of the frame, severity 1, fitted on
    the true static background frame by frame (about what holding the world still can give) has
    frames 1.5x worse than raw, and the close-up fitted to the truth on the whole
    frame 1.12x (README "Where it falls short"). If the error model changes so that these reach
    the bar, the stabilizer's figures must be looked at again."""
    across = shots["object_across"]
    raw = stabilize_cases.raw_frames(across, 1.0, 0)
    limits = stabilize_cases.measure(across, raw, raw)["worst_frame_ratio_limits"]
    print(f"\nobject_across severity 1 seed 0: worst frame / raw of the oracle {limits['oracle']:.2f}, "
          f"of the static background's fit {limits['background_oracle']:.2f}")
    assert limits["oracle"] <= 1.1 < limits["background_oracle"]
    closeup = shots["closeup"]
    raw = stabilize_cases.raw_frames(closeup, 1.0, 0)
    limits = stabilize_cases.measure(closeup, raw, raw)["worst_frame_ratio_limits"]
    print(f"closeup severity 1 seed 0: worst frame / raw of the oracle {limits['oracle']:.2f}")
    assert limits["oracle"] > 1.1 and "background_oracle" not in limits


def test_240_frames_do_not_drift():
    """A camera panning across a room and back: the scale against the truth at the end, back at
    the first view, is the drift the stabilizer piled up."""
    shot = stabilize_cases.long_take()
    m, _ = _run(shot, 1.0, 0)
    _print("long_take", 1.0, 0, m)
    assert m["stabilized"]["scale_drift"] < 0.05  # the goal (issue 14); 2-4 % (README)
    assert m["stabilized"]["absrel"] <= m["raw"]["absrel"] and _flicker_goal(m)


def test_an_untrusted_fit_keeps_the_previous_scale_and_shift():
    """Few inliers, or a shift that would put the frame behind the camera: the frame keeps the
    previous frame's scale and shift instead of popping, and is not a reference."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:48, 0:64] / 64.0
    base = 0.2 + 0.6 * x + 0.1 * np.sin(9 * y)
    stabilizer = temporal.TemporalStabilizer()
    for frame in range(4):
        stabilizer.align(frame, base * 0.8 + 0.05 + rng.normal(0, 1e-3, base.shape))
    previous = stabilizer._last
    noise = rng.uniform(0.0, 1.0, base.shape)  # a failed prediction: nothing in common
    values, fit = stabilizer.align(4, noise)
    assert fit.status == temporal.HELD
    assert fit.inliers < temporal.MIN_INLIERS or fit.agreement < temporal.MIN_AGREEMENT
    assert (fit.scale, fit.shift) == (previous.scale, previous.shift)
    assert 4 not in stabilizer._references
    # A fit whose shift throws the frame out of the shot's range is not trusted either.
    far = temporal.Alignment(previous.scale, previous.shift - 50.0, 0.9, 3, 0.99)
    reference = stabilizer._references[3]
    assert not stabilizer._plausible(far, reference, reference, previous)
    # The next good frame continues the shot as if the bad one had not been there.
    values, fit = stabilizer.align(5, base * 0.8 + 0.05)
    assert fit.status == temporal.ALIGNED and abs(fit.scale - previous.scale) < 0.01
