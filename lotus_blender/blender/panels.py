"""The "Lotus" sidebar tab in the 3D View and the Image Editor."""

import bpy


class _LotusPanel:
    bl_region_type = 'UI'
    bl_category = "Lotus"
    bl_label = "Lotus"

    def draw(self, context):
        layout = self.layout
        layout.label(text="Depth and normals from one image")


class LOTUS_PT_view3d(_LotusPanel, bpy.types.Panel):
    bl_space_type = 'VIEW_3D'
    bl_idname = "LOTUS_PT_view3d"


class LOTUS_PT_image_editor(_LotusPanel, bpy.types.Panel):
    bl_space_type = 'IMAGE_EDITOR'
    bl_idname = "LOTUS_PT_image_editor"


_CLASSES = (LOTUS_PT_view3d, LOTUS_PT_image_editor)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
