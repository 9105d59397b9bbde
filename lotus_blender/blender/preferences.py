"""Add-on preferences: models, device, precision, worker interpreter, outputs."""

import json
import os

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from .. import protocol
from . import compat

ADDON_ID = __package__.rpartition(".")[0]  # the extension's package, e.g. bl_ext.user_default.lotus_blender


# Compact model bundles shipped inside the extension (build.py --bundle-model) live here.
BUNDLED_MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "models")
BUNDLED_PREFIX = "BUNDLED:"


def bundled_models(task):
    """{folder name: folder} of the bundles in the extension that serve ``task``."""
    found = {}
    if not os.path.isdir(BUNDLED_MODELS_DIR):
        return found
    for name in sorted(os.listdir(BUNDLED_MODELS_DIR)):
        folder = os.path.join(BUNDLED_MODELS_DIR, name)
        try:
            with open(os.path.join(folder, "lotus.json"), encoding="utf-8") as handle:
                kind = json.load(handle).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        if kind in protocol.KINDS and (kind == protocol.KIND_NORMAL) == (task == protocol.TASK_NORMAL):
            found[name] = folder
    return found


# Blender saves an enum preference as the item's number, so every choice keeps the number it was
# first given: append new choices, never reorder (the menu's order is free).
_SAVED_NUMBERS = {
    protocol.TASK_DEPTH: ["jingheya/lotus-depth-g-v2-1-disparity", "jingheya/lotus-depth-d-v2-0-disparity",
                          "jingheya/lotus-depth-g-v1-0", "jingheya/lotus-depth-d-v1-0",
                          "jingheya/lotus-depth-d-v1-1", "LOCAL", "jingheya/lotus-depth-g-v2-0-disparity",
                          "REPO"],
    protocol.TASK_NORMAL: ["jingheya/lotus-normal-g-v1-1", "jingheya/lotus-normal-d-v1-1", "LOCAL",
                           "jingheya/lotus-normal-g-v1-0", "jingheya/lotus-normal-d-v1-0", "REPO"],
}
_BUNDLE_NUMBERS = 1000  # bundles come and go with the build: numbers of their own


def _checkpoint_items(task):
    # Bundles first: they work offline, so they are the default when the extension has one.
    items = [(BUNDLED_PREFIX + name, f"{name} (bundled)", f"Shipped with the extension: {folder}")
             for name, folder in bundled_models(task).items()]
    items += [(repo, repo.split("/", 1)[1], f"Hugging Face checkpoint {repo}")
              for repo, kind in protocol.KNOWN_CHECKPOINTS.items()
              if (kind == protocol.KIND_NORMAL) == (task == protocol.TASK_NORMAL)]
    items.append(("LOCAL", "Local Folder", "A checkpoint folder on disk (diffusers layout)"))
    items.append(("REPO", "Other Hugging Face Repo",
                  "Another Lotus checkpoint on Hugging Face, by its repo id (say what it predicts)"))
    numbers = _SAVED_NUMBERS[task]
    return [(ident, name, desc, 'NONE',
             numbers.index(ident) if ident in numbers else _BUNDLE_NUMBERS + index)
            for index, (ident, name, desc) in enumerate(items)]


def _kind_items(task):
    """What a Local Folder or Other Repo model predicts; Recognise needs its lotus.json or a known
    repo name, else the job asks for the kind (never a guess)."""
    recognise = ('AUTO', "Recognise", "From the model's lotus.json or its known Lotus repo name; "
                                      "a job asks for the kind when neither tells")
    if task == protocol.TASK_NORMAL:
        return [recognise + (0,), ('NORMAL', "Normal", "Predicts camera-space surface normals", 1)]
    # DISPARITY and DEPTH keep the numbers they were saved with before Recognise existed.
    return [('DISPARITY', "Disparity", "Predicts disparity (near = 1), "
                                       "like lotus-depth-*-v2-*-disparity", 0),
            ('DEPTH', "Depth", "Predicts relative depth (near = 0), like lotus-depth-*-v1-*", 1),
            recognise + (2,)]


def _default_model(task):
    bundles = bundled_models(task)
    return BUNDLED_PREFIX + next(iter(bundles)) if bundles else protocol.DEFAULT_CHECKPOINTS[task]


class LotusPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    depth_model: EnumProperty(
        name="Depth Model", items=_checkpoint_items(protocol.TASK_DEPTH),
        default=_default_model(protocol.TASK_DEPTH),
        description="Checkpoint used for depth")
    depth_model_path: StringProperty(
        name="Depth Model Folder", subtype='DIR_PATH',
        description="Local depth checkpoint folder (used when the model is Local Folder)")
    depth_model_repo: StringProperty(
        name="Depth Repo ID", description="Hugging Face repo id (owner/name) of a Lotus depth "
                                          "checkpoint (used when the model is Other Hugging Face Repo)")
    depth_model_kind: EnumProperty(
        name="Depth Model Output", default='AUTO', items=_kind_items(protocol.TASK_DEPTH),
        description="What a Local Folder or Other Repo depth model predicts")
    normal_model: EnumProperty(
        name="Normal Model", items=_checkpoint_items(protocol.TASK_NORMAL),
        default=_default_model(protocol.TASK_NORMAL),
        description="Checkpoint used for surface normals")
    normal_model_path: StringProperty(
        name="Normal Model Folder", subtype='DIR_PATH',
        description="Local normal checkpoint folder (used when the model is Local Folder)")
    normal_model_repo: StringProperty(
        name="Normal Repo ID", description="Hugging Face repo id (owner/name) of a Lotus normal "
                                           "checkpoint (used when the model is Other Hugging Face Repo)")
    normal_model_kind: EnumProperty(
        name="Normal Model Output", default='AUTO', items=_kind_items(protocol.TASK_NORMAL),
        description="Whether a Local Folder or Other Repo model predicts normals")
    device: EnumProperty(
        name="Device", default='AUTO',
        items=[('AUTO', "Auto", "CUDA, then Apple Metal (MPS), then CPU"),
               ('CUDA', "CUDA", "NVIDIA GPU"), ('MPS', "Metal", "Apple GPU"), ('CPU', "CPU", "Processor")])
    precision: EnumProperty(
        name="Precision", default='AUTO',
        items=[('AUTO', "Auto", "Half precision on GPUs, the faster of bf16/fp32 on the CPU"),
               ('FP32', "Full (fp32)", "Slowest, most memory"),
               ('FP16', "Half (fp16)", "GPUs only"),
               ('BF16', "BFloat16", "Half memory on the CPU")])
    processing_resolution: IntProperty(
        name="Processing Resolution", default=768, min=0, soft_max=2048,
        description="Longest image edge the model sees (0 = native size). Outputs keep the input size")
    python_path: StringProperty(
        name="Worker Python", subtype='FILE_PATH',
        description="Python interpreter that runs the worker (empty = Blender's own Python). "
                    "It needs torch, diffusers and transformers")
    idle_release_minutes: FloatProperty(
        name="Release After Idle (min)", default=10.0, min=0.0, soft_max=120.0,
        description="Free the model's memory after this many idle minutes (0 = never)")
    output_dir: StringProperty(
        name="Output Folder", default="//lotus/", subtype='DIR_PATH',
        options=compat.BLEND_RELATIVE_PATH_OPTIONS,  # "//" = next to the .blend
        description="Where maps are saved; relative to the .blend file when it starts with //")
    normal_convention: EnumProperty(
        name="Normal Map Convention", default='OPENGL',
        items=[('OPENGL', "OpenGL (Blender)", "Green channel up (+Y), as Blender expects"),
               ('DIRECTX', "DirectX", "Green channel down (-Y), for DirectX engines")])

    def downloads_models(self) -> bool:
        """Whether a chosen model comes from Hugging Face (not a Local Folder, not bundled)."""
        choices = (self.depth_model, self.normal_model)
        return any(c != 'LOCAL' and not c.startswith(BUNDLED_PREFIX) for c in choices)

    def draw(self, context):
        layout = self.layout
        col = layout.column(heading="Models")
        for task in ("depth", "normal"):
            col.prop(self, f"{task}_model")
            choice = getattr(self, f"{task}_model")
            if choice in {'LOCAL', 'REPO'}:
                col.prop(self, f"{task}_model_path" if choice == 'LOCAL' else f"{task}_model_repo")
                col.prop(self, f"{task}_model_kind")
        if not bpy.app.online_access and self.downloads_models():
            box = col.box()
            box.label(text="Online access is off: models are not downloaded.", icon='INFO')
            box.label(text="Enable it in System > Network, or use a Local Folder model.")
        col = layout.column(heading="Compute")
        col.prop(self, "device")
        col.prop(self, "precision")
        col.prop(self, "processing_resolution")
        col.prop(self, "python_path")
        col.prop(self, "idle_release_minutes")
        col = layout.column(heading="Output")
        col.prop(self, "output_dir")
        col.prop(self, "normal_convention")
        row = layout.row()
        row.operator("lotus.open_log", icon='TEXT')
        row.operator("lotus.open_model_folder", icon='FILE_FOLDER')
        row.operator("lotus.release_model", icon='X')


def get_preferences(context=None):
    context = context or bpy.context
    return context.preferences.addons[ADDON_ID].preferences


def register():
    bpy.utils.register_class(LotusPreferences)


def unregister():
    bpy.utils.unregister_class(LotusPreferences)
