#!/bin/sh
# imageci-description: tzdata installed, /etc/localtime points at UTC, zone files resolve
# imageci-tags: basic
set -eu
dpkg-query -W -f='${Status}' tzdata | grep -q 'install ok installed' || { echo "tzdata not installed" >&2; exit 1; }
[ "$(readlink -f /etc/localtime)" = /usr/share/zoneinfo/Etc/UTC ] || {
  echo "/etc/localtime -> $(readlink -f /etc/localtime)" >&2; exit 1; }
[ "$(date +%Z)" = UTC ] || { echo "date reports zone $(date +%Z)" >&2; exit 1; }
[ "$(TZ=Europe/Berlin date -d @0 +%H)" = 01 ] || { echo "Europe/Berlin zone data wrong" >&2; exit 1; }
echo ok
