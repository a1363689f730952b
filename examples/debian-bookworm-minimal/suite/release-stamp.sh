#!/bin/sh
# imageci-description: the image carries its release stamp written by the definition
# imageci-tags: basic
set -eu
grep -qx 'IMAGE_NAME=debian-bookworm-minimal' /etc/imageci-release || {
  echo "release stamp missing or wrong" >&2; exit 1; }
echo ok
