#!/bin/sh
# imageci-description: no SSH host keys baked into the image (every instance must generate its own)
# imageci-tags: security, hygiene
# imageci-needs: pristine
set -eu
keys=$(ls /etc/ssh/ssh_host_*key* 2>/dev/null || true)
[ -z "$keys" ] || { echo "SSH host keys baked in: $keys" >&2; exit 1; }
echo ok
