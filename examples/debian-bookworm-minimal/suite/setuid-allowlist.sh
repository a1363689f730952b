#!/bin/sh
# imageci-description: setuid/setgid binaries are only the expected ones
# imageci-tags: security
set -eu
allowed="/usr/bin/chfn /usr/bin/chsh /usr/bin/gpasswd /usr/bin/mount /usr/bin/newgrp /usr/bin/passwd
/usr/bin/su /usr/bin/umount /usr/bin/chage /usr/bin/expiry /usr/sbin/unix_chkpwd /usr/bin/wall
/usr/lib/dbus-1.0/dbus-daemon-launch-helper /usr/lib/openssh/ssh-keysign /usr/sbin/pam_extrausers_chkpwd"
found=$(find / -xdev \( -perm -4000 -o -perm -2000 \) -type f 2>/dev/null | sort)
for f in $found; do
  echo "$allowed" | tr ' ' '\n' | grep -qx "$f" || { echo "unexpected setuid/setgid: $f" >&2; exit 1; }
done
echo "ok: $(echo "$found" | grep -c . || true) allowed setuid/setgid binaries"
