#!/bin/sh
# imageci-description: the build host's resolv.conf and hostname did not leak into the image
# imageci-tags: hygiene
# imageci-needs: pristine
set -eu
# A container runtime bind-mounts its own /etc/hostname and /etc/resolv.conf:
# those files are the testbed's, not the image's, and are not judged here.
runtime_owned() { grep -q " $1 " /proc/self/mountinfo; }
if [ -e /etc/hostname ] && ! runtime_owned /etc/hostname; then
  echo "/etc/hostname shipped: $(cat /etc/hostname)" >&2; exit 1
fi
if [ -s /etc/resolv.conf ] && ! runtime_owned /etc/resolv.conf; then
  echo "/etc/resolv.conf shipped" >&2; exit 1
fi
echo ok
