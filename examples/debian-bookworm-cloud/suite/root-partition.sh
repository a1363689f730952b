#!/bin/sh
# The root filesystem is ext4 and /etc/fstab names it by UUID.
set -eu
root=$(findmnt -n -o SOURCE /)
fstype=$(findmnt -n -o FSTYPE /)
echo "root: $root ($fstype)"
test "$fstype" = ext4
uuid=$(findmnt -n -o UUID /)
grep -q "^UUID=$uuid / ext4" /etc/fstab
