#!/bin/sh
# imageci-description: /etc/os-release says Debian 12 bookworm
. /etc/os-release
[ "$ID" = debian ] && [ "$VERSION_CODENAME" = bookworm ] || { echo "got $PRETTY_NAME" >&2; exit 1; }
