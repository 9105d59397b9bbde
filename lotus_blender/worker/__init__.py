"""The Lotus engine: torch + diffusers, run in a background subprocess. Never imports bpy."""
