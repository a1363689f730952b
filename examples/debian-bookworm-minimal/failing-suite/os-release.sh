#!/bin/sh
. /etc/os-release
[ "$ID" = debian ]
