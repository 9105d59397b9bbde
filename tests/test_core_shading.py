"""core/shading: sRGB transfer curves and the albedo estimate used by relighting."""

import numpy as np

from lotus_blender.core import maps
from lotus_blender.core import shading as shading_core


def test_srgb_curves_round_trip_and_known_values():
    values = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    encoded = shading_core.linear_to_srgb(values.copy())
    assert np.allclose(shading_core.srgb_to_linear(encoded), values, atol=1e-5)
    # 18% grey encodes to about 0.46; the linear toe is 12.92x; the ends are fixed.
    assert abs(float(shading_core.linear_to_srgb(np.array([0.18], np.float32))[0]) - 0.4613) < 1e-3
    assert np.isclose(shading_core.linear_to_srgb(np.array([0.001], np.float32))[0], 0.01292)
    assert np.allclose(shading_core.linear_to_srgb(np.array([-1.0, 2.0], np.float32)), [0.0, 1.0], atol=1e-6)


def test_delight_recovers_albedo_up_to_scale():
    rng = np.random.default_rng(5)
    height, width = 48, 64
    rows, cols = np.mgrid[0:height, 0:width]
    x = (cols - width / 2) / 20.0
    y = (height / 2 - rows) / 20.0
    normals = maps.normalize_vectors(np.stack([x, y, np.ones_like(x)], axis=-1))
    albedo = rng.uniform(0.2, 0.8, (height, width, 3))  # independent of the normals
    shading = 0.4 + normals @ np.array([0.5, 0.3, 0.6])
    photo = albedo * shading[..., None]
    estimated, estimated_shading = shading_core.estimate_albedo(photo, normals, floor=0.05)
    relative = estimated / albedo
    relative_error = np.abs(relative / np.median(relative) - 1.0)
    assert np.percentile(relative_error, 95) < 0.03 and relative_error.max() < 0.1
    # Dividing the photo by nothing (keeping it) would be far off: the shading spans 8x here.
    kept = photo / albedo
    assert np.percentile(np.abs(kept / np.median(kept) - 1.0), 95) > 0.3
    assert np.corrcoef(estimated_shading.ravel(), shading.ravel())[0, 1] > 0.99


def test_delight_leaves_the_photo_when_the_normals_do_not_explain_its_shading():
    """Normals unrelated to the photo's shading (what badly wrong predictions are): the shading
    they imply is not divided out, so their errors do not end up in the albedo (issue 14)."""
    rng = np.random.default_rng(7)
    height, width = 48, 64
    rows, cols = np.mgrid[0:height, 0:width]
    x = (cols - width / 2) / 20.0
    y = (height / 2 - rows) / 20.0
    normals = maps.normalize_vectors(np.stack([x, y, np.ones_like(x)], axis=-1))
    photo = rng.uniform(0.2, 0.8, (height, width, 3)) * (0.4 + normals @ np.array([0.5, 0.3, 0.6]))[..., None]
    wrong = maps.normalize_vectors(np.stack([np.sin(9 * x + 1), np.sin(7 * y + 2), np.ones_like(x)], axis=-1))
    estimated, estimated_shading = shading_core.estimate_albedo(photo, wrong)
    assert np.allclose(estimated_shading, 1.0) and np.allclose(estimated, np.clip(photo, 0, 1), atol=1e-6)
    # With the right normals the shading is divided out in full.
    lum = photo @ shading_core.LUMINANCE
    coefficients = shading_core.fit_shading(lum, normals)
    fitted = coefficients[0] + normals @ coefficients[1:]
    assert shading_core.shading_strength(lum, fitted / fitted.mean()) == 1.0
