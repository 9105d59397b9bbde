"""Camera geometry for depth maps, numpy only.

Conventions (the same as Blender's):
- Camera space: +X right, +Y up, the camera looks down -Z. A point at planar depth z lies at
  camera-space Z = -z.
- Images are top row first (row 0 is the top of the picture); pixel (row, col) has its centre at
  (col + 0.5, row + 0.5) in pixel units from the top-left corner.
- Sensor fit follows Blender: 'AUTO' applies the sensor width to the longer image edge,
  'HORIZONTAL' to the width, 'VERTICAL' to the height. Pixels are square, no lens shift.
- "Planar" depth is the distance along the camera axis (-Z); "ray" depth is the length of the
  view ray from the camera centre to the point. Cycles' Depth pass is planar (see tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FULL_FRAME_WIDTH_MM = 36.0
FULL_FRAME_HEIGHT_MM = 24.0
FULL_FRAME_DIAGONAL_MM = math.hypot(FULL_FRAME_WIDTH_MM, FULL_FRAME_HEIGHT_MM)  # 43.27 mm
DEFAULT_LENS_MM = 50.0  # Blender's default camera: 39.6 degrees across a 36 mm sensor


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (top-left origin, rows going down)."""
    width: int
    height: int
    focal_px: float   # the same for x and y (square pixels)

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.height / 2.0

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians."""
        return 2.0 * math.atan(self.width / (2.0 * self.focal_px))

    @property
    def fov_y(self) -> float:
        return 2.0 * math.atan(self.height / (2.0 * self.focal_px))


def fitted_sensor_pixels(width: int, height: int, sensor_fit: str = "AUTO") -> int:
    """The image edge (in pixels) the sensor width applies to, as Blender decides it."""
    if sensor_fit == "HORIZONTAL":
        return width
    if sensor_fit == "VERTICAL":
        return height
    if sensor_fit == "AUTO":
        return max(width, height)
    raise ValueError(f"unknown sensor fit {sensor_fit!r}")


def intrinsics_from_lens(lens_mm: float, sensor_mm: float, width: int, height: int,
                         sensor_fit: str = "AUTO") -> Intrinsics:
    """Intrinsics of a Blender camera (lens and sensor in mm) rendering width x height pixels."""
    if lens_mm <= 0 or sensor_mm <= 0:
        raise ValueError("lens and sensor must be positive")
    focal_px = lens_mm / sensor_mm * fitted_sensor_pixels(width, height, sensor_fit)
    return Intrinsics(int(width), int(height), float(focal_px))


def lens_from_35mm(focal_35mm: float, width: int, height: int, sensor_mm: float = FULL_FRAME_WIDTH_MM) -> float:
    """Lens (mm) for a Blender camera with `sensor_mm` on the longer edge ('AUTO' fit) that sees
    what a photo with this 35 mm-equivalent focal length sees.

    The 35 mm equivalent (EXIF FocalLengthIn35mmFilm) matches the DIAGONAL field of view of a
    36x24 mm frame, so for photos that are not 3:2 the long-edge view differs from 36 mm / f.
    """
    if focal_35mm <= 0:
        raise ValueError("focal length must be positive")
    long_edge, diagonal = max(width, height), math.hypot(width, height)
    # Long edge of the photo expressed on a full-frame diagonal.
    equivalent_long_edge_mm = FULL_FRAME_DIAGONAL_MM * long_edge / diagonal
    return focal_35mm * sensor_mm / equivalent_long_edge_mm


def pixel_grid(intrinsics: Intrinsics, rows=None, cols=None):
    """Normalised image-plane coordinates (x right, y up at distance 1) of pixel centres.

    rows/cols select pixel indices (top-first); default: every pixel. Returns (x, y) arrays of
    shape (len(rows), len(cols)).
    """
    rows = np.arange(intrinsics.height) if rows is None else np.asarray(rows)
    cols = np.arange(intrinsics.width) if cols is None else np.asarray(cols)
    x = (cols + 0.5 - intrinsics.cx) / intrinsics.focal_px
    y = (intrinsics.cy - (rows + 0.5)) / intrinsics.focal_px
    return np.broadcast_to(x[None, :], (len(rows), len(cols))), np.broadcast_to(y[:, None], (len(rows), len(cols)))


def unproject(depth: np.ndarray, intrinsics: Intrinsics, depth_type: str = "PLANAR",
              rows=None, cols=None) -> np.ndarray:
    """Camera-space points (H, W, 3) of the pixel centres at the given depths.

    depth has the shape of the selected pixels (top row first); depth_type is "PLANAR"
    (along -Z) or "RAY" (along the view ray).
    """
    depth = np.asarray(depth, dtype=np.float64)
    x, y = pixel_grid(intrinsics, rows, cols)
    if depth_type == "RAY":
        depth = depth / np.sqrt(1.0 + x * x + y * y)
    elif depth_type != "PLANAR":
        raise ValueError(f"unknown depth type {depth_type!r}")
    return np.stack([x * depth, y * depth, -depth], axis=-1)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine matrix (e.g. camera.matrix_world) to (..., 3) points."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points) @ matrix[:3, :3].T + matrix[:3, 3]


def relative_depth_jump(depth_a: np.ndarray, depth_b: np.ndarray) -> np.ndarray:
    """|a - b| / min(a, b): the tearing measure between two neighbouring vertices."""
    depth_a, depth_b = np.asarray(depth_a), np.asarray(depth_b)
    return np.abs(depth_a - depth_b) / np.minimum(depth_a, depth_b)


def torn_faces(depth: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean (H-1, W-1): grid quads with any edge whose relative depth jump exceeds threshold."""
    depth = np.asarray(depth, dtype=np.float64)
    right = relative_depth_jump(depth[:, :-1], depth[:, 1:]) > threshold   # (H, W-1)
    down = relative_depth_jump(depth[:-1, :], depth[1:, :]) > threshold    # (H-1, W)
    return right[:-1, :] | right[1:, :] | down[:, :-1] | down[:, 1:]


def vertex_grid_size(width: int, height: int, max_vertices: int) -> tuple[int, int]:
    """Vertices (across, down) of a grid over a width x height image with at most about
    max_vertices vertices, keeping the aspect ratio and never more than one vertex per pixel."""
    if width < 2 or height < 2:
        raise ValueError("the image needs at least 2x2 pixels")
    across = int(math.floor(math.sqrt(max(max_vertices, 4) * width / height)))
    across = min(max(across, 2), width)
    down = int(math.floor(across * height / width + 0.5))
    return across, min(max(down, 2), height)


def grid_pixel_indices(vertex_count: int, pixel_count: int) -> np.ndarray:
    """Pixel index sampled by each of vertex_count evenly spread grid vertices (identity when equal)."""
    return np.floor((np.arange(vertex_count) + 0.5) * pixel_count / vertex_count).astype(np.int64)


# The 2.5D mesh's vertices sit this far (pixels right, down) off the centres of the pixels they
# sample. A render's ray through a pixel's centre would otherwise pass exactly through a vertex,
# where it can slip between the faces around it (Cycles showed the world through scattered
# pixels of a mesh without tears). The UVs follow the vertices, so the photo still maps exactly.
RAY_OFFSET_PX = (0.0031, -0.0017)


def grid_ray_coordinates(vertex_count: int, pixel_count: int, offset: float = 0.0) -> np.ndarray:
    """Image coordinate (pixels from the left or top edge) of the ray through each grid vertex: the
    centre of the pixel it samples, except the outermost vertices, which lie on the frame's edges
    so that the mesh covers the border pixels whole; plus `offset` (RAY_OFFSET_PX's component)."""
    coordinates = grid_pixel_indices(vertex_count, pixel_count) + 0.5
    coordinates[0], coordinates[-1] = 0.0, float(pixel_count)
    return coordinates + offset


def downsample_grid(values: np.ndarray, max_vertices: int):
    """Nearest (pixel-centre) samples of an (H, W, ...) map on the builder's grid.

    Returns (samples, rows, cols) with rows/cols the pixel indices (top-first).
    """
    height, width = values.shape[:2]
    across, down = vertex_grid_size(width, height, max_vertices)
    rows = grid_pixel_indices(down, height)
    cols = grid_pixel_indices(across, width)
    return values[rows][:, cols], rows, cols
