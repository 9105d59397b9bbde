"""Shots for measuring Stabilize Depth (core.temporal) on model-like maps (numpy only, no Blender).

Each case is a moving shot of analytic scenes (tests/synthetic_scenes.ray_cast: planes and spheres)
with its true planar depth per frame. `raw_frames()` turns the truth into what Lotus outputs frame
by frame: the error model of tests/lotus_errors.py with errors that drift from frame to frame
(`frame=`), then the disparity normalisation Lotus was trained on (1 / depth between its 2 % and
98 % quantiles, near = 1), a random per-frame scale 0.6-0.95 and shift and the model's [0, 1] clamp
(tests/synthetic_scenes.lotus_disparity). Frames marked `blank` (a fade through black) come out as
the model's near-flat output for a picture with almost nothing in it.

Each shot also has the photo the model was given (`photo_frames()`): textures fixed to the 3D
surfaces (a world-position texture on the static planes and balls, an object-local one that moves
with the moving ball; the room's back wall and the yard's far background are plain, the close-up's
wall weakly textured), Lambert shading under a fixed light, then what a camera adds: a slight blur,
a per-frame exposure change of a few percent, the fade (the picture dims to black), sensor noise
and the display encoding. The stabilizer may use it to find what moves (core.motion).

`measure()` gives, per shot, for raw, stabilized and the best per-frame affine fit to the truth
(the "oracle", what no stabilizer can beat): flicker (mean |change of the estimated depth - change
of the true depth| between consecutive frames, relative to the true depth, on world-static pixels),
AbsRel after one affine fit for each segment (shots with hard cuts are measured per segment: two
scenes have no common scale), per-frame AbsRel under that fit, the drift of the stabilized
depth's scale against the truth, and how close to raw any per-frame scale and shift can bring the
worst frame (the oracle; with a moving object, the fit to the true static background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lotus_blender.core import geometry
from tests import lotus_errors, synthetic_scenes

WIDTH, HEIGHT = 128, 96
MOVING_LABEL = 200  # label of the moving object (the synthetic scenes use 1.. for planes, 100.. spheres)


@dataclass
class Shot:
    name: str
    depth: np.ndarray                 # (T, H, W) true planar depth
    moving: np.ndarray                # (T, H, W) bool: pixels of a moving object
    segment: np.ndarray               # (T,) int: frames of one scene between hard cuts
    radiance: np.ndarray = field(default=None)  # (T, H, W, 3) the lit scene before the camera
    blank: np.ndarray = field(default=None)  # (T,) bool: frames with nothing to measure (black, wrong)
    fade: np.ndarray = field(default=None)   # (T,) float: 1 = full picture, 0 = black

    def __post_init__(self):
        count = len(self.depth)
        if self.fade is None:
            self.fade = np.ones(count)
        if self.blank is None:
            self.blank = self.fade < 0.3


def _frame(planes, spheres, rotation, mover=None, lens=35.0, plain=(), texture=1.0):
    """One frame: depth, a mask of the moving sphere (centre, radius) if any, and the scene's
    radiance (textured albedo times Lambert shading). ``plain``: labels of untextured planes;
    ``texture``: the texture's contrast on the static surfaces."""
    balls = list(spheres) + ([mover] if mover is not None else [])
    depth, normals, labels, focal = synthetic_scenes.ray_cast(WIDTH, HEIGHT, lens, rotation,
                                                              planes, balls)
    moving = labels == synthetic_scenes.SPHERE_LABEL + len(spheres) if mover is not None else \
        np.zeros(depth.shape, bool)
    finite = np.where(np.isfinite(depth), depth, 1e3)
    camera_points = geometry.unproject(finite, geometry.Intrinsics(WIDTH, HEIGHT, focal))
    world = camera_points @ rotation  # camera = rotation @ world
    local = world - np.asarray(mover[0], float) if mover is not None else world
    pattern = np.where(moving, _texture(local, 0.13), 0.5 + texture * (_texture(world, 0.0) - 0.5))
    pattern = np.where(np.isin(labels, plain), 0.5, pattern)
    albedo = _COLOURS[labels % len(_COLOURS)] * (0.35 + 0.9 * pattern)[..., None]
    albedo[moving] = _MOVER_COLOUR * (0.35 + 0.9 * pattern[moving])[:, None]
    light = rotation @ _LIGHT
    shading = 0.25 + 0.75 * np.clip(normals @ light, 0.0, 1.0)
    return depth, moving, np.clip(albedo * shading[..., None], 0.0, 1.0)


_COLOURS = np.array([(0.5, 0.5, 0.5), (0.55, 0.45, 0.35), (0.6, 0.6, 0.55), (0.5, 0.55, 0.6),
                     (0.62, 0.6, 0.55), (0.7, 0.7, 0.72), (0.4, 0.5, 0.35), (0.45, 0.4, 0.5)])
_MOVER_COLOUR = np.array((0.7, 0.35, 0.25))
_LIGHT = np.array((0.4, 0.8, 0.45)) / np.linalg.norm((0.4, 0.8, 0.45))
_WAVES = np.random.default_rng(5).normal(size=(6, 3))
_WAVES /= np.linalg.norm(_WAVES, axis=1, keepdims=True)


def _texture(points, phase):
    """A fixed procedural texture in [0, 1] of 3D positions (features of 20-60 cm)."""
    total = np.zeros(points.shape[:-1])
    for k, direction in enumerate(_WAVES):
        frequency = 2.0 * np.pi / (0.4 + 0.15 * k)
        total += np.sin(frequency * (points @ direction) + 1.7 * k + phase)
    return 0.5 + 0.5 * np.tanh(0.6 * total)


ROOM_PLANES = [((0, 1, 0), -1.4), ((1, 0, 0), -2.5), ((-1, 0, 0), -3.0), ((0, 0, 1), -9.0),
               ((0, -1, 0), -1.6)]
ROOM_BALLS = [((0.6, -0.6, -5.0), 0.8), ((-1.2, -0.9, -6.5), 0.5)]
YARD_PLANES = [((0, 1, 0), -1.7), ((0, 0, 1), -30.0), ((1, 0, 0), -9.0)]
YARD_BALLS = [((-2.0, 0.0, -12.0), 1.8), ((3.0, -0.6, -8.0), 1.1), ((0.5, -1.2, -5.0), 0.5)]
WALL_PLANES = [((0.15, 0, 1), -1.2), ((0, 1, 0), -0.9)]
WALL_BALLS = [((0.15, -0.25, -1.0), 0.12)]
ROOM_PLAIN = (4,)  # the back wall: no texture
YARD_PLAIN = (2,)  # the far background


def _stack(frames, name, segment=None, fade=None):
    depth = np.stack([f[0] for f in frames])
    moving = np.stack([f[1] for f in frames])
    segment = np.zeros(len(frames), int) if segment is None else np.asarray(segment)
    return Shot(name, depth, moving, segment, np.stack([f[2] for f in frames]).astype(np.float32),
                fade=fade)


def object_across(frames=24):
    """A ball filling 50-70 % of the frame moves across a room (the camera turns slowly)."""
    out = []
    for index in range(frames):
        t = index / (frames - 1)
        rotation = synthetic_scenes.turned(-8.0, 10.0 + 4.0 * t)
        out.append(_frame(ROOM_PLANES, ROOM_BALLS, rotation,
                          mover=((-0.5 + 2.0 * t, -0.2, -2.6), 1.2), plain=ROOM_PLAIN))
    return _stack(out, "object_across")


def object_approaching(frames=24):
    """A ball comes at the camera until it fills about 70 % of the frame."""
    out = []
    for index in range(frames):
        t = index / (frames - 1)
        out.append(_frame(ROOM_PLANES, ROOM_BALLS, synthetic_scenes.turned(-8.0, 12.0),
                          mover=((0.2, -0.3, -7.0 + 5.2 * t), 0.9), plain=ROOM_PLAIN))
    return _stack(out, "object_approaching")


def closeup(frames=24):
    """One wall fills over 80 % of the frame (a small ball in front), the camera drifts."""
    out = [_wall(i / frames) for i in range(frames)]
    return _stack(out, "closeup")


def _room(t):
    return _frame(ROOM_PLANES, ROOM_BALLS, synthetic_scenes.turned(-8.0, 8.0 + 6.0 * t),
                  plain=ROOM_PLAIN)


def _yard(t):
    return _frame(YARD_PLANES, YARD_BALLS, synthetic_scenes.turned(-4.0, -10.0 + 8.0 * t),
                  plain=YARD_PLAIN)


def _wall(t):
    return _frame(WALL_PLANES, WALL_BALLS, synthetic_scenes.turned(-3.0 + 2.0 * t, 2.0 * t),
                  texture=0.15)


def closeup_cuts(frames=30):
    """A room, a hard cut into the close-up of a wall, and a cut back out."""
    third = frames // 3
    parts = [(_room, 0), (_wall, 1), (_room, 2)]
    out, segment = [], []
    for index in range(frames):
        make, label = parts[min(index // third, 2)]
        out.append(make((index % third) / third))
        segment.append(label)
    return _stack(out, "closeup_cuts", segment)


def hard_cuts(frames=30):
    """Hard cuts between different scenes: a room, a yard with a far background, the room again."""
    third = frames // 3
    parts = [(_room, 0), (_yard, 1), (_room, 2)]
    out, segment = [], []
    for index in range(frames):
        make, label = parts[min(index // third, 2)]
        out.append(make((index % third) / third))
        segment.append(label)
    return _stack(out, "hard_cuts", segment)


def fade_through_black(frames=30):
    """The room fades to black and back (five frames almost black), then three near-flat frames."""
    fade = np.ones(frames)
    fade[8:17] = [0.6, 0.3, 0.1, 0.02, 0.0, 0.02, 0.1, 0.3, 0.6]
    fade[22:25] = 0.05
    out = [_room(index / (frames - 1)) for index in range(frames)]
    return _stack(out, "fade_through_black", fade=fade)


def long_take(frames=240):
    """240 frames: the camera pans across the room and back to its first view while a ball
    crosses the room."""
    out = []
    for index in range(frames):
        t = index / (frames - 1)
        swing = math.sin(math.pi * t)
        out.append(_frame(ROOM_PLANES, ROOM_BALLS, synthetic_scenes.turned(-8.0 - 4.0 * swing,
                                                                             2.0 + 16.0 * swing),
                          mover=((-2.0 + 4.0 * t, -0.7, -4.5), 0.6), plain=ROOM_PLAIN))
    return _stack(out, "long_take")


def glitches(frames=24):
    """A plain shot in which two single frames come out wrong (made by `raw_frames`; they carry
    nothing to measure, like the black frames of a fade)."""
    out = [_room(index / (frames - 1)) for index in range(frames)]
    shot = _stack(out, "glitches")
    shot.blank[list(GLITCH_FRAMES)] = True
    return shot


GLITCH_FRAMES = (9, 16)
CASES = {make.__name__: make for make in (object_across, object_approaching, closeup, closeup_cuts,
                                          hard_cuts, fade_through_black, long_take, glitches)}


def raw_frames(shot: Shot, severity: float, seed: int) -> list[np.ndarray]:
    """What a Lotus disparity model outputs for each frame of the shot (float32, [0, 1])."""
    rng = np.random.default_rng([seed, 99])
    frames = []
    for index, depth in enumerate(shot.depth):
        degraded = lotus_errors.degrade_depth(depth, severity, seed + 31 * int(shot.segment[index]),
                                              frame=index)
        values = synthetic_scenes.lotus_disparity(degraded, rng)
        fade = shot.fade[index]
        if fade < 1.0:
            # A darker picture: the model sees less; at black it outputs a near-flat map.
            flat = 0.5 + 0.01 * lotus_errors.smooth_field(depth.shape, rng)
            values = fade * values + (1.0 - fade) * flat
        if shot.name == "glitches" and index in GLITCH_FRAMES:
            # A wrong prediction: one frame upside down with its values pushed off (a failed fit
            # would take it for real and pop).
            values = np.clip(values[::-1] * 0.4 + 0.55, 0.0, 1.0)
        frames.append(values.astype(np.float32))
    return frames


PHOTO_NOISE = 0.01     # sensor noise (standard deviation, display values)
PHOTO_GAIN = 0.03      # per-frame exposure change (standard deviation, relative)
PHOTO_BLUR = 0.7       # pixels


def photo_frames(shot: Shot, seed: int) -> list[np.ndarray]:
    """The photos (H x W x 3 float32 display values in [0, 1]) the model saw for each frame."""
    rng = np.random.default_rng([seed, 7])
    frames = []
    for index, radiance in enumerate(shot.radiance):
        gain = shot.fade[index] * (1.0 + PHOTO_GAIN * rng.standard_normal())
        linear = np.stack([synthetic_scenes.gaussian_blur(radiance[..., c], PHOTO_BLUR)
                           for c in range(3)], axis=-1) * gain
        display = np.clip(linear, 0.0, 1.0) ** (1.0 / 2.2)
        display = display + rng.normal(0.0, PHOTO_NOISE, display.shape)
        frames.append(np.clip(display, 0.0, 1.0).astype(np.float32))
    return frames


def _depth_fit(frames, truth, keep):
    """One least-squares affine fit of these frames' values to the true disparity (over keep),
    then depth = 1 / disparity (clamped far: a fit that goes negative is an error, not a crash)."""
    values = np.stack(frames).astype(np.float64)
    a, b = values[keep], 1.0 / truth[keep]
    scale, shift = np.polyfit(a, b, 1)
    return 1.0 / np.maximum(values * scale + shift, 1e-3)


def _oracle(frames, truth):
    """Each frame fitted to the truth on its own: the best any per-frame scale and shift can do."""
    out = []
    for values, depth in zip(frames, truth):
        scale, shift = np.polyfit(values.ravel().astype(np.float64), 1.0 / depth.ravel(), 1)
        out.append(values * scale + shift)
    return out


def _background_oracle(frames, shot):
    """Each frame fitted to the truth on its world-static pixels only (the moving object left out
    with the true mask): what holding the world still gives a frame even with a perfect mask (not a
    strict bound: carrying the scale from frame to frame can do a little better); the object's own
    error stays as the model made it."""
    out = []
    for values, depth, moving in zip(frames, shot.depth, shot.moving):
        still = ~moving
        scale, shift = np.polyfit(values[still].astype(np.float64), 1.0 / depth[still], 1)
        out.append(values * scale + shift)
    return out


def _measure(frames, shot, used):
    """Metrics of one sequence of maps: segments fitted separately, blank frames left out."""
    truth = shot.depth
    per_frame = np.full(len(frames), np.nan)
    flicker_sum, flicker_count, absrel_sum, absrel_count = 0.0, 0, 0.0, 0
    for label in np.unique(shot.segment):
        members = np.flatnonzero((shot.segment == label) & used)
        if members.size == 0:
            continue
        keep = np.ones((members.size,) + truth.shape[1:], bool)
        depth = _depth_fit([frames[i] for i in members], truth[members], keep)
        relative = np.abs(depth - truth[members]) / truth[members]
        per_frame[members] = relative.mean(axis=(1, 2))
        absrel_sum += relative.sum()
        absrel_count += relative.size
        for position in range(members.size - 1):
            i, j = members[position], members[position + 1]
            if j != i + 1:
                continue
            static = ~(shot.moving[i] | shot.moving[j])
            change = (depth[position + 1] - depth[position]) - (truth[j] - truth[i])
            flicker_sum += (np.abs(change) / truth[i])[static].sum()
            flicker_count += int(static.sum())
    return {"flicker": flicker_sum / max(flicker_count, 1), "absrel": absrel_sum / absrel_count,
            "frame_absrel": per_frame}


def scale_drift(frames, shot, used):
    """(end, largest) drift of the maps' scale against the truth within a segment: the per-frame
    least-squares scale to the true disparity, as a 15-frame running median (one frame's own error
    is not drift), relative to the segment's start. The end drift is what the stabilizer piled up
    on a shot that comes back to its first view; along the way the scale against the truth also
    moves with the content, as the model's own errors depend on what is in the frame."""
    end = largest = 0.0
    for label in np.unique(shot.segment):
        members = np.flatnonzero((shot.segment == label) & used)
        scales = np.array([np.polyfit(frames[i].ravel().astype(np.float64),
                                      1.0 / shot.depth[i].ravel(), 1)[0] for i in members])
        window = min(15, len(scales))
        smooth = np.array([np.median(scales[max(0, k - window // 2):k + window // 2 + 1])
                           for k in range(len(scales))])
        largest = max(largest, float(np.max(np.abs(smooth / smooth[0] - 1.0))))
        end = max(end, abs(float(np.median(scales[-window:]) / np.median(scales[:window])) - 1.0))
    return end, largest


def measure(shot: Shot, raw, stabilized) -> dict:
    """Raw, stabilized and oracle metrics of one shot (see the module docstring)."""
    used = ~shot.blank
    raw_m = _measure(raw, shot, used)
    stable_m = _measure(stabilized, shot, used)
    oracle_m = _measure(_oracle(raw, shot.depth), shot, used)
    ratio = stable_m["frame_absrel"] / raw_m["frame_absrel"]
    # The per-frame bar compares with raw frames, some of which are right by luck (their
    # random scale and shift happen to match the shot's fit); against the oracle's frames is what
    # a per-frame scale and shift could at best reach. An extra figure, not a replacement.
    oracle_ratio = stable_m["frame_absrel"] / oracle_m["frame_absrel"]
    drift = scale_drift(stabilized, shot, used)
    # Where the 10 % per-frame bar is out of reach: the oracle's and (with a moving object) the
    # background oracle's worst frame against raw. A per-frame scale and shift cannot do better
    # than the oracle; holding the world still gives about what the fit to the true static
    # background gives (the moving object's depth says nothing of the scale).
    limits = {"oracle": float(np.nanmax(oracle_m["frame_absrel"] / raw_m["frame_absrel"]))}
    if shot.moving.any():
        background_m = _measure(_background_oracle(raw, shot), shot, used)
        limits["background_oracle"] = float(np.nanmax(background_m["frame_absrel"] /
                                                      raw_m["frame_absrel"]))
    return {
        "frames": len(raw),
        "raw": {"flicker": raw_m["flicker"], "absrel": raw_m["absrel"],
                "worst_frame_absrel": float(np.nanmax(raw_m["frame_absrel"]))},
        "stabilized": {"flicker": stable_m["flicker"], "absrel": stable_m["absrel"],
                       "worst_frame_absrel": float(np.nanmax(stable_m["frame_absrel"])),
                       "scale_drift": drift[0], "scale_drift_max": drift[1]},
        "oracle": {"flicker": oracle_m["flicker"], "absrel": oracle_m["absrel"],
                   "worst_frame_absrel": float(np.nanmax(oracle_m["frame_absrel"]))},
        "worst_frame_ratio": float(np.nanmax(ratio)),
        "worst_frame_ratio_to_oracle": float(np.nanmax(oracle_ratio)),
        "flicker_reduction": raw_m["flicker"] / max(stable_m["flicker"], 1e-12),
        "worst_frame_ratio_limits": limits,
    }
