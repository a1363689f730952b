#!/bin/sh
# imageci-description: no SSH host keys baked in (on a booted testbed, keys made at first boot are fine)
# imageci-tags: security, hygiene
set -eu
[ "$(cat /proc/1/comm)" = systemd ] && exit 77 || true
keys=$(ls /etc/ssh/ssh_host_*key* 2>/dev/null || true)
[ -z "$keys" ] || { echo "SSH host keys baked in: $keys" >&2; exit 1; }
