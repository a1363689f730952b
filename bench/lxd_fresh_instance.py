"""Benchmark: what a fresh LXD instance costs per test, imageci's lxd testbed
vs plain `lxc` on the same image.

The image is a static-busybox rootfs (the smallest image LXD boots, so
imageci's own overhead weighs the most), imported with `imageci import` so it
has its LXD form. The LXD daemon pulls it once from the run's feed; then, N
times each, interleaved:

- imageci: ``LxdBackend.create`` + ``open`` (an ephemeral container from the
  feed by fingerprint, readiness probed) + ``exec true`` + ``close``;
- plain: ``lxc launch FINGERPRINT`` + ``lxc exec NAME -- true`` +
  ``lxc delete --force NAME``.

Target (issue 11): ratio ≤ 1.2.
Last line: `lxd fresh instance: imageci X s vs lxc Y s per test (p50 of N), ratio R`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pct, sized  # noqa: E402

from imageci.config import Settings  # noqa: E402
from imageci.engine.runner import Engine  # noqa: E402
from imageci.store.blobs import BlobStore  # noqa: E402
from imageci.store.catalog import Catalog  # noqa: E402
from imageci.testbeds.lxd import LxdBackend  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def busybox_tar(work: Path) -> Path:
    """/bin/busybox with every applet linked (busybox --install), as a rootfs tarball."""
    root = work / "root"
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "tmp", "run", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s"], check=True)
    (root / "sbin" / "init").unlink(missing_ok=True)
    (root / "sbin" / "init").symlink_to("/bin/busybox")
    (root / "etc" / "inittab").write_text("::sysinit:/bin/true\n::respawn:/bin/sleep 3600\n")
    (root / "etc" / "os-release").write_text(f'ID=busybox\nVERSION_ID=bench\nNAME="BusyBox {secrets.token_hex(4)}"\n')
    out = work / "busybox.tar"
    with tarfile.open(out, "w") as tar:
        tar.add(root, arcname=".")
    return out


def lxc(*args: str) -> str:
    return subprocess.run(["lxc", *args], check=True, capture_output=True, text=True, timeout=300).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=sized(15, 1), help="instances per side")
    args = parser.parse_args()
    subprocess.run([str(REPO / "scripts" / "lxd-up.sh")], check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="imageci-bench-lxd-"))
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")} | {"IMAGECI_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "imageci.cli", "import", "bench", str(busybox_tar(work))], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    catalog = Catalog.open(settings.db_url)
    [version] = catalog.versions("bench")
    handle = Engine(catalog, BlobStore(settings.store_dir), {}).image_handle(version)
    assert handle.lxd is not None
    fingerprint = handle.lxd.fingerprint
    backend = LxdBackend(home, settings.rootfs_cache)
    ours: list[float] = []
    plain: list[float] = []
    try:
        warm = backend.create(handle)  # the daemon pulls the image from the run's feed once
        warm.open()
        warm.close()
        for i in range(args.n):
            started = time.perf_counter()
            tb = backend.create(handle)
            tb.open()
            assert tb.exec(["true"]).exit_code == 0
            tb.close()
            ours.append(time.perf_counter() - started)
            name = f"bench-plain-{secrets.token_hex(3)}-{i}"
            started = time.perf_counter()
            lxc("launch", fingerprint, name)
            lxc("exec", name, "--", "true")
            lxc("delete", "--force", name)
            plain.append(time.perf_counter() - started)
    finally:
        backend.finish()  # deletes the image it pulled
        for inst in json.loads(lxc("list", "--format", "json")):
            if str(inst["name"]).startswith("bench-plain-"):
                subprocess.run(["lxc", "delete", "--force", inst["name"]], capture_output=True)
        catalog.close()
        shutil.rmtree(work, ignore_errors=True)
    a, b = pct(ours, 50), pct(plain, 50)
    print(f"imageci: {', '.join(f'{x:.2f}' for x in ours)}")
    print(f"lxc:     {', '.join(f'{x:.2f}' for x in plain)}")
    print(f"lxd fresh instance: imageci {a:.2f} s vs lxc {b:.2f} s per test (p50 of {args.n}), ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
