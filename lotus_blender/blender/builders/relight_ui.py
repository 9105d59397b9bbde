"""Operator, settings and sidebar sub-panel of the relighting setup (relight.py)."""

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .. import compat
from ..panels import draw_wrapped
from . import common, relight, relight_preview
from .ui_common import (BuilderOptionsPanel, BuilderPanel, LastUsedOptions, option_names,
                        options_draw, photo_first_draw, scene_settings_registrar)
from .transaction import report_failure


class RelightOptions:
    """The setup's options: on the operator (redo panel, presets) and the scene (last used)."""
    geometry_mode: EnumProperty(name="Geometry", items=relight.GEOMETRY_ITEMS, default='MESH')
    albedo: EnumProperty(name="Albedo", items=relight.ALBEDO_ITEMS, default='PHOTO')
    light_rig: BoolProperty(name="Light Rig", default=True, description="Key, fill and rim lights")
    shadow_catcher: BoolProperty(name="Shadow Catcher Ground", default=False,
                                 description="A ground plane that only shows shadows "
                                             "(transparent film, Cycles)")
    ambient: FloatProperty(name="Ambient", default=0.05, min=0.0, soft_max=1.0,
                           description="Brightness of the uniform world light")
    roughness: FloatProperty(name="Roughness", default=0.8, min=0.0, max=1.0)


class LotusRelightSettings(RelightOptions, bpy.types.PropertyGroup):
    photo: PointerProperty(type=bpy.types.Image, name="Photo", poll=common.is_photo,
                           description="The photo to relight (its Lotus depth and normals are used)")
    preview_size: IntProperty(name="Preview Size", default=320, min=32, soft_max=1024,
                              description="Longest edge of the preview render in pixels")
    preview_quality: EnumProperty(name="Preview Quality", items=relight_preview.QUALITY_ITEMS,
                                  default='FAST')


class LOTUS_OT_relight_setup(LastUsedOptions, RelightOptions, bpy.types.Operator):
    """Build a relightable scene from the photo: 2.5D mesh (or image plane) with the predicted
    normals, key/fill/rim lights, camera and Cycles settings"""
    bl_idname = "lotus.relight_setup"
    bl_label = "Relight Setup"
    bl_options = {'REGISTER', 'UNDO', 'PRESET'}
    OPTIONS = RelightOptions
    SETTINGS = "lotus_relight"
    SHOWN = option_names(RelightOptions)

    photo: StringProperty(name="Photo", description="Name of the photo image", options={'SKIP_PRESET'})

    def execute(self, context):
        photo = self.chosen_photo()
        if photo is None:
            return {'CANCELLED'}
        depth = common.find_result(photo, common.DEPTH_KINDS)
        normal = common.find_result(photo, "normal")
        try:
            made = relight.build_relight_scene(
                context, photo, depth, normal, geometry_mode=self.geometry_mode, albedo=self.albedo,
                light_rig=self.light_rig, shadow_catcher=self.shadow_catcher, ambient=self.ambient,
                roughness=self.roughness)
        except Exception as error:  # noqa: BLE001 - one line for the artist, nothing half-built
            return report_failure(self, "Relight Setup", error)
        self.remember_options(context)
        for other in context.selected_objects:
            other.select_set(False)
        selected = made["rig"] or made["object"]
        selected.select_set(True)
        context.view_layer.objects.active = selected
        missing = "" if normal is not None else " (no Lotus normals: shading follows the mesh)"
        if made["albedo"].get("lotus_shading_removed") is False:
            missing += " (Remove Shading: the normals explain too little of the photo's shading, colours kept)"
        reused = " (its 2.5D scene, reused)" if made["reused"] else ""
        self.report({'INFO'}, f"Relight setup for {photo.name}: {made['object'].name}{reused}, "
                              f"{len(made['lights'])} lights{missing}")
        return {'FINISHED'}


def _draw_relight_button(layout, context, settings, photo):
    if photo is not None:
        if settings.geometry_mode == 'MESH' and common.find_result(photo, common.DEPTH_KINDS) is None:
            draw_wrapped(layout, context, "Predict depth first (or use an image plane)", icon='INFO')
        if common.find_result(photo, "normal") is None:
            draw_wrapped(layout, context, "Predict normals for per-pixel shading", icon='INFO')
    row = layout.row()
    row.enabled = photo is not None
    # The photo; invoke fills the options from the panel's (last used).
    op = row.operator(LOTUS_OT_relight_setup.bl_idname, icon='LIGHT_AREA')
    op.photo = photo.name if photo is not None else ""
    if not compat.cycles_can_denoise(context.scene):
        # Distro builds without OpenImageDenoise (Debian's): say it before the noise shows.
        draw_wrapped(layout, context, "This Blender has no denoiser: renders are not denoised",
                     icon='INFO')
    relight_preview.draw_preview(layout, context, settings)


class LOTUS_PT_relight(BuilderPanel, bpy.types.Panel):
    bl_idname = "LOTUS_PT_relight"
    bl_label = "Relight"
    draw = photo_first_draw("lotus_relight", _draw_relight_button)


class LOTUS_PT_relight_options(BuilderOptionsPanel, bpy.types.Panel):
    bl_idname = "LOTUS_PT_relight_options"
    bl_parent_id = "LOTUS_PT_relight"
    draw = options_draw("lotus_relight", ("geometry_mode", "albedo", "shadow_catcher"))


_CLASSES = (LotusRelightSettings, LOTUS_OT_relight_setup, LOTUS_PT_relight, LOTUS_PT_relight_options)


register, unregister = scene_settings_registrar(_CLASSES, "lotus_relight", LotusRelightSettings)
