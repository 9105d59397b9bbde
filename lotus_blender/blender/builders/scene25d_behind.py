"""The layer behind the tears of a 2.5D scene (Fill Behind): core.fill on the depth map, as packed
images for a still, or as image sequences written beside the depth's files for a sequence
(scene25d_sequence.BehindSequenceFill, stepped through by the Build operator's modal run).
The geometry-nodes group (geonodes.py) places and shows the layer; scene25d.py builds the scene."""

from __future__ import annotations

import bpy
import numpy as np

from ...core import fill, maps
from . import common, scene25d_sequence
from .materials import output_folder as materials_output_folder


def _packed_image(name, rgba, *, like=None, non_color=True):
    """A new packed image of (H, W, 4) top-row-first values: float and Non-Color, or with the
    buffer type and colour space of `like` (values copied as they are stored, no conversion)."""
    height, width = rgba.shape[:2]
    is_float = True if like is None else bool(like.is_float)
    image = bpy.data.images.new(name, width, height, alpha=True, float_buffer=is_float)
    image.colorspace_settings.name = 'Non-Color' if like is None else like.colorspace_settings.name
    image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1], np.float32).ravel())
    image.update()
    image.pack()        # generated pixels are lost on reload unless packed
    return image


def behind_arrays(values, colours, kind, near, depth_range, lens, sensor, tear_threshold, move_range):
    """core.fill on one depth map's values (H, W) and the photo's RGBA (or None): (behind RGBA:
    red the background's depth values continued under the near side, in the map's own kind,
    green the pixels from the tear (fill.UNREACHED outside the band), blue the band; the photo
    with the band filled, or None; the largest opening 1 - z_near / z_far)."""
    return _behind_layer_arrays(values, colours, kind, near, depth_range, lens, sensor, tear_threshold,
                                move_range)[:3]


def _behind_layer_arrays(values, colours, kind, near, depth_range, lens, sensor, tear_threshold, move_range,
                         snap=False):
    """behind_arrays and the share of the near edges' pixels whose step was too soft to fill
    behind (fill.BehindLayer.soft), and the map's values with the soft steps placed at the photo's
    edges (with snap and colours: fill.snap_soft_steps, what the mesh must show for its tears to
    meet the layer), or None when no pixel moved."""
    far = near + max(depth_range, 1e-6)
    values = np.asarray(values, np.float64)
    metric = (maps.disparity_to_depth(values, near, far) if kind == "disparity"
              else maps.relative_depth_to_depth(values, near, far)).astype(np.float64)
    height, width = metric.shape
    focal_px = lens / sensor * max(width, height)
    layer = fill.fill_behind(metric, colours, threshold=tear_threshold, focal_px=focal_px, move_range=move_range,
                             snap=snap)
    metric = layer.depth
    rgba = np.ones((height, width, 4), np.float32)
    rgba[..., 0] = np.clip(fill.depth_to_map_values(layer.behind, kind, near, far), 0.0, 1.0)
    rgba[..., 1] = layer.distance
    rgba[..., 2] = layer.region
    colour = None if layer.colour is None else layer.colour.astype(np.float32)
    opening = float(np.max(1.0 - metric[layer.region] / layer.behind[layer.region])) if layer.region.any() else 0.0
    soft = int(layer.soft.sum())
    share = soft / max(soft + int((layer.distance == 1).sum()), 1)
    snapped = None
    if snap and layer.snapped is not None and layer.snapped.any():
        snapped = np.where(layer.snapped, fill.depth_to_map_values(layer.depth, kind, near, far), values)
    return rgba, colour, opening, share, snapped


def soft_edges_note(share):
    """The build's report on the edges left unfilled (never a confident fill on a guessed edge)."""
    if share < 0.005:
        return None
    return (f"Fill Behind left {share:.0%} of the depth edges unfilled: too soft to tell where the near side "
            "ends (they stretch as with Tear off)")


def _has_pixels(photo):
    return photo is not None and photo.size[0] > 1 and photo.size[1] > 1


def build_behind_layer(name, depth_image, photo, kind, near, depth_range, lens, sensor, tear_threshold,
                       move_range, with_colour):
    """The layer behind the tears (core.fill) of a still as packed images: "<name>_behind" (see
    behind_arrays) and, with_colour, "<name>_fill" (the photo with the band filled). Returns
    (behind, fill image or None, opening); the behind image's "lotus_soft_edges" is the share of the
    near edges too soft to fill behind (soft_edges_note), and with colour the image's
    "lotus_snapped_depth" names the depth map with the soft steps placed at the photo's edges
    ("<name>_depth_snapped", same kind: the mesh's Depth for its tears to meet the layer; none
    when no pixel moved)."""
    values = common.read_pixels(depth_image)[..., 0]
    colours = common.read_pixels(photo) if with_colour and _has_pixels(photo) else None
    rgba, colour, opening, soft, snapped = _behind_layer_arrays(
        values, colours, kind, near, depth_range, lens, sensor, tear_threshold, move_range, snap=True)
    behind = _packed_image(name + "_behind", rgba)
    behind["lotus_soft_edges"] = round(soft, 4)
    behind["lotus_kind"] = "behind"
    behind["lotus_behind_of"] = depth_image.name
    if snapped is not None:
        grey = np.ones(snapped.shape + (4,), np.float32)
        grey[..., :3] = snapped[..., None]
        snapped_image = _packed_image(name + "_depth_snapped", grey)
        snapped_image["lotus_kind"] = kind
        snapped_image["lotus_snapped_from"] = depth_image.name
        behind["lotus_snapped_depth"] = snapped_image.name
    fill_image = None
    if colour is not None:
        fill_image = _packed_image(name + "_fill", colour, like=photo)
        fill_image["lotus_kind"] = "fill"
        fill_image["lotus_source"] = photo.name
    return behind, fill_image, opening


DEFER_FILL = "DEFER"     # build_photo_scene(behind_fill=DEFER_FILL): see FillFramesFirst


class FillFramesFirst(Exception):
    """build_photo_scene(..., behind_fill=DEFER_FILL) on a sequence: its layer behind the tears is
    due, per frame. The build was undone (nothing built, nothing written); .fill is the
    BehindSequenceFill to step through (the Build operator's modal run), then build again with
    behind_fill=that fill and the same arguments (if they no longer give the same fill, as when
    the scene camera's focal changed meanwhile, the build fills the frames again itself: the
    fill's .used says which)."""

    def __init__(self, fill):
        super().__init__(f"{fill.total} frames to fill behind the tears first")
        self.fill = fill


def build_behind_sequence(context, name, depth_image, photo, kind, near, depth_range, lens, sensor,
                          tear_threshold, move_range, with_colour, behind_fill=None):
    """The layer behind the tears of every frame of an image sequence's depth, written as image
    sequences beside the depth's files (scene25d_sequence.BehindSequenceFill): taken from
    behind_fill when that is a finished fill made for the same arguments whose files are all
    there (the Build operator's modal run, its redo), deferred with behind_fill DEFER_FILL (raises
    FillFramesFirst), else computed here."""
    colour_source = photo if with_colour and photo is not None and photo is not depth_image else None
    folder = materials_output_folder(context, (depth_image,))
    parameters = (name, depth_image.name, colour_source.name if colour_source is not None else None, kind,
                  near, depth_range, lens, sensor, tear_threshold, move_range, folder)
    if isinstance(behind_fill, scene25d_sequence.BehindSequenceFill) and behind_fill.parameters == parameters \
            and behind_fill.intact():
        return behind_fill.images()

    def compute(values, colours):
        # With colour, each frame's soft steps are placed at its photo's edges (the mesh's Depth
        # becomes that sequence: see build_behind_layer).
        *arrays, snapped = _behind_layer_arrays(values, colours, kind, near, depth_range, lens, sensor,
                                                tear_threshold, move_range, snap=colours is not None)
        if colours is None:
            return (*arrays, None)
        return (*arrays, (values if snapped is None else snapped, snapped is not None))

    fill_frames = scene25d_sequence.BehindSequenceFill(name, depth_image, colour_source, compute, folder, parameters,
                                                       depth_kind=kind)
    if behind_fill == DEFER_FILL:
        raise FillFramesFirst(fill_frames)
    return fill_frames.run(context)
