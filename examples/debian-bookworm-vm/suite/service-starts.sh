#!/bin/sh
# imageci-description: a transient service can be started and stopped through systemd
# imageci-needs: isolation-container
set -eu
systemd-run --unit=imageci-probe --property=Type=exec sleep 300
systemctl is-active --quiet imageci-probe || { systemctl status imageci-probe >&2; exit 1; }
systemctl stop imageci-probe
! systemctl is-active --quiet imageci-probe
