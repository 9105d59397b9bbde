"""Operator, settings and sidebar sub-panel of the normal-mapped material builder (materials.py)."""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, PointerProperty, StringProperty

from .. import files, preferences
from ..panels import draw_wrapped
from . import common, materials
from .ui_common import (BuilderOptionsPanel, BuilderPanel, LastUsedOptions, option_names,
                        options_draw, photo_first_draw, scene_settings_registrar)
from .transaction import report_failure


class MaterialOptions:
    """The material's options: on the operator (redo panel, presets) and the scene (last used)."""
    normal_strength: FloatProperty(name="Normal Strength", default=1.0, min=0.0, soft_max=5.0)
    bump_strength: FloatProperty(name="Bump Strength", default=1.0, min=0.0, max=1.0)
    relief_scale: FloatProperty(name="Relief Scale", default=1.0, min=0.0, soft_max=10.0,
                                description="Height of the bump/displacement: 1 = the relief the "
                                            "normals imply, 2 = twice as deep")
    use_displacement: BoolProperty(
        name="True Displacement", default=False,
        description="Wire the height map to the material's displacement (Cycles, adds a "
                    "Subdivision modifier) instead of Bump")
    seamless: BoolProperty(name="Seamless Height", default=False,
                           description="Integrate the height map as a tileable texture")
    save_maps: BoolProperty(name="Save Maps", default=True,
                            description="Save the normal and height maps as 16-bit PNG next to the "
                                        "other outputs")


class LotusMaterialSettings(MaterialOptions, bpy.types.PropertyGroup):
    photo: PointerProperty(type=bpy.types.Image, name="Photo", poll=common.is_photo,
                           description="The photo whose Lotus normal map the material uses")


class LOTUS_OT_normal_material(LastUsedOptions, MaterialOptions, bpy.types.Operator):
    """Principled BSDF material from the photo and its Lotus normals: normal map, height map (bump or
    displacement). On the active mesh, or on a new plane sized like the photo"""
    bl_idname = "lotus.normal_material"
    bl_label = "Normal-Mapped Material"
    bl_options = {'REGISTER', 'UNDO', 'PRESET'}
    OPTIONS = MaterialOptions
    SETTINGS = "lotus_materials"
    SHOWN = ("target", "convention") + option_names(MaterialOptions)

    photo: StringProperty(name="Photo", description="Name of the photo image", options={'SKIP_PRESET'})
    target: EnumProperty(
        name="Target", default='NEW_PLANE',
        items=[('ACTIVE', "Active Object", "The active mesh (it needs a UV map)"),
               ('NEW_PLANE', "New Plane", "A new plane sized like the photo")])
    convention: EnumProperty(name="Convention", items=materials.CONVENTION_ITEMS, default='OPENGL')

    def invoke(self, context, event):
        if not self.properties.is_property_set("convention"):  # the preference, as predictions use
            self.convention = preferences.get_preferences(context).normal_convention
        return super().invoke(context, event)

    def execute(self, context):
        photo = self.chosen_photo()
        if photo is None:
            return {'CANCELLED'}
        normal_image = common.find_result(photo, "normal")
        if normal_image is None:
            self.report({'ERROR'}, f"No Lotus normals for {photo.name}: predict normals first")
            return {'CANCELLED'}
        target = None
        if self.target == 'ACTIVE':
            target = context.active_object
            if target is None or target.type != 'MESH':
                self.report({'ERROR'}, "The active object must be a mesh")
                return {'CANCELLED'}
        failures = []
        try:
            obj, material, normal_map, height_image = materials.apply_normal_material(
                context, photo, normal_image, target=target, convention=self.convention,
                normal_strength=self.normal_strength, bump_strength=self.bump_strength,
                relief_scale=self.relief_scale, use_displacement=self.use_displacement,
                seamless=self.seamless, save=self.save_maps, failures=failures)
        except Exception as error:  # noqa: BLE001 - one line for the artist, nothing half-built
            return report_failure(self, "Normal-Mapped Material", error)
        self.remember_options(context)
        if target is None:
            for other in context.selected_objects:
                other.select_set(False)
            obj.select_set(True)
            context.view_layer.objects.active = obj
        if failures:
            self.report({'WARNING'}, files.describe_failures(
                failures, f"{material.name} on {obj.name} uses the maps packed into the .blend"))
        elif self.save_maps:
            where = os.path.dirname(bpy.path.abspath(normal_map.filepath_raw))
            self.report({'INFO'}, f"{material.name} on {obj.name}; {normal_map.name} and "
                                  f"{height_image.name} saved in {where}")
        else:
            self.report({'INFO'}, f"{material.name} on {obj.name}")
        return {'FINISHED'}


def _draw_material_buttons(layout, context, _settings, photo):
    if photo is not None and common.find_result(photo, "normal") is None:
        draw_wrapped(layout, context, "Predict normals for this photo first", icon='INFO')
    row = layout.row(align=True)
    row.enabled = photo is not None
    for target, text, icon in (('NEW_PLANE', "New Plane", 'MESH_PLANE'),
                               ('ACTIVE', "Active Object", 'MATERIAL')):
        # The photo and the target; invoke fills the options from the panel's (last used).
        op = row.operator(LOTUS_OT_normal_material.bl_idname, text=text, icon=icon)
        op.target = target
        op.photo = photo.name if photo is not None else ""


class LOTUS_PT_materials(BuilderPanel, bpy.types.Panel):
    bl_idname = "LOTUS_PT_materials"
    bl_label = "Normal-Mapped Material"
    draw = photo_first_draw("lotus_materials", _draw_material_buttons)


class LOTUS_PT_materials_options(BuilderOptionsPanel, bpy.types.Panel):
    bl_idname = "LOTUS_PT_materials_options"
    bl_parent_id = "LOTUS_PT_materials"
    draw = options_draw("lotus_materials", ("seamless", "use_displacement"))


_CLASSES = (LotusMaterialSettings, LOTUS_OT_normal_material, LOTUS_PT_materials,
            LOTUS_PT_materials_options)


register, unregister = scene_settings_registrar(_CLASSES, "lotus_materials", LotusMaterialSettings)
