"""Colour transfer curves and shading: numpy only.

Relighting needs the photo's albedo, but a photo has its lighting baked in. ``estimate_albedo``
divides out a first-order spherical-harmonics shading fitted to the photo's luminance from the
predicted normals: crude (cast shadows stay) but it removes the broad light direction.
"""

from __future__ import annotations

import numpy as np

LUMINANCE = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec.709, linear


def srgb_to_linear(values) -> np.ndarray:
    """The inverse sRGB transfer curve (encoded values in [0, 1] -> linear)."""
    values = np.asarray(values, dtype=np.float32)
    return np.where(values <= 0.04045, values / 12.92,
                    ((values + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve, in place on a float32 array, on values clamped to [0, 1].

    In place because the Blender side runs it on full-size photos (no second full-size copy)."""
    np.clip(values, 0.0, 1.0, out=values)
    low = values <= 0.0031308
    encoded = 1.055 * np.power(values, 1.0 / 2.4, dtype=np.float32) - 0.055
    np.multiply(values, 12.92, out=values, where=low)
    np.copyto(values, encoded, where=~low)
    return values


def fit_shading(luminance, normals, max_samples=200_000):
    """Least-squares first-order spherical-harmonics shading s(n) = c0 + c . n of a luminance map.

    With albedo varying independently of the normals, the fit recovers the lighting up to the mean
    albedo. Returns the 4 coefficients (c0, cx, cy, cz).
    """
    flat_lum = np.asarray(luminance, dtype=np.float64).reshape(-1)
    flat_n = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    stride = max(1, flat_lum.size // max_samples)
    design = np.column_stack([np.ones(flat_lum[::stride].size), flat_n[::stride]])
    coefficients, *_ = np.linalg.lstsq(design, flat_lum[::stride], rcond=None)
    return coefficients


def estimate_albedo(rgb_linear, normals, floor=0.2):
    """Photo / estimated shading, scaled so that the mean shading is 1 (the albedo keeps the
    photo's overall brightness). floor: the shading never drops below this fraction of its mean,
    so dark shadows are not blown up into bright albedo. Returns (albedo in [0, 1], shading)."""
    rgb = np.asarray(rgb_linear, dtype=np.float32)
    coefficients = fit_shading(rgb @ LUMINANCE, normals)
    shading = coefficients[0] + np.asarray(normals, dtype=np.float64) @ coefficients[1:]
    mean = float(np.mean(shading))
    if not mean > 0.0:
        return np.clip(rgb, 0.0, 1.0), np.ones(rgb.shape[:2], dtype=np.float32)
    shading = np.maximum(shading / mean, floor).astype(np.float32)
    return np.clip(rgb / shading[..., None], 0.0, 1.0), shading
