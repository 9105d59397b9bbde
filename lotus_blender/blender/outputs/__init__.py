"""Worker results -> Blender images and files on disk.

results.py makes a job's Blender images and their files (and the command line's map files);
folders.py decides where files go and never overwrites one, and moves results out of the
temporary folder when the .blend is saved. The names below are the package's interface; the rest
of the add-on uses ``outputs.<name>``.
"""

from ..files import OutputError
from .folders import (move_temporary_results, pack_results, resolve_output_folder,
                      results_in_temporary_folder, stored_path, temporary_output_folder,
                      unique_path, unique_sequence_stem)
from .results import (OutputSettings, bind_to_file, create_results, keep_in_blend, read_map,
                      write_map_files, write_normal_png)

__all__ = [
    "OutputError", "OutputSettings", "create_results", "keep_in_blend", "bind_to_file",
    "write_normal_png", "write_map_files", "read_map",
    "temporary_output_folder", "resolve_output_folder", "unique_path", "unique_sequence_stem",
    "stored_path", "pack_results", "results_in_temporary_folder", "move_temporary_results",
]
