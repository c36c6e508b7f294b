#!/usr/bin/env bash
# Fetches Debian's stock kernel (the package linux-image-amd64 points at) and unpacks it, without
# installing it, into /var/cache/oca-hwtests/kernel (or $1) for the VM tests. Needs apt lists
# (apt-get update) and network access to Debian's mirror.
set -euo pipefail
dest=${1:-/var/cache/oca-hwtests/kernel}
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$pkg" ] || { echo "linux-image-amd64 has no kernel dependency in the apt lists" >&2; exit 1; }
if [ -f "$dest/.package" ] && [ "$(cat "$dest/.package")" = "$pkg" ]; then
  echo "kernel $pkg already in $dest"; exit 0
fi
work=$(mktemp -d)
chmod 755 "$work"  # apt downloads as _apt
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$pkg" >/dev/null)
rm -rf "$dest" && mkdir -p "$dest"
dpkg-deb -x "$work"/*.deb "$dest"
echo "$pkg" > "$dest/.package"
echo "kernel $pkg unpacked in $dest"
