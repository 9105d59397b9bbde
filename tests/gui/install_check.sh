#!/bin/sh
# Installs each zip of a build into a distro Blender in the chroot made by setup_chroot.sh (e.g.
# SUITE=unstable: Debian's Blender 5.2 on Python 3.14) with Blender's own Install from Disk, and
# prints what that Blender made of it: enabled or refused (and why), the wheels' modules.
#   sudo tests/gui/install_check.sh CHROOT ZIP...
# The zips must live under a folder mounted into the chroot (/tmp or /work; see mount_chroot.sh).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
CHROOT=$1
shift
"$HERE/mount_chroot.sh" "$CHROOT"
for ZIP in "$@"; do
    ZIP=$(cd "$(dirname "$ZIP")" && pwd)/$(basename "$ZIP")
    USER_DIR=$(mktemp -d /tmp/lotus-install-check-XXXXXX)
    chroot "$CHROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME="$USER_DIR" \
        BLENDER_USER_RESOURCES="$USER_DIR/user" blender -b --factory-startup \
        --python "$HERE/install_check.py" -- "$ZIP" 2>&1 | grep -E '^(INSTALL|Error|ERROR)' || true
    rm -rf "$USER_DIR"
done
