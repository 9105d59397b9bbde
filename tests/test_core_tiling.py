"""Tiling (core/tiling.py): tile plans, blend weights, weighted blending, seamless (wrap) mode."""

import numpy as np
import pytest

from lotus_blender.core.tiling import (
    Tile, TileBlender, blend_weights, crop_pad, extract_tile, fold_wrap, pad_wrap, plan_tiles,
    plan_tiles_wrapped,
)


def _coverage_count(tiles, height, width, wrap=False):
    count = np.zeros((height, width), dtype=int)
    for tile in tiles:
        rows = np.arange(tile.y0, tile.y1) % height if wrap else np.arange(tile.y0, tile.y1)
        cols = np.arange(tile.x0, tile.x1) % width if wrap else np.arange(tile.x0, tile.x1)
        np.add.at(count, np.ix_(rows, cols), 1)
    return count


def _smooth_image(height, width, channels=3):
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [np.sin(x / 17.0 + c) * np.cos(y / 23.0 - c) + 0.01 * (x + 2 * y) for c in range(channels)]
    return np.stack(planes, axis=-1)


def _periodic_image(height, width):
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.sin(2 * np.pi * x / width) + np.cos(2 * np.pi * (x / width + y / height))


# --- plans -----------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width, tile, overlap", [
    (100, 130, 48, 16), (64, 64, 64, 8), (30, 200, 64, 16), (97, 31, 32, 31), (1, 1, 8, 0),
])
def test_plan_tiles_cover_exactly_within_bounds(height, width, tile, overlap):
    tiles = plan_tiles(height, width, tile, overlap)
    assert all(isinstance(t, Tile) for t in tiles)
    assert _coverage_count(tiles, height, width).min() >= 1
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= height and 0 <= t.x0 < t.x1 <= width
        assert t.height == min(tile, height) and t.width == min(tile, width)
    assert max(t.y1 for t in tiles) == height and max(t.x1 for t in tiles) == width, "last tiles on the edge"


def test_plan_tiles_overlap_and_stride():
    tiles = plan_tiles(100, 100, 40, 10)
    starts = sorted({t.x0 for t in tiles})
    assert starts == [0, 30, 60]
    assert len(tiles) == 9


@pytest.mark.parametrize("tile, overlap", [(0, 0), (32, 32), (32, 40), (32, -1)])
def test_plan_tiles_validates(tile, overlap):
    with pytest.raises(ValueError):
        plan_tiles(64, 64, tile, overlap)


# --- weights -----------------------------------------------------------------------------------

def test_blend_weights_ramps_positive_and_partition_of_unity():
    weights = blend_weights(40, 56, 12)
    assert weights.shape == (40, 56) and weights.dtype == np.float32
    assert weights.min() > 0.0 and weights.max() == pytest.approx(1.0)
    assert np.all(weights[12:-12, 12:-12] == 1.0)
    row = weights[20]
    assert np.all(np.diff(row[:12]) > 0) and np.allclose(row[:12], row[::-1][:12])
    # Two tiles overlapping by exactly `overlap` pixels: their ramps add up to 1
    np.testing.assert_allclose(row[-12:] + row[:12], 1.0, atol=1e-6)
    np.testing.assert_array_equal(blend_weights(8, 8, 0), np.ones((8, 8), dtype=np.float32))
    assert blend_weights(6, 5, 16).min() > 0.0, "tiles smaller than two ramps stay positive"


# --- blending ------------------------------------------------------------------------------------

def test_constant_tiles_blend_to_the_constant():
    blender = TileBlender(70, 90, 2)
    for tile in plan_tiles(70, 90, 32, 8):
        values = np.full((tile.height, tile.width, 2), [3.0, -1.5])
        blender.add(tile, values, blend_weights(tile.height, tile.width, 8))
    result = blender.result()
    assert result.shape == (70, 90, 2) and result.dtype == np.float32
    np.testing.assert_allclose(result[..., 0], 3.0, rtol=1e-6)
    np.testing.assert_allclose(result[..., 1], -1.5, rtol=1e-6)


def test_tiles_cut_from_an_image_reconstruct_it():
    image = _smooth_image(75, 101)
    blender = TileBlender(75, 101, 3)
    for tile in plan_tiles(75, 101, 32, 10):
        blender.add(tile, image[tile.slices], blend_weights(tile.height, tile.width, 10))
    np.testing.assert_allclose(blender.result(), image, atol=1e-5)


def test_single_channel_values_and_default_weights():
    image = _smooth_image(20, 30, channels=1)[..., 0]
    blender = TileBlender(20, 30, 1)
    for tile in plan_tiles(20, 30, 16, 4):
        blender.add(tile, image[tile.slices])
    result = blender.result()
    assert result.shape == (20, 30)
    np.testing.assert_allclose(result, image, atol=1e-5)


def test_blender_rejects_bad_input_and_uncovered_pixels():
    blender = TileBlender(10, 10, 3)
    with pytest.raises(ValueError):
        blender.add(Tile(0, 4, 0, 4), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError):
        blender.add(Tile(8, 12, 0, 4), np.zeros((4, 4, 3)))
    blender.add(Tile(0, 4, 0, 4), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        blender.result()


def _border_and_inside_steps(result, tiles, axis_size):
    """Largest neighbour step across tile borders (columns) and inside the tiles' unshared middles."""
    column_steps = np.abs(np.diff(result, axis=1))
    steps = column_steps.reshape(column_steps.shape[0], column_steps.shape[1], -1).max(axis=(0, 2))
    border_columns = sorted({t.x0 - 1 for t in tiles if t.x0 > 0}
                            | {t.x1 - 1 for t in tiles if t.x1 < axis_size})
    shared = np.zeros(axis_size, dtype=int)
    for t in {(t.x0, t.x1) for t in tiles}:
        shared[t[0]:t[1]] += 1
    inside_columns = [c for c in range(axis_size - 1) if shared[c] == 1 and shared[c + 1] == 1]
    return steps[border_columns].max(), steps[inside_columns].max()


def test_no_visible_seam_with_per_tile_offsets():
    # A model whose output drifts by a different offset in each tile (the usual cause of tile seams)
    height, width, overlap = 48, 160, 16
    image = _smooth_image(height, width, channels=1)
    tiles = plan_tiles(height, width, 48, overlap)
    offsets = np.random.default_rng(4).uniform(-0.02, 0.02, size=len(tiles))
    blender = TileBlender(height, width, 1)
    pasted = np.zeros_like(image)
    for tile, offset in zip(tiles, offsets):
        prediction = image[tile.slices] + offset
        blender.add(tile, prediction, blend_weights(tile.height, tile.width, overlap))
        pasted[tile.slices] = prediction
    border, inside = _border_and_inside_steps(blender.result(), tiles, width)
    assert border <= inside
    hard_border, hard_inside = _border_and_inside_steps(pasted, tiles, width)
    assert hard_border > hard_inside, "without blending the same offsets do make a seam"


# --- seamless (wrap) -------------------------------------------------------------------------------

def test_pad_wrap_and_crop_pad():
    image = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
    padded = pad_wrap(image, 3)
    assert padded.shape == (10, 11, 2)
    np.testing.assert_array_equal(padded[3:7, 3:8], image)
    np.testing.assert_array_equal(padded[3:7, 0], image[:, 2])   # left margin comes from the right side
    np.testing.assert_array_equal(padded[0, 3:8], image[1])      # top margin comes from the bottom
    np.testing.assert_array_equal(crop_pad(padded, 3), image)
    np.testing.assert_array_equal(crop_pad(pad_wrap(image[..., 0], 2), 2), image[..., 0])
    with pytest.raises(ValueError):
        crop_pad(image, 2)


@pytest.mark.parametrize("height, width, tile, overlap",
                         [(64, 96, 40, 12), (50, 30, 64, 8), (33, 70, 32, 16)])
def test_wrapped_plan_covers_the_torus_with_overlapping_neighbours(height, width, tile, overlap):
    tiles = plan_tiles_wrapped(height, width, tile, overlap)
    assert _coverage_count(tiles, height, width, wrap=True).min() >= 1
    for axis_starts, size, length in (({t.x0 for t in tiles}, width, tiles[0].width),
                                      ({t.y0 for t in tiles}, height, tiles[0].height)):
        starts = sorted(axis_starts)
        assert 0 <= starts[0] and starts[-1] < size and length <= tile
        gaps = np.diff(starts + [starts[0] + size])  # including the gap across the wrap
        assert np.all(length - gaps >= overlap), "every border, the wrap included, overlaps enough"
    with pytest.raises(ValueError):
        plan_tiles_wrapped(64, 64, 32, 0)


def _offset_model(patch, offset):
    # A "prediction" that depends on the patch's context (its mean) and drifts per tile
    return patch + offset + 0.05 * (patch.mean() - patch)


def test_seamless_tiled_prediction_matches_across_opposite_edges():
    height, width, overlap = 48, 72, 12
    image = _periodic_image(height, width)[..., None]
    tiles = plan_tiles_wrapped(height, width, 32, overlap)
    # Offsets large enough that plain tiling (plan_tiles, no wrap) leaves a step of ~0.3-0.5 at the wrap
    offsets = np.random.default_rng(5).uniform(-0.3, 0.3, size=len(tiles))
    blender = TileBlender(height, width, 1, wrap=True)
    for tile, offset in zip(tiles, offsets):
        patch = extract_tile(image, tile, wrap=True)
        assert patch.shape == (tile.height, tile.width, 1)
        blender.add(tile, _offset_model(patch, offset), blend_weights(tile.height, tile.width, overlap))
    result = blender.result()[..., 0]
    neighbour_step = max(np.abs(np.diff(result, axis=1)).max(), np.abs(np.diff(result, axis=0)).max())
    assert np.abs(result[:, 0] - result[:, -1]).max() <= neighbour_step
    assert np.abs(result[0, :] - result[-1, :]).max() <= neighbour_step
    assert np.corrcoef(result.ravel(), image.ravel())[0, 1] > 0.95


def test_single_wrapped_tile_larger_than_the_image():
    # The whole image fits in one tile: its head and tail overlap across the wrap and blend there
    image = _periodic_image(20, 24)
    tiles = plan_tiles_wrapped(20, 24, 64, 6)
    assert tiles == [Tile(0, 26, 0, 30)]
    blender = TileBlender(20, 24, 1, wrap=True)
    tile = tiles[0]
    blender.add(tile, extract_tile(image, tile, wrap=True), blend_weights(tile.height, tile.width, 6))
    np.testing.assert_allclose(blender.result(), image, atol=1e-5)


def test_fold_wrap_is_continuous_where_crop_pad_is_not():
    height, width, pad = 40, 56, 8
    image = _periodic_image(height, width)
    padded = pad_wrap(image, pad)
    # A whole-image prediction whose output drifts from left to right (e.g. a global shading bias)
    prediction = padded + np.linspace(0.0, 1.0, padded.shape[1])[None, :]
    folded = fold_wrap(prediction, pad)
    assert folded.shape == image.shape
    neighbour_step = np.abs(np.diff(folded, axis=1)).max()
    assert np.abs(folded[:, 0] - folded[:, -1]).max() <= neighbour_step
    cropped = crop_pad(prediction, pad)
    assert np.abs(cropped[:, 0] - cropped[:, -1]).max() > np.abs(np.diff(cropped, axis=1)).max()
    np.testing.assert_allclose(fold_wrap(pad_wrap(image, pad), pad), image, atol=1e-5)
