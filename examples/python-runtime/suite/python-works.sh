#!/bin/sh
# imageci-description: python3 starts, has its standard library and can write bytecode
# imageci-tags: basic, runtime
set -eu
python3 -c 'import json, sqlite3, ssl, venv; print("python", __import__("sys").version.split()[0])'
d=$(mktemp -d)
printf 'x = 1\n' > "$d/m.py"
python3 -m py_compile "$d/m.py"
rm -rf "$d"
