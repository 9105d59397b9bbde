#!/bin/sh
# Mounts what the GUI check needs into the chroot (idempotent): /proc, /dev, /tmp and the folders
# that hold the repository and the worker Python (arguments; default /work and /root/.pyenv).
# Plain binds, not recursive, so a chroot inside /work does not see itself.
# Undo: tests/gui/mount_chroot.sh --unmount CHROOT. Never `rm -rf` a chroot with these mounted.
set -eu
if [ "$1" = "--unmount" ]; then
    CHROOT=$2
    for dir in $(awk -v root="$CHROOT" '$2 ~ "^"root"/" {print $2}' /proc/mounts | sort -r); do
        umount "$dir"
    done
    exit 0
fi
CHROOT=$1
shift
[ $# -gt 0 ] || set -- /work /root/.pyenv
bind() {
    mkdir -p "$CHROOT$1"
    mountpoint -q "$CHROOT$1" || mount $2 "$1" "$CHROOT$1"
}
mkdir -p "$CHROOT/proc"
mountpoint -q "$CHROOT/proc" || mount -t proc proc "$CHROOT/proc"
bind /dev --rbind
for dir in /tmp "$@"; do
    [ -d "$dir" ] && bind "$dir" --bind
done
