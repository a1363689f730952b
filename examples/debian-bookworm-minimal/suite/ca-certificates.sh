#!/bin/sh
# imageci-description: the CA bundle exists, is non-trivial and parses as PEM
# imageci-tags: basic, security
set -eu
f=/etc/ssl/certs/ca-certificates.crt
[ -s "$f" ] || { echo "$f missing or empty" >&2; exit 1; }
n=$(grep -c 'BEGIN CERTIFICATE' "$f")
[ "$n" -ge 100 ] || { echo "only $n certificates in the bundle" >&2; exit 1; }
echo "ok: $n certificates"
