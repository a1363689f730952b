#!/bin/sh
# imageci-description: apt and dpkg work offline: database consistent, no broken or half-installed packages
# imageci-tags: basic, packaging
set -eu
out=$(dpkg --audit 2>&1) || true
[ -z "$out" ] || { echo "dpkg --audit reports problems:" >&2; echo "$out" >&2; exit 1; }
apt-get check -qq
bad=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | grep -v '^ii ' || true)
[ -z "$bad" ] || { echo "packages not fully installed:" >&2; echo "$bad" >&2; exit 1; }
apt-cache policy apt | grep -q 'Installed: [0-9]' || { echo "apt-cache cannot see apt" >&2; exit 1; }
echo "ok: $(dpkg-query -W | wc -l) packages installed and consistent"
