#!/bin/sh
# Runs tests/gui/gui_check.py in a real Blender window under Xvfb (1920x1080, default UI scale),
# inside the chroot made by tests/gui/setup_chroot.sh. Screenshots and report.json go to OUT.
#   sudo tests/gui/run_gui_check.sh [CHROOT] [OUT]     (defaults /work/gui-chroot, /tmp/lotus-gui)
# Exit status 0 when every step passed; look at the screenshots too (report.json lists them).
# WORKER_PYTHON: a Python 3.11 with torch + diffusers for the worker (default: the repo's .venv);
# it must live under /work or /root/.pyenv (mounted into the chroot; see mount_chroot.sh).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CHROOT=${1:-/work/gui-chroot}
OUT=${2:-/tmp/lotus-gui}
WORKER_PYTHON=${WORKER_PYTHON:-$REPO/.venv/bin/python}
CHECKPOINTS=${CHECKPOINTS:-/tmp/lotus-gui-checkpoints}
DISPLAY_NUMBER=${DISPLAY_NUMBER:-97}
# GUI_ARGS: more gui_check.py options, e.g. "--readme $REPO/docs/screenshots".
GUI_ARGS=${GUI_ARGS:-}

"$HERE/mount_chroot.sh" "$CHROOT"
# Tiny random-weight checkpoints, built once by the worker Python (it has torch).
if [ ! -f "$CHECKPOINTS/tiny-normal/lotus.json" ]; then
    (cd "$REPO" && "$WORKER_PYTHON" -c "
import sys, shutil
from pathlib import Path
from tests.tiny_lotus import make_tiny_checkpoint
root = Path(sys.argv[1]); root.mkdir(parents=True, exist_ok=True)
for kind, name in (('disparity', 'tiny-depth'), ('normal', 'tiny-normal')):
    folder = make_tiny_checkpoint(root / 'build', variant='G', kind=kind)
    shutil.rmtree(root / name, ignore_errors=True)
    shutil.move(str(folder), str(root / name))
" "$CHECKPOINTS")
fi
rm -rf "$OUT"
mkdir -p "$OUT"
# A saved .blend (outputs go next to it, and Blender skips its splash screen for a file).
# Saved preferences too: without them Blender shows its first-run Quick Setup over the window.
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp/lotus-gui-home \
    BLENDER_USER_RESOURCES="$OUT/user" blender -b --factory-startup --python-expr "
import bpy
bpy.context.preferences.view.show_splash = False
bpy.ops.wm.save_userpref()
bpy.ops.wm.save_as_mainfile(filepath='$OUT/scene.blend')" >/dev/null
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp/lotus-gui-home \
    BLENDER_USER_RESOURCES="$OUT/user" /bin/sh -c "
    Xvfb :$DISPLAY_NUMBER -screen 0 1920x1080x24 -nolisten tcp >'$OUT/xvfb.log' 2>&1 &
    XVFB=\$!
    sleep 2
    DISPLAY=:$DISPLAY_NUMBER timeout ${GUI_TIMEOUT_S:-900} blender '$OUT/scene.blend' --python '$REPO/tests/gui/gui_check.py' \
        -- --out '$OUT' --checkpoints '$CHECKPOINTS' --worker-python '$WORKER_PYTHON' $GUI_ARGS \
        >'$OUT/blender.log' 2>&1
    STATUS=\$?
    kill \$XVFB
    exit \$STATUS" && STATUS=0 || STATUS=$?
grep '^\[gui-check' "$OUT/blender.log" || tail -30 "$OUT/blender.log"
echo "GUI check exit status $STATUS; screenshots in $OUT"
exit $STATUS
