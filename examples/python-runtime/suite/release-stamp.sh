#!/bin/sh
# imageci-description: the image says what it is
# imageci-tags: basic
set -eu
grep -qx 'IMAGE_NAME=python-runtime' /etc/imageci-release
