"""Conversions between Lotus outputs and the maps Blender needs (numpy only).

Image arrays are top-row-first (row 0 = top of the image), HxW or HxWx3, float32 unless stated.

Depth. Lotus disparity checkpoints predict disparity in [0, 1] with near = 1 (inverse depth normalised
between its quantiles during training); depth checkpoints predict relative depth in [0, 1] with near = 0.
Both are affine-invariant, so a metric scene needs a near and a far distance chosen by the user.

Normals. Lotus stores camera-space normals as (+X left, +Y up, +Z toward the camera). Blender camera space
is (+X right, +Y up, +Z toward the viewer; the camera looks down -Z), so only X changes sign.
A camera-facing surface (image plane, 2.5D mesh) has tangent +X right, bitangent +Y up and normal +Z toward
the camera, which is Blender camera space: camera-space normals ARE its tangent-space normals.
"""

import numpy as np

NORMAL_MAP_CONVENTIONS = ("OPENGL", "DIRECTX")
DEPTH_COLORMAPS = ("INFERNO", "VIRIDIS", "TURBO")


def _check_near_far(near, far):
    near = float(near)
    far = float(far)
    if not (np.isfinite(near) and np.isfinite(far)):
        raise ValueError(f"near and far must be finite, got near={near}, far={far}")
    if near <= 0.0 or far <= 0.0:
        raise ValueError(f"near and far must be > 0, got near={near}, far={far}")
    if near >= far:
        raise ValueError(f"near must be smaller than far, got near={near}, far={far}")
    return near, far


def disparity_to_depth(disparity, near, far):
    """Lotus disparity (near = 1) -> depth, affine in inverse depth: d=0 -> far, d=1 -> near.

    Values outside [0, 1] are clipped (the model's decoder output is clamped there anyway); NaN stays NaN.
    """
    near, far = _check_near_far(near, far)
    d = np.clip(np.asarray(disparity, dtype=np.float64), 0.0, 1.0)
    inverse_depth = 1.0 / far + d * (1.0 / near - 1.0 / far)
    return (1.0 / inverse_depth).astype(np.float32)


def relative_depth_to_depth(rel, near, far):
    """Relative depth in [0, 1] (near = 0) -> depth, linear: 0 -> near, 1 -> far. Clipped to [0, 1]."""
    near, far = _check_near_far(near, far)
    r = np.clip(np.asarray(rel, dtype=np.float64), 0.0, 1.0)
    return (near + r * (far - near)).astype(np.float32)


def depth_to_disparity(depth, near=None, far=None):
    """Depth -> (disparity in [0, 1] with near = 1, near, far); the inverse of disparity_to_depth.

    near/far default to the min/max of the finite, positive depth values. Non-finite or non-positive
    depth gives NaN disparity; depth outside [near, far] is clipped to the ends.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0.0)
    if near is None or far is None:
        if not valid.any():
            raise ValueError("depth has no finite positive value to take near/far from")
        if near is None:
            near = float(depth[valid].min())
        if far is None:
            far = float(depth[valid].max())
    near, far = _check_near_far(near, far)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse_depth = np.where(valid, 1.0 / np.where(valid, depth, 1.0), np.nan)
    disparity = (inverse_depth - 1.0 / far) / (1.0 / near - 1.0 / far)
    disparity = np.clip(disparity, 0.0, 1.0)  # NaN passes through np.clip unchanged
    return disparity.astype(np.float32), near, far


def _xyz(n):
    n = np.asarray(n, dtype=np.float32)
    if n.shape[-1] != 3:
        raise ValueError(f"expected vectors in the last axis (size 3), got shape {n.shape}")
    return n


def lotus_to_blender_camera(n):
    """Lotus camera-space normals (+X left, +Y up, +Z to camera) -> Blender camera space (+X right)."""
    out = _xyz(n).copy()
    out[..., 0] *= -1.0
    return out


def normalize_vectors(n, eps=1e-8):
    """Unit-length vectors along the last axis; zero-length or non-finite vectors become (0, 0, 1)."""
    n = _xyz(n).astype(np.float32)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    bad = ~np.isfinite(length) | (length < eps)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = n / np.where(bad, 1.0, length)
    fallback = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    return np.where(bad, fallback, unit).astype(np.float32)


def block_mean(array, factor):
    """Area-average downsampling: the mean of each ``factor`` x ``factor`` block of an (H, W, ...)
    array; the rows and columns past the last whole block are left out. Factor 1: the array itself."""
    if factor == 1:
        return array
    rows, cols = array.shape[0] // factor, array.shape[1] // factor
    trimmed = array[:rows * factor, :cols * factor]
    return trimmed.reshape(rows, factor, cols, factor, *array.shape[2:]).mean(axis=(1, 3))


def _check_convention(convention):
    name = str(convention).upper()
    if name not in NORMAL_MAP_CONVENTIONS:
        raise ValueError(f"normal map convention must be one of {NORMAL_MAP_CONVENTIONS}, got {convention!r}")
    return name


def normals_to_normal_map(n_blender_cam, convention="OPENGL"):
    """Blender camera-space normals -> tangent-space normal map rgb in [0, 1] (rgb = n*0.5 + 0.5).

    OPENGL (Blender, Unity): green = +Y up. DIRECTX (Unreal, Substance default): green flipped.
    A flat surface facing the camera gives exactly (0.5, 0.5, 1.0).
    """
    name = _check_convention(convention)
    n = normalize_vectors(n_blender_cam)
    if name == "DIRECTX":
        n[..., 1] *= -1.0
    return np.clip(n * 0.5 + 0.5, 0.0, 1.0).astype(np.float32)


def normal_map_to_normals(rgb, convention="OPENGL"):
    """Tangent-space normal map rgb in [0, 1] -> unit normals (+X right, +Y up, +Z out); the inverse."""
    name = _check_convention(convention)
    n = _xyz(rgb).astype(np.float32) * 2.0 - 1.0
    if name == "DIRECTX":
        n[..., 1] *= -1.0
    return normalize_vectors(n)


def to_uint16(rgb01):
    """Values in [0, 1] -> uint16 (0..65535), rounded to nearest and clipped; NaN -> 0."""
    values = np.nan_to_num(np.asarray(rgb01, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.round(np.clip(values, 0.0, 1.0) * 65535.0).astype(np.uint16)


# Polynomial fits of matplotlib's inferno and viridis (Matt Zucker, CC0) and Google's Turbo
# (Anton Mikhailov, Ruofei Du, Apache-2.0): rows are powers of t, columns are r, g, b.
_COLORMAP_COEFFICIENTS = {
    "INFERNO": (
        (0.0002189403691192265, 0.001651004631001012, -0.01948089843709184),
        (0.1065134194856116, 0.5639564367884091, 3.932712388889277),
        (11.60249308247187, -3.972853965665698, -15.9423941062914),
        (-41.70399613139459, 17.43639888205313, 44.35414519872813),
        (77.162935699427, -33.40235894210092, -81.80730925738993),
        (-71.31942824499214, 32.62606426397723, 73.20951985803202),
        (25.13112622477341, -12.24266895238567, -23.07032500287172),
    ),
    "VIRIDIS": (
        (0.2777273272234177, 0.005407344544966578, 0.3340998053353061),
        (0.1050930431085774, 1.404613529898575, 1.384590162594685),
        (-0.3308618287255563, 0.214847559468213, 0.09509516302823659),
        (-4.634230498983486, -5.799100973351585, -19.33244095627987),
        (6.228269936347081, 14.17993336680509, 56.69055260068105),
        (4.776384997670288, -13.74514537774601, -65.35303263337234),
        (-5.435455855934631, 4.645852612178535, 26.3124352495832),
    ),
    "TURBO": (
        (0.13572138, 0.09140261, 0.10667330),
        (4.61539260, 2.19418839, 12.64194608),
        (-42.66032258, 4.84296658, -60.58204836),
        (132.13108234, -14.18503333, 110.36276771),
        (-152.94239396, 4.27729857, -89.90310912),
        (59.28637943, 2.82956604, 27.34824973),
    ),
}


def colorize_depth(values01, near_is_high=True, colormap="INFERNO"):
    """Colour-map a normalised depth map for preview: HxW in [0, 1] -> HxWx3 float32 in [0, 1].

    near_is_high=True means the input follows the disparity convention (1 = near); pass False for relative
    depth (0 = near). Near is always drawn at the bright/warm end of the colour map (INFERNO: pale yellow,
    far black-purple; VIRIDIS: yellow vs. purple; TURBO: red vs. blue). NaN is drawn as far.
    """
    name = str(colormap).upper()
    if name not in _COLORMAP_COEFFICIENTS:
        raise ValueError(f"colormap must be one of {DEPTH_COLORMAPS}, got {colormap!r}")
    t = np.asarray(values01, dtype=np.float32)
    if not near_is_high:
        t = 1.0 - t
    t = np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0)[..., None]
    coefficients = np.asarray(_COLORMAP_COEFFICIENTS[name], dtype=np.float32)
    # Horner's scheme, highest power first, in place (float32 is ample for 8/16-bit previews)
    rgb = np.empty(t.shape[:-1] + (3,), dtype=np.float32)
    rgb[...] = coefficients[-1]
    for row in coefficients[-2::-1]:
        rgb *= t
        rgb += row
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """A boolean mask grown by ``steps`` pixels along rows and columns (4-neighbour dilation)."""
    for _ in range(steps):
        grown = mask.copy()
        grown[1:, :] |= mask[:-1, :]
        grown[:-1, :] |= mask[1:, :]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask
