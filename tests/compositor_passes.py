"""Render passes written to EXR files by Blender's compositor: how the tests get their ground truth.

The compositor's Render Layers and File Output nodes changed between Blender 4.2 and 5.3. The
add-on itself never writes passes this way, so these differences live here, beside the tests that
need them, rather than in the add-on's compat.py (whose new_compositor and set_file_format they
use).
"""

from __future__ import annotations

import glob
import os

from tests import blender_env

# Render Layers node outputs: full pass names ("Diffuse Color") from Blender 5.0; short ones before.
_SHORT_PASS_NAMES = {"Diffuse Color": "DiffCol", "Diffuse Direct": "DiffDir",
                     "Diffuse Indirect": "DiffInd", "Glossy Color": "GlossCol",
                     "Object Index": "IndexOB", "Material Index": "IndexMA", "Emission": "Emit",
                     "Ambient Occlusion": "AO"}


def render_pass_output(node, name: str):
    """A Render Layers node's output for a pass, by its 5.0+ name."""
    socket = node.outputs.get(name)
    return socket if socket is not None else node.outputs[_SHORT_PASS_NAMES.get(name, name)]


def new_file_output(tree, folder: str, prefix: str, inputs: dict, color_depth: str = '32'):
    """A compositor File Output node writing one EXR per input into folder, named from prefix.

    inputs: {name: 'FLOAT' | 'RGBA' | 'VECTOR'}. Returns the node; its input sockets carry the
    names. Blender 5.0 renamed the settings (``directory``, ``file_name``, ``file_output_items``);
    before, ``base_path`` and ``file_slots`` whose paths name the files. Files are found with
    output_file_path (before 5.0 the frame number is appended to each name)."""
    node = tree.nodes.new("CompositorNodeOutputFile")
    blender_env.compat().set_file_format(node.format, 'OPEN_EXR')
    node.format.color_depth = color_depth
    if hasattr(node, "file_output_items"):
        node.directory = folder
        node.file_name = prefix
        for name, kind in inputs.items():
            node.file_output_items.new(kind, name)
    else:
        node.base_path = folder
        node.file_slots.clear()
        for name in inputs:
            node.file_slots.new(name)
            node.file_slots[-1].path = prefix + name
    return node


def output_file_path(folder: str, prefix: str, name: str) -> str:
    """The EXR a new_file_output node wrote for input name (with or without a frame number)."""
    exact = os.path.join(folder, f"{prefix}{name}.exr")
    if os.path.exists(exact):
        return exact
    numbered = sorted(glob.glob(os.path.join(glob.escape(folder), f"{glob.escape(prefix + name)}[0-9]*.exr")))
    if not numbered:
        raise FileNotFoundError(exact)
    return numbered[0]


def render_passes(scene, folder: str, sockets: dict, exr_codec: str | None = None):
    """Render scene with Cycles' passes wired to a File Output node that writes them into folder.

    sockets: {pass name (5.0+ spelling): 'FLOAT' | 'RGBA' | 'VECTOR'}. Returns ({pass name: EXR
    path}, the compositor node group made for it or None before 5.0); the caller removes that
    group when done with the scene (it is removed here if the render fails)."""
    import bpy
    tree, owned, _output = blender_env.compat().new_compositor(scene, scene.name + "_passes")
    try:
        layers = tree.nodes.new("CompositorNodeRLayers")
        layers.scene = scene
        writer = new_file_output(tree, folder, "pass_", sockets)
        if exr_codec:
            writer.format.exr_codec = exr_codec
        for socket in sockets:
            tree.links.new(render_pass_output(layers, socket), writer.inputs[socket])
        bpy.ops.render.render(scene=scene.name, write_still=False)
        return {socket: output_file_path(folder, "pass_", socket) for socket in sockets}, owned
    except BaseException:
        if owned is not None:
            bpy.data.node_groups.remove(owned)
        raise
