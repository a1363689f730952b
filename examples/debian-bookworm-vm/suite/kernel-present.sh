#!/bin/sh
# imageci-description: a kernel and its initramfs are installed for direct kernel boot
set -eu
ls /boot/vmlinuz-* >/dev/null 2>&1 || { echo "no kernel in /boot" >&2; exit 1; }
ls /boot/initrd.img-* >/dev/null 2>&1 || { echo "no initramfs in /boot" >&2; exit 1; }
