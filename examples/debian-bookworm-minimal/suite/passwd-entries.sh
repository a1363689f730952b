#!/bin/sh
# imageci-description: root exists with uid 0, no other uid 0, no account with an empty password
# imageci-tags: basic, security
set -eu
grep -q '^root:x:0:0:' /etc/passwd || { echo "root entry wrong or missing" >&2; exit 1; }
extra=$(awk -F: '$3 == 0 && $1 != "root" {print $1}' /etc/passwd)
[ -z "$extra" ] || { echo "other uid 0 accounts: $extra" >&2; exit 1; }
empty=$(awk -F: '$2 == "" {print $1}' /etc/shadow)
[ -z "$empty" ] || { echo "accounts with empty password: $empty" >&2; exit 1; }
pwck -r -q >/dev/null 2>&1 || { echo "pwck reports inconsistencies" >&2; pwck -r >&2 || true; exit 1; }
grpck -r >/dev/null 2>&1 || { echo "grpck reports inconsistencies" >&2; exit 1; }
echo ok
