#!/usr/bin/env bash
# Start the LXD daemon if it is not answering, and initialise it once with a
# preseed: a "default" dir storage pool and a default profile with a root disk,
# no network (the lxd testbed needs none; `lxd init --auto` cannot pick a bridge
# subnet on some hosts). For hosts without systemd as PID 1 (CI, containers);
# where systemd runs, `systemctl start lxd` does the first part. Idempotent.
#
#   scripts/lxd-up.sh        # exit 0: LXD answers and has a default pool
set -euo pipefail

command -v lxd >/dev/null || { echo "lxd-up: lxd is not installed (scripts/host-setup.sh)" >&2; exit 1; }
if ! timeout 5 lxc query /1.0 >/dev/null 2>&1; then
  log=/var/log/lxd-imageci.log
  setsid nohup lxd --group root --logfile "$log" >/dev/null 2>&1 < /dev/null &
  timeout 60 lxd waitready || { echo "lxd-up: the daemon did not become ready (see $log)" >&2; exit 1; }
  echo "lxd-up: started the LXD daemon (log: $log)"
fi
if ! lxc storage show default >/dev/null 2>&1; then
  lxd init --preseed <<'PRESEED'
config: {}
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root: {path: /, pool: default, type: disk}
PRESEED
  echo "lxd-up: initialised LXD (storage pool 'default', driver dir, no network)"
fi
