"""The C library, for the system calls Python has no function for (mount, umount2, unshare, setns,
fallocate with hole punching). Opened as the process's own symbols (``dlopen(NULL)``): the
interpreter is linked with it, so nothing is searched for (``ctypes.util.find_library`` runs
``ldconfig -p`` each time it is asked)."""

from __future__ import annotations

import ctypes

LIBC = ctypes.CDLL(None, use_errno=True)
