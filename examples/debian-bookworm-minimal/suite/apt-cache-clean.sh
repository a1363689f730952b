#!/bin/sh
# imageci-description: no downloaded .deb files or package lists left in the image
# imageci-tags: hygiene, size
# imageci-needs: pristine
set -eu
debs=$(find /var/cache/apt/archives -name '*.deb' | head -5)
[ -z "$debs" ] || { echo "leftover packages: $debs" >&2; exit 1; }
lists=$(find /var/lib/apt/lists -type f ! -name lock ! -name '*partial*' | head -5)
[ -z "$lists" ] || { echo "leftover package lists: $lists" >&2; exit 1; }
echo ok
