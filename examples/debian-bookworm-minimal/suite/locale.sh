#!/bin/sh
# imageci-description: the C.UTF-8 locale is available and handles UTF-8 text
# imageci-tags: basic
set -eu
[ -d /usr/lib/locale/C.utf8 ] || { echo "no C.utf8 locale in /usr/lib/locale" >&2; exit 1; }
n=$(LC_ALL=C.UTF-8 printf 'h\303\251' | LC_ALL=C.UTF-8 wc -m)
[ "$n" -eq 2 ] || { echo "C.UTF-8 counts $n characters in a 2-character string" >&2; exit 1; }
echo ok
