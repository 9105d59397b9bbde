#!/bin/sh
# Makes a Debian chroot with a GUI Blender (Debian's `blender`), Xvfb, xdotool and ImageMagick,
# for tests/gui/run_gui_check.sh. SUITE picks the Debian release: trixie (default) has Blender 4.3
# on the system Python 3.13, unstable has Blender 5.2 on Python 3.14.
# Needs root, debootstrap and network access to the Debian archive; about 2 GB on disk.
#   sudo [SUITE=unstable] tests/gui/setup_chroot.sh [CHROOT_DIR]      (default /work/gui-chroot)
set -eu
CHROOT=${1:-/work/gui-chroot}
SUITE=${SUITE:-trixie}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -x "$CHROOT/usr/bin/apt-get" ]; then
    debootstrap --variant=minbase "$SUITE" "$CHROOT" "$MIRROR"
fi
# The chroot needs /proc and /dev while its packages install (blender's postinst scripts).
"$(dirname "$0")/mount_chroot.sh" "$CHROOT"
chroot "$CHROOT" /bin/sh -c '
    export DEBIAN_FRONTEND=noninteractive
    apt-get update &&
    apt-get install -y --no-install-recommends blender xvfb xauth xdotool imagemagick \
        python3-numpy x11-utils fonts-dejavu-core ca-certificates'
chroot "$CHROOT" blender --version | head -1
