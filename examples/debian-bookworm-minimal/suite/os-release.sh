#!/bin/sh
# imageci-description: /etc/os-release says Debian 12 bookworm
# imageci-tags: basic
set -eu
. /etc/os-release
[ "$ID" = debian ] || { echo "ID is $ID, want debian" >&2; exit 1; }
[ "$VERSION_ID" = 12 ] || { echo "VERSION_ID is $VERSION_ID, want 12" >&2; exit 1; }
[ "$VERSION_CODENAME" = bookworm ] || { echo "codename $VERSION_CODENAME" >&2; exit 1; }
grep -qx '12\.[0-9]*' /etc/debian_version || { echo "debian_version: $(cat /etc/debian_version)" >&2; exit 1; }
echo "ok: $PRETTY_NAME"
