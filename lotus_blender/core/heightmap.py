"""Height map from a tangent-space normal map: Frankot-Chellappa integration with numpy's FFT.

A height field z(x, y) seen from above has normals proportional to (-dz/dx, -dz/dy, 1) with +X right and
+Y up. Image rows go DOWN, so the gradient along rows is dz/drow = -dz/dy = +ny/nz.

Frankot-Chellappa finds the integrable surface whose gradient is closest (least squares) to the given
field, in the Fourier domain: Z = -j(u P + v Q) / (u^2 + v^2). The FFT assumes a periodic image:
- seamless=True keeps that assumption (right for tiling textures, the result tiles too);
- seamless=False integrates the even (mirror) extension to 2H x 2W and crops it back, which removes the
  wrap-around artefacts on ordinary photos (it is the cosine-transform solution with Neumann borders).
"""

import numpy as np


def _gradients_from_normals(n_tangent, min_nz):
    n = np.asarray(n_tangent, dtype=np.float32)
    if n.ndim != 3 or n.shape[-1] != 3:
        raise ValueError(f"expected HxWx3 tangent-space normals, got shape {n.shape}")
    n = np.nan_to_num(n, nan=0.0, posinf=0.0, neginf=0.0)
    # Normals at grazing angles (or facing away) would give unbounded slopes
    nz = np.maximum(n[..., 2], np.float32(min_nz))
    dz_dx = -n[..., 0] / nz
    dz_drow = n[..., 1] / nz
    return dz_dx, dz_drow


# The even (mirror) extension of the height field to 2H x 2W, expressed on its slopes:
# mirroring z left-right negates its x slope, mirroring top-bottom negates its row slope.

def _mirrored_x_slope(dz_dx):
    flipped = dz_dx[:, ::-1]
    return np.block([[dz_dx, -flipped], [dz_dx[::-1], -flipped[::-1]]])


def _mirrored_row_slope(dz_drow):
    flipped = dz_drow[::-1]
    return np.block([[dz_drow, dz_drow[:, ::-1]], [-flipped, -flipped[:, ::-1]]])


def _integrate_periodic(shape, make_dz_dx, make_dz_drow):
    """Frankot-Chellappa on a periodic grid. The slopes are built lazily, one at a time, so that a
    2H x 2W mirror extension never holds both slope fields and both spectra at once."""
    rows, cols = shape
    # Real FFTs: half the spectrum, half the memory of complex ones
    u = 2.0 * np.pi * np.fft.rfftfreq(cols)[None, :]
    v = 2.0 * np.pi * np.fft.fftfreq(rows)[:, None]
    spectrum = np.fft.rfft2(make_dz_dx())
    spectrum *= u
    row_part = np.fft.rfft2(make_dz_drow())
    row_part *= v
    spectrum += row_part
    del row_part
    denominator = u * u + v * v
    denominator[0, 0] = 1.0  # the mean height is free; its coefficient is set to 0 below
    spectrum /= denominator
    spectrum *= -1j
    spectrum[0, 0] = 0.0
    return np.fft.irfft2(spectrum, s=(rows, cols))


def integrate_normals(n_tangent, seamless=False, min_nz=0.05):
    """Raw height (float64, in pixel units, zero mean) whose gradient best matches the normals' slopes."""
    dz_dx, dz_drow = _gradients_from_normals(n_tangent, min_nz)
    rows, cols = dz_dx.shape
    if seamless:
        return _integrate_periodic((rows, cols), lambda: dz_dx, lambda: dz_drow)
    height = _integrate_periodic((2 * rows, 2 * cols),
                                 lambda: _mirrored_x_slope(dz_dx), lambda: _mirrored_row_slope(dz_drow))
    height = height[:rows, :cols]
    return height - height.mean()


def height_from_normals(n_tangent, seamless=False, strength=1.0, min_nz=0.05, normalize=True):
    """Tangent-space normals HxWx3 (+X right, +Y up, +Z out) -> height map HxW float32.

    normalize=True (default): the height is centred on 0.5 (the Displacement node's default midlevel) and
    scaled so that at strength 1 it spans exactly [0, 1]; strength < 1 flattens it around 0.5, strength > 1
    exaggerates it (clipped to [0, 1]). A flat (constant) normal map gives all 0.5.
    normalize=False: the raw integrated height in pixel units times strength, zero mean.
    min_nz clamps the normal's z component so that grazing normals do not give unbounded slopes.
    """
    if not min_nz > 0.0:
        raise ValueError(f"min_nz must be > 0, got {min_nz}")
    height = integrate_normals(n_tangent, seamless=seamless, min_nz=min_nz)
    if not normalize:
        return (height * float(strength)).astype(np.float32)
    low = float(height.min())
    high = float(height.max())
    # Below this span the field is numerically flat (FFT round-off only)
    if high - low <= 1e-9 * max(1.0, abs(high), abs(low)):
        return np.full(height.shape, 0.5, dtype=np.float32)
    centred = (height - 0.5 * (low + high)) / (high - low)
    return np.clip(0.5 + float(strength) * centred, 0.0, 1.0).astype(np.float32)
