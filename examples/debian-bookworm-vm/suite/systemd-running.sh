#!/bin/sh
# imageci-description: systemd is PID 1 and the system finished starting with no failed units
# imageci-needs: isolation-container
set -eu
[ "$(cat /proc/1/comm)" = systemd ] || { echo "PID 1 is $(cat /proc/1/comm)" >&2; exit 1; }
state=$(systemctl is-system-running --wait || true)
failed=$(systemctl list-units --failed --no-legend --plain | awk '{print $1}')
[ "$state" = running ] || { echo "system state: $state; failed units: $failed" >&2; exit 1; }
