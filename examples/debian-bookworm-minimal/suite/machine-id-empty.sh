#!/bin/sh
# imageci-description: /etc/machine-id is absent, empty or "uninitialized" (each boot makes its own)
# imageci-tags: hygiene
# imageci-needs: pristine
set -eu
for f in /etc/machine-id /var/lib/dbus/machine-id; do
  [ -e "$f" ] || continue
  [ -L "$f" ] && continue
  content=$(cat "$f")
  case "$content" in
    ""|uninitialized) ;;
    *) echo "$f holds an id: $content" >&2; exit 1 ;;
  esac
done
echo ok
