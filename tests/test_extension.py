"""The package installs, registers and unregisters like a real Blender extension."""

import sys

import pytest


def test_installed_as_extension(blender_addon):
    import bpy
    assert blender_addon == "bl_ext.lotus_test.lotus_blender"
    assert blender_addon in bpy.context.preferences.addons
    prefs = bpy.context.preferences.addons[blender_addon].preferences
    assert prefs.bl_rna.identifier == "LotusPreferences"
    assert prefs.processing_resolution == 768


def test_sidebar_panels(blender_addon):
    import bpy
    for name, space in (("LOTUS_PT_view3d", 'VIEW_3D'), ("LOTUS_PT_image_editor", 'IMAGE_EDITOR')):
        panel = getattr(bpy.types, name)
        assert panel.bl_space_type == space
        assert panel.bl_region_type == 'UI'
        assert panel.bl_category == "Lotus"
