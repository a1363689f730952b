"""Where tests run, behind one narrow protocol (``base``: capabilities, open, exec, copy in and out,
revert, reboot, close): the sandbox (overlayfs + bubblewrap), podman, LXD, SSH hosts and qemu VMs
(``vm``). Each backend sweeps its own leftovers for ``imageci gc`` (``registry.sweepers``).
Imports ``formats``, ``definitions`` and the base modules; never ``build``."""
