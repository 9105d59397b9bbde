#!/bin/sh
# Makes a Debian trixie chroot with a GUI Blender (Debian's `blender`, 4.3 on the system
# Python 3.13), Xvfb, xdotool and ImageMagick, for tests/gui/run_gui_check.sh.
# Needs root, debootstrap and network access to the Debian archive; about 2 GB on disk.
#   sudo tests/gui/setup_chroot.sh [CHROOT_DIR]      (default /work/gui-chroot)
set -eu
CHROOT=${1:-/work/gui-chroot}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -x "$CHROOT/usr/bin/apt-get" ]; then
    debootstrap --variant=minbase trixie "$CHROOT" "$MIRROR"
fi
# The chroot needs /proc and /dev while its packages install (blender's postinst scripts).
"$(dirname "$0")/mount_chroot.sh" "$CHROOT"
chroot "$CHROOT" /bin/sh -c '
    export DEBIAN_FRONTEND=noninteractive
    apt-get update &&
    apt-get install -y --no-install-recommends blender xvfb xauth xdotool imagemagick \
        python3-numpy x11-utils fonts-dejavu-core ca-certificates'
chroot "$CHROOT" blender --version | head -1
