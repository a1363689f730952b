#!/usr/bin/env bash
# Makes ROOT, where `make test` keeps every file the tests write, empty and ready.
#   scripts/test-root.sh ROOT KIND SIZE
# KIND: ext4 | dir | auto. ext4: ROOT is a journaled ext4 in the sparse file ROOT.img (at most SIZE, as
# truncate(1) reads it: 64G), loop-mounted; dir: a plain directory on whatever filesystem holds it; auto: ext4 as
# root, dir otherwise. The suite unpacks and removes hundreds of root filesystems: on an ext4 without a journal
# (this project's CI machines) every file made within a minute of many removals scans the inode tables for one
# not recently freed, seconds of CPU per rootfs (bench/disk_slots.py shows it); its own journaled ext4 spares
# every host that, and the tests do the same things on it either way.
# Whatever an earlier run left is removed first (what failed is kept until then).
# Exit 0: ROOT is ready (its kind on stdout); 2: bad arguments; any other: it could not be made (the status of
# the tool that failed, whose message says why).
set -euo pipefail
if [[ $# -ne 3 || ! $2 =~ ^(ext4|dir|auto)$ ]]; then
  echo "usage: $0 ROOT ext4|dir|auto SIZE" >&2
  exit 2
fi
root=${1%/} kind=$2 size=$3
here=$(cd "$(dirname "$0")/.." && pwd)

if [[ -e $root ]]; then
  # the mounts a failed test left, then what it wrote (imageci's own remover: it never follows a mount or a link
  # out), ROOT's own filesystem last (lazily: it goes once nothing holds it)
  "$here/.venv/bin/python" -c 'import sys, pathlib, imageci.fs as f; f.safe_rmtree(pathlib.Path(sys.argv[1]))' "$root"
fi
rm -f "$root.img"
mkdir -p "$root"

if [[ $kind == auto ]]; then
  kind=dir
  [[ $(id -u) -eq 0 ]] && kind=ext4
fi
if [[ $kind == ext4 ]]; then
  truncate -s "$size" "$root.img"
  # a fresh sparse file reads as zeros: nothing to zero or trim now (lazy_*, nodiscard, noinit_itable); what the
  # tests remove is trimmed as they go (discard: a hole punched in ROOT.img, or it would grow by all they write)
  mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "$root.img"
  mount -t ext4 -o loop,noatime,noinit_itable,discard "$root.img" "$root"
fi
echo "$kind"
