"""What an earlier Build 2.5D Scene or Relight Setup made for a photo, found to be reused rather
than built a second time in the same place (a second mesh, camera, gap fill or light rig)."""

import bpy

from .. import naming
from . import scene25d


def _camera_of(obj, scene):
    """The camera object whose lens drives the 2.5D mesh (scene25d's focal-length driver)."""
    drivers = obj.animation_data.drivers if obj.animation_data is not None else ()
    for fcurve in drivers:
        for variable in fcurve.driver.variables:
            data = variable.targets[0].id
            if isinstance(data, bpy.types.Camera):
                for candidate in scene.objects:
                    if candidate.type == 'CAMERA' and candidate.data == data:
                        return candidate
    return None


def _tagged_camera(scene, photo):
    """A camera scene25d made for the photo (it tags them), the scene camera first."""
    cameras = [obj for obj in scene.objects
               if obj.type == 'CAMERA' and obj.get("lotus_source") == photo.name]
    return scene.camera if scene.camera in cameras else (cameras[0] if cameras else None)


def photo_scene(context, photo):
    """(mesh, camera) of the photo's 2.5D scene (geometry nodes) in this scene, the scene camera's
    first, or (None, None)."""
    scene = context.scene
    found = []
    for obj in scene.objects:
        modifier = obj.modifiers.get(scene25d.MODIFIER_NAME) if obj.type == 'MESH' else None
        if obj.get("lotus_source") != photo.name or obj.get("lotus_gap_fill") \
                or modifier is None or modifier.type != 'NODES':
            continue
        camera = _camera_of(obj, scene) or _tagged_camera(scene, photo)
        if camera is not None:
            found.append((camera != scene.camera, obj.name, obj, camera))
    if not found:
        return None, None
    _, _, obj, camera = min(found, key=lambda item: item[:2])
    return obj, camera


def gap_fill(obj):
    """The untorn copy relight.build_gap_fill parented to the mesh."""
    return next((child for child in obj.children if child.get("lotus_gap_fill")), None)


def light_rig(scene, photo):
    """(rig empty, {role: light}) of relight.build_light_rig for the photo, or (None, {}). A rig
    saved by an earlier version records the photo's stem rather than its name: found as well."""
    names = (photo.name, naming.stem(photo.name))
    for obj in scene.objects:
        if obj.type == 'EMPTY' and obj.get("lotus_source") in names and obj.get("lotus_light_rig"):
            lights = {child["lotus_light_role"]: child for child in obj.children
                      if "lotus_light_role" in child}
            return obj, lights
    return None, {}
