"""Every input kind -> a float32 ``.npy`` of sRGB-encoded display values for the worker.

One module a kind: images.py (a Blender image with pixels, a file, what the artist points at),
renders.py (what Blender renders or saves first: the Render Result, the Viewer node, a multilayer
EXR's pass), frames.py (image sequences and movies, a frame at a time). The names below are the
package's interface; the rest of the add-on uses ``inputs.<name>``.

Colour decision (README "Conventions"): the model was trained on ordinary sRGB photos, so it is
given sRGB-encoded display values in [0, 1]:
  - 8-bit images in sRGB (or a data colour space) are passed as stored;
  - float images (EXR, HDR, 16-bit PNG/TIFF, which Blender holds in scene-linear) and 8-bit
    images tagged with a linear colour space go through the plain sRGB OETF, clamped to [0, 1]
    (not the scene's view transform: a photo should not depend on the scene's look);
  - the Render Result, the compositor Viewer node, multilayer passes and movie frames are saved by
    Blender itself first, with the scene's view transform for renders (what the artist sees).
Alpha is dropped (the model sees colour only). Grayscale images come out as R = G = B.

Large images are reduced to twice the processing resolution on the Blender side (images.py).
"""

from .frames import (MovieFrames, check_movie, frame_range, frame_ranges_text, missing_frames_note,
                     prepare_frames, sequence_frames)
from .images import (InputError, PreparedInput, exif_focal_35mm, file_notes, image_display_array,
                     images_from_context, load_image_file, prepare_file, prepare_image,
                     refuse_incomplete_exr, refuse_unreadable)
from .renders import (RENDER_LIKE_TYPES, camera_focal_35mm, exr_header, multilayer_passes,
                      prepare_multilayer_pass, prepare_render_like, render_scene)

__all__ = [
    "InputError", "PreparedInput", "RENDER_LIKE_TYPES",
    # one image
    "prepare_image", "prepare_file", "load_image_file", "image_display_array", "images_from_context",
    "file_notes", "exif_focal_35mm", "refuse_incomplete_exr", "refuse_unreadable",
    # renders and passes
    "prepare_render_like", "prepare_multilayer_pass", "multilayer_passes", "exr_header",
    "camera_focal_35mm", "render_scene",
    # sequences and movies
    "prepare_frames", "frame_range", "sequence_frames", "frame_ranges_text", "missing_frames_note",
    "check_movie", "MovieFrames",
]
