"""Run the command line in a fresh Blender (the bpy module), as a farm node runs
``blender -b -c lotus predict ...``: install the extension, point its preferences at the given
checkpoints (and the tests' worker Python), call cli.main with the remaining arguments and exit
with its status.

    python tests/cli_child.py '{"repo": DIR, "depth": DIR, "normal": DIR, "output": DIR}' predict ...
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    config = json.loads(sys.argv[1])
    import bpy  # noqa: F401  (first: Blender's own modules)

    from tests import blender_env
    from tests.blender_side import configure
    name = blender_env.install_extension(Path(config["repo"]))
    configure(name, {("G", "disparity"): config["depth"], ("G", "normal"): config["normal"]},
              config["output"])
    cli = sys.modules[name + ".blender.cli"]
    blender_env.exit_child(cli.main(sys.argv[2:]))


if __name__ == "__main__":
    main()
