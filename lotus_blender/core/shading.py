"""Colour transfer curves and shading: numpy only.

Relighting needs the photo's albedo, but a photo has its lighting baked in. ``estimate_albedo``
divides out a first-order spherical-harmonics shading fitted to the photo's luminance from the
predicted normals: crude (cast shadows stay) but it removes the broad light direction. It divides
out only as much of that shading as makes the photo flatter (``shading_strength``): with normals
too wrong to explain the photo's shading it leaves the photo as it is, rather than painting the
normals' errors into the albedo.
"""

from __future__ import annotations

import numpy as np

from .maps import block_mean

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


STRENGTH_BLOCK = 4            # pixels averaged before judging flatness: texture averages out, shading stays
STRENGTH_GAIN = (0.01, 0.03)  # flatness gained (fraction of the variation): none below, full strength above


def shading_strength(luminance, shading, steps=11):
    """How much of an estimated shading to divide out, 0..1.

    An albedo is flatter than the photo: the exponent k that leaves log(luminance / shading^k)
    with the least total variation (on STRENGTH_BLOCK-pixel block means) is the share of the
    shading the photo bears out. When even the best k flattens the photo by less than
    STRENGTH_GAIN[0] the normals do not explain its shading (wrong normals, or albedo that merely
    follows the orientation) and nothing is divided out; the strength ramps up to k by
    STRENGTH_GAIN[1].
    """
    luminance = np.asarray(luminance, np.float64)
    # An image under two blocks across is judged on its pixels themselves.
    factor = STRENGTH_BLOCK if min(luminance.shape[:2]) // STRENGTH_BLOCK >= 2 else 1
    log_luminance = block_mean(np.log(np.maximum(luminance, 1e-4)), factor)
    log_shading = block_mean(np.log(np.maximum(np.asarray(shading, np.float64), 1e-3)), factor)

    def variation(k):
        flat = log_luminance - k * log_shading
        return float(np.abs(np.diff(flat, axis=0)).sum() + np.abs(np.diff(flat, axis=1)).sum())

    candidates = np.linspace(0.0, 1.0, steps)
    variations = np.array([variation(k) for k in candidates])
    best = int(np.argmin(variations))
    if not variations[0] > 0.0:
        return 0.0
    gain = 1.0 - variations[best] / variations[0]
    low, high = STRENGTH_GAIN
    return float(candidates[best] * np.clip((gain - low) / (high - low), 0.0, 1.0))


def estimate_albedo(rgb_linear, normals, floor=0.2, strength=None):
    """Photo / estimated shading, scaled so that the mean shading is 1 (the albedo keeps the
    photo's overall brightness), raised to shading_strength (0: the photo as it is; or the given
    strength). floor: the shading never drops below this fraction of its mean, so dark shadows are
    not blown up into bright albedo. Returns (albedo in [0, 1], the shading divided out)."""
    rgb = np.asarray(rgb_linear, dtype=np.float32)
    luminance = rgb @ LUMINANCE
    coefficients = fit_shading(luminance, normals)
    shading = coefficients[0] + np.asarray(normals, dtype=np.float64) @ coefficients[1:]
    mean = float(np.mean(shading))
    if not mean > 0.0:
        return np.clip(rgb, 0.0, 1.0), np.ones(rgb.shape[:2], dtype=np.float32)
    shading = np.maximum(shading / mean, floor)
    if strength is None:
        strength = shading_strength(luminance, shading)
    shading = (shading ** float(strength)).astype(np.float32)
    return np.clip(rgb / shading[..., None], 0.0, 1.0), shading
