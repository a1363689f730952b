"""The qemu testbed and its parts: the backend (``qemu``), one VM process
(``process``) booted from a disk and restored from snapshots (``vmboot``,
``vmpool``), its console (``vmconsole``) and QMP socket (``qmp``), the
cloud-init seed (``cloudseed``) and the names it
resolves (``guestdns``), and whether KVM can be used (``accel``). Imports
``testbeds.base`` and below; nothing here is imported by another backend."""
