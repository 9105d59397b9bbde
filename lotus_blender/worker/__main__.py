"""``python -m lotus_blender.worker --log LOGFILE``: the Lotus worker process."""

from .server import main

main()
