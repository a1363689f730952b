"""Image formats that both ``build`` and ``testbeds`` read and write: the OCI layout and its layers,
root file system tarballs unpacked without trusting them, VM disks and qcow2 checks, the LXD form of
a version (metadata + squashfs) and simplestreams. Imports ``store`` and the base modules."""
