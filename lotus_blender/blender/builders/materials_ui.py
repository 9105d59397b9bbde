"""Operator, settings and sidebar sub-panel of the normal-mapped material builder (materials.py)."""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, PointerProperty, StringProperty

from .. import files, naming, preferences
from ..panels import LotusSubPanel, draw_wrapped
from . import common, materials
from .last_used import LastUsedOptions, scene_settings_registrar
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

    photo: StringProperty(name="Photo", description="Name of the photo image", options={'SKIP_PRESET'})
    target: EnumProperty(
        name="Target", default='NEW_PLANE',
        items=[('ACTIVE', "Active Object", "The active mesh (it needs a UV map)"),
               ('NEW_PLANE', "New Plane", "A new plane sized like the photo")])
    convention: EnumProperty(name="Convention", items=materials.CONVENTION_ITEMS, default='OPENGL')

    def invoke(self, context, event):
        if not self.properties.is_property_set("convention"):
            self.convention = preferences.get_preferences(context).normal_convention
        if not self.photo and self._settings(context).photo is not None:
            self.photo = self._settings(context).photo.name
        self.fill_from_last_used(context)
        return self.execute(context)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop_search(self, "photo", bpy.data, "images")
        for name in ("target", "convention", "normal_strength", "bump_strength", "relief_scale",
                     "use_displacement", "seamless", "save_maps"):
            layout.prop(self, name)

    def execute(self, context):
        photo = bpy.data.images.get(self.photo)
        if photo is None:
            self.report({'ERROR'}, "Choose a photo first")
            return {'CANCELLED'}
        photo = naming.source_photo(photo)
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


class LOTUS_PT_materials(LotusSubPanel, bpy.types.Panel):
    bl_idname = "LOTUS_PT_materials"
    bl_label = "Normal-Mapped Material"
    bl_options = set()  # open: short, its settings are in the collapsed Options

    def draw(self, context):
        layout = self.layout
        settings = context.scene.lotus_materials
        layout.prop(settings, "photo")
        photo = settings.photo
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


class LOTUS_PT_materials_options(LotusSubPanel, bpy.types.Panel):
    bl_idname = "LOTUS_PT_materials_options"
    bl_label = "Options"
    bl_parent_id = "LOTUS_PT_materials"

    def draw(self, context):
        settings = context.scene.lotus_materials
        self.layout.prop(settings, "seamless")
        self.layout.prop(settings, "use_displacement")


_CLASSES = (LotusMaterialSettings, LOTUS_OT_normal_material, LOTUS_PT_materials,
            LOTUS_PT_materials_options)


register, unregister = scene_settings_registrar(_CLASSES, "lotus_materials", LotusMaterialSettings)
