"""Camera Move: animate a dolly or an orbit of the 2.5D scene's camera within its Move Range.

Fill Behind fills what a camera move of Move Range (a fraction of the subject distance) can reveal
behind every tear; this helper keys a move that stays inside it: a dolly toward the subject, or an
orbit about it (around the camera's up axis, the lateral travel s * angle = Move Range * s). The
keys are ordinary location/rotation keyframes on the camera, the artist's to edit; one undo step.
"""

import math

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty
from mathutils import Matrix, Vector

from .. import compat
from . import existing, geonodes, relight, scene25d

MOVE_ITEMS = [
    ('DOLLY', "Dolly In", "Move toward the subject along the view axis"),
    ('ORBIT_LEFT', "Orbit Left", "Turn about the subject, the camera travelling to the left"),
    ('ORBIT_RIGHT', "Orbit Right", "Turn about the subject, the camera travelling to the right"),
]


def live_mesh(context):
    """(2.5D object, its Lotus modifier) for the active object or the scene camera's photo."""
    obj = context.active_object
    modifier = obj.modifiers.get(scene25d.MODIFIER_NAME) if obj is not None else None
    if modifier is not None and modifier.type == 'NODES' and modifier.node_group is not None:
        return obj, modifier
    camera = context.scene.camera
    photo = bpy.data.images.get(camera.get("lotus_source", "")) if camera is not None else None
    if photo is not None:
        obj, _camera = existing.photo_scene(context, photo)
        if obj is not None:
            return obj, obj.modifiers.get(scene25d.MODIFIER_NAME)
    return None, None


def move_range(modifier):
    try:
        key = geonodes.input_identifier(modifier.node_group, "Move Range")
    except KeyError:            # a mesh built before Fill Behind existed
        return scene25d.DEFAULT_MOVE_RANGE
    return float(compat.get_modifier_input(modifier, key))


def moved_matrix(matrix, kind, fraction, distance):
    """The camera's world matrix after the move: a dolly of fraction * distance along its view
    axis, or an orbit of `fraction` radians about the point `distance` ahead (around its up axis;
    ORBIT_LEFT travels to the camera's left)."""
    forward = -(matrix.to_3x3() @ Vector((0.0, 0.0, 1.0)))
    if kind == 'DOLLY':
        return Matrix.Translation(forward * fraction * distance) @ matrix
    up = matrix.to_3x3() @ Vector((0.0, 1.0, 0.0))
    pivot = matrix.translation + forward * distance
    angle = fraction if kind == 'ORBIT_RIGHT' else -fraction
    turn = Matrix.Translation(pivot) @ Matrix.Rotation(angle, 4, up) @ Matrix.Translation(-pivot)
    return turn @ matrix


class LOTUS_OT_camera_move(bpy.types.Operator):
    """Animate the camera within the 2.5D scene's Move Range: keyframes on the camera, yours to edit"""
    bl_idname = "lotus.camera_move"
    bl_label = "Camera Move"
    bl_options = {'REGISTER', 'UNDO'}

    move: EnumProperty(name="Move", items=MOVE_ITEMS, default='DOLLY')
    amount: FloatProperty(name="Amount", default=1.0, min=0.0, max=1.0, subtype='FACTOR',
                          description="Share of the Move Range the move uses (1: all of it)")
    frames: IntProperty(name="Frames", default=72, min=1, soft_max=1000,
                        description="Length of the move from the current frame")

    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.camera is not None and live_mesh(context)[0] is not None

    def execute(self, context):
        scene, camera = context.scene, context.scene.camera
        obj, modifier = live_mesh(context)
        if obj is None:
            self.report({'ERROR'}, "Build a 2.5D scene first")
            return {'CANCELLED'}
        context.view_layer.update()
        distance = relight.subject_distance(context, obj, camera)
        fraction = move_range(modifier) * self.amount
        start = scene.frame_current
        end = start + self.frames
        rotation = {'QUATERNION': "rotation_quaternion", 'AXIS_ANGLE': "rotation_axis_angle"}.get(
            camera.rotation_mode, "rotation_euler")       # key the rotation the camera uses
        begin = camera.matrix_world.copy()
        for frame, matrix in ((start, begin), (end, moved_matrix(begin, self.move, fraction, distance))):
            camera.matrix_world = matrix
            camera.keyframe_insert("location", frame=frame)
            camera.keyframe_insert(rotation, frame=frame)
        camera.matrix_world = begin
        scene.frame_end = max(scene.frame_end, end)
        angle = f"{math.degrees(fraction):.1f} deg"
        words = {'DOLLY': f"dolly in {fraction * distance:.2f} m", 'ORBIT_LEFT': f"orbit left {angle}",
                 'ORBIT_RIGHT': f"orbit right {angle}"}[self.move]
        self.report({'INFO'}, f"{camera.name}: {words} (subject at {distance:.2f} m), frames {start}-{end}")
        return {'FINISHED'}


def register():
    bpy.utils.register_class(LOTUS_OT_camera_move)


def unregister():
    bpy.utils.unregister_class(LOTUS_OT_camera_move)
