"""Making versions: the builder (mmdebstrap, with a build cache keyed by the inputs' hash), bootable
disks (``bootdisk``), importers of images built elsewhere (tarballs, OCI sources, qcow2 disks),
pushes to registries, rebuilds for reproducibility and bisection's intermediate images
(``intermediate``). Imports ``formats``, ``store``,
``definitions`` and the base modules; never ``testbeds``."""
