#!/bin/sh
# The root filesystem is ext4 and /etc/fstab names it by UUID; the EFI system
# partition, where /etc/fstab names one, was found and mounted at boot.
set -eu
root=$(findmnt -n -o SOURCE /)
fstype=$(findmnt -n -o FSTYPE /)
echo "root: $root ($fstype)"
test "$fstype" = ext4
uuid=$(findmnt -n -o UUID /)
grep -q "^UUID=$uuid / ext4" /etc/fstab
if grep -q '^[^#]* /boot/efi ' /etc/fstab; then
  findmnt -n -o SOURCE,FSTYPE,UUID /boot/efi || { echo "/etc/fstab names an EFI system partition that is not mounted" >&2; exit 1; }
fi
