"""Numpy-only maths: map conversions, camera geometry, tiling, height from normals.

Nothing here imports bpy or torch, so it is tested on its own and shared by both sides.
"""
