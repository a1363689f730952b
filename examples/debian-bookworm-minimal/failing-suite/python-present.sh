#!/bin/sh
# imageci-description: intentionally failing: a minimal image has no python3
[ -x /usr/bin/python3 ] || { echo "python3 is not installed" >&2; exit 1; }
