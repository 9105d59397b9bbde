"""``python -m lotus_blender.worker --log LOGFILE``: the Lotus worker process."""

import sys

from .server import main

sys.exit(main())
