#!/bin/sh
# imageci-description: the build host's resolv.conf and hostname did not leak into the image
# imageci-tags: hygiene
set -eu
# /etc/resolv.conf may exist as a file the sandbox did not create; the image must not ship one.
if [ -e /etc/hostname ]; then echo "/etc/hostname shipped: $(cat /etc/hostname)" >&2; exit 1; fi
if [ -f /etc/resolv.conf ] && [ -s /etc/resolv.conf ]; then echo "/etc/resolv.conf shipped" >&2; exit 1; fi
echo ok
