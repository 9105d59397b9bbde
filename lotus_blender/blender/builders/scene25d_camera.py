"""The 2.5D builder's camera and depth range from the maps, and the depth refined with the normals.

The math is in core.camera_estimate and core.depth_refine; this module reads the Blender images,
picks the focal length by the artist's source (Auto: the focal recorded with the result, else the
estimate from the maps when it is confident, else the scene camera, else 50 mm; choose_focal is the
same rule without maps, for the relight image plane), derives the depth
range from the estimated shift, and writes the refined map as a packed float image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import bpy
import numpy as np

from ...core import camera_estimate, exif, geometry
from . import common

FOCAL_SOURCE_ITEMS = [
    ('AUTO', "Auto", "The focal recorded with the result (EXIF, rendering camera), else estimated from "
                     "depth + normals, else the scene camera"),
    ('RECORDED', "Recorded", "The focal recorded with the result: EXIF for photos, the camera for renders"),
    ('ESTIMATED', "Estimated", "Estimated from the depth and normal maps (falls back when not confident)"),
    ('SCENE', "Scene Camera", "The scene camera's field of view"),
    ('MANUAL', "Manual", "The Focal (35 mm) field"),
]
_ORIGIN_WORDS = {"recorded": "recorded", "estimated": "estimated", "scene camera": "scene camera",
                 "manual": "manual", "default": "50 mm default"}


def photo_pixels(photo, depth):
    """The photo's RGB (H, W, 3) for the vanishing-point estimate, or None: no photo besides the
    depth map, no pixels (a Render Result), or another aspect than the maps."""
    if photo is None or photo == depth or min(photo.size) < 2 or min(depth.size) < 2:
        return None
    if abs(photo.size[0] / photo.size[1] - depth.size[0] / depth.size[1]) > 0.01:
        return None
    try:
        return common.read_pixels(photo)[..., :3]
    except (RuntimeError, ValueError):
        return None


def recorded_focal_35mm(*images):
    """The 35 mm-equivalent focal recorded with the results, or read from the source's EXIF."""
    for image in images:
        if image is not None and image.get("lotus_focal_35mm"):
            return float(image["lotus_focal_35mm"])
    for image in images:
        path = image.get("lotus_source_path") if image is not None else None
        if not path and image is not None and image.filepath:
            path = bpy.path.abspath(image.filepath)
        if path:
            focal = exif.focal_35mm_from_file(path)
            if focal:
                return focal
    return None


def scene_camera_lens(context, width, height):
    """(lens, sensor) seeing what the scene camera sees at this image size ('AUTO' fit), or None."""
    camera = context.scene.camera
    if camera is None or camera.type != 'CAMERA':
        return None
    data = camera.data
    intrinsics = geometry.intrinsics_from_lens(data.lens, data.sensor_width, width, height, data.sensor_fit)
    return intrinsics.focal_px * data.sensor_width / max(width, height), data.sensor_width


def _focal_candidates(context, photo, depth, focal_35mm, width, height) -> dict:
    """The focal lengths at hand by origin: "recorded" and "manual" (35 mm equivalents), "scene
    camera" (lens, sensor); the estimate is added by choose_camera when it is confident."""
    available = {}
    recorded = recorded_focal_35mm(photo, depth)
    if recorded:
        available["recorded"] = recorded
    if focal_35mm:
        available["manual"] = float(focal_35mm)
    scene_lens = scene_camera_lens(context, width, height)
    if scene_lens is not None:
        available["scene camera"] = scene_lens
    return available


def _lens_from(focal_source, available, width, height):
    """(lens mm, sensor mm, origin) by the Focal Source rule (core.camera_estimate.focal_origin)."""
    origin, _fell_back = camera_estimate.focal_origin(focal_source, set(available))
    sensor = geometry.FULL_FRAME_WIDTH_MM
    if origin == "scene camera":
        lens, sensor = available[origin]
    elif origin == "default":
        lens = geometry.DEFAULT_LENS_MM
    else:
        lens = geometry.lens_from_35mm(available[origin], width, height, sensor)
    return lens, sensor, origin


def choose_focal(context, photo, *, focal_source="AUTO", focal_35mm=None, width, height):
    """(lens mm, sensor mm, origin) for a camera ('AUTO' sensor fit) seeing the photo, without maps
    to estimate from: the same Focal Source rule as choose_camera (Auto: the focal recorded with
    the photo, its EXIF, else the scene camera's, else 50 mm; Estimated falls back the same way)."""
    return _lens_from(focal_source, _focal_candidates(context, photo, None, focal_35mm, width, height),
                      width, height)


@dataclass
class CameraChoice:
    """What the builder uses, and where each part came from (recorded on the camera)."""
    lens: float
    sensor: float
    focal_origin: str               # recorded / estimated / scene camera / manual / default
    focal_confidence: float | None  # the estimate's confidence, when one was made
    depth_range: float
    depth_range_origin: str         # estimated / manual
    shift: float | None             # the map's shift (core.camera_estimate) the mesh uses
    shift_confidence: float | None
    fallbacks: list                 # why something fell back, for the report
    extras: list = field(default_factory=list)   # what else was done (refinement)
    focal_method: str = "the maps"  # what an estimated focal came from: the photo's lines or the maps

    def report(self):
        """One line for the operator's report."""
        focal = _ORIGIN_WORDS[self.focal_origin]
        if self.focal_origin == "estimated":
            focal += f" from {self.focal_method}, confidence {self.focal_confidence:.2f}"
        return "; ".join([f"focal {focal}", f"depth range {self.depth_range_origin}"] + self.fallbacks + self.extras)

    def record(self, camera):
        camera["lotus_focal_source"] = self.focal_origin
        if self.focal_confidence is not None:
            camera["lotus_focal_confidence"] = round(float(self.focal_confidence), 3)
        camera["lotus_depth_range_source"] = self.depth_range_origin
        if self.shift is not None:
            camera["lotus_depth_shift"] = float(self.shift)
            camera["lotus_shift_confidence"] = round(float(self.shift_confidence or 0.0), 3)
        camera["lotus_camera_report"] = self.report()
        camera["lotus_camera_fallback"] = bool(self.fallbacks)


def choose_camera(context, photo, depth, normal, kind, *, focal_source, focal_35mm, near, depth_range,
                  default_depth_range, width, height):
    """Pick the focal length and the depth range (see the module text). depth_range None = automatic
    (default_depth_range when the shift cannot be estimated).

    Returns (CameraChoice, values, normals): the map and the normals read for the estimate (None
    without a normal image), for the refinement to reuse.
    """
    fallbacks = []
    values = normals = None
    available = _focal_candidates(context, photo, depth, focal_35mm, width, height)
    estimate = None
    wants_estimate = focal_source == "ESTIMATED" or (focal_source == "AUTO" and "recorded" not in available)
    if normal is not None and (wants_estimate or depth_range is None):
        values = common.read_pixels(depth)[..., 0]
        normals = common.camera_normals(normal, values.shape)
        if wants_estimate:
            estimate = camera_estimate.estimate_camera(values, normals, kind, photo=photo_pixels(photo, depth))
            if estimate.focal_is_confident:
                available["estimated"] = estimate.focal_35mm
            else:
                fallbacks.append(f"focal estimate not confident ({estimate.note})")
    elif wants_estimate:
        fallbacks.append("no normal map to estimate the focal from")
    lens, sensor, origin = _lens_from(focal_source, available, width, height)

    # A shift fitted at a guessed focal is as wrong as the guess (the two trade off in the fit):
    # the depth range is estimated only at a focal that is known or confidently estimated.
    focal_is_guess = origin == "default" or (origin == "scene camera" and focal_source != "SCENE")
    shift = shift_confidence = None
    if values is not None and not focal_is_guess:
        depth_height, depth_width = values.shape
        focal_px = lens / sensor * max(depth_width, depth_height)
        if estimate is None or origin != "estimated":
            estimate = camera_estimate.estimate_camera(values, normals, kind, focal_px=focal_px)
        shift, shift_confidence = estimate.shift, estimate.shift_confidence
    if depth_range is not None:
        range_origin = "manual"
    elif shift is not None and shift_confidence >= camera_estimate.CONFIDENT:
        depth_range, range_origin = camera_estimate.depth_range_for_shift(shift, near), "estimated"
    else:
        depth_range, range_origin = default_depth_range, "default"
        fallbacks.append("depth range not estimated" + (
            f" (shift confidence {shift_confidence:.2f})" if shift is not None else
            ": no normal map" if normal is None else
            f": the focal is the {_ORIGIN_WORDS[origin]}, not known" if focal_is_guess else ""))
    confidence = estimate.focal_confidence if estimate is not None and not estimate.focal_given else None
    method = "the photo's lines" if estimate is not None and estimate.focal_source == "lines" else "depth + normals"
    choice = CameraChoice(lens, sensor, origin, confidence, float(depth_range), range_origin,
                          shift if range_origin == "estimated" else None, shift_confidence, fallbacks,
                          focal_method=method)
    return choice, values, normals


def refined_depth_image(name, depth, values, normals, kind, lens, sensor, near, depth_range, *,
                        tear_threshold, max_vertices):
    """The depth map refined with the normals, as a new packed float image (same kind), and the
    depth range that reproduces its shape for the given near.

    The map is first sampled on the mesh's grid (no more pixels than Max Vertices), with the
    mapping the mesh would use (near and depth range give the shift: range = near / shift).
    """
    height, width = values.shape
    grid_values, rows, cols = geometry.downsample_grid(values, max_vertices)
    grid_normals = normals[rows][:, cols]
    spacing = width / len(cols)
    focal_px = lens / sensor * max(width, height)
    shift = near / max(depth_range, 1e-9)
    refined, range_ratio = camera_estimate.refine_map(grid_values, grid_normals, kind, focal_px / spacing, shift,
                                                      tear_threshold=max(tear_threshold, 0.0) or 0.05)
    rows_count, cols_count = refined.shape
    image = bpy.data.images.new(name, cols_count, rows_count, alpha=False, float_buffer=True)
    image.colorspace_settings.name = 'Non-Color'
    rgba = np.ones((rows_count, cols_count, 4), np.float32)
    rgba[..., :3] = refined[..., None]
    image.pixels.foreach_set(rgba[::-1].ravel())
    image.update()
    image.pack()        # generated pixels are lost on reload unless packed (as float EXR)
    image["lotus_kind"] = kind
    image["lotus_refined_from"] = depth.name
    return image, near * range_ratio
