#!/bin/sh
# imageci-tags: sandbox
set -eu
# Only loopback: /proc/net/dev lists interfaces (header lines, then one per interface).
ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ')
[ "$ifaces" = "lo " ] || { echo "interfaces visible: $ifaces" >&2; exit 1; }
echo ok
