"""Benchmark: `imageci build` against plain mmdebstrap on the same definition
(same arguments, same SOURCE_DATE_EPOCH), then a rebuild with unchanged inputs.
Both builds bypass every cache. Also checks the two outputs are bit-identical.

Last line: `build: imageci X s vs mmdebstrap Y s (overhead Z%); unchanged rebuild W s`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import EXAMPLE, fresh_home  # noqa: E402

from imageci.build import inputs  # noqa: E402
from imageci.build.mmdebstrap import BuildPlan  # noqa: E402
from imageci.build.service import build_image  # noqa: E402
from imageci.definitions.image import load_definition  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    loaded = load_definition(EXAMPLE)
    d = loaded.definition
    mirror = inputs.fetch_mirror_state(d.mirror, d.suite)
    settings, catalog, store = fresh_home("build", cache=False)
    plain_dir = Path(tempfile.mkdtemp(prefix="imageci-bench-plain-"))
    try:
        # plain mmdebstrap: the very command imageci runs
        plan = BuildPlan(d, mirror, plain_dir)
        argv = plan.command()
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(plan.source_date_epoch), TMPDIR=str(plain_dir))
        t0 = time.monotonic()
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        plain = time.monotonic() - t0

        t0 = time.monotonic()
        result = build_image(loaded, settings, catalog, store, force=True)
        ours = time.monotonic() - t0

        t0 = time.monotonic()
        again = build_image(loaded, settings, catalog, store)
        rebuild = time.monotonic() - t0
        assert again.skipped

        same = sha256(plain_dir / "rootfs.tar") == result.version.digest
        overhead = (ours - plain) / plain * 100
        print(f"plain mmdebstrap       : {plain:.2f} s")
        print(f"imageci build          : {ours:.2f} s (mirror check, build, hash, store, register)")
        print(f"imageci unchanged input: {rebuild:.3f} s (skipped)")
        print(f"bit-identical outputs  : {same}")
        print(f"build: imageci {ours:.1f} s vs mmdebstrap {plain:.1f} s (overhead {overhead:.1f}%); "
              f"unchanged rebuild {rebuild:.2f} s")
    finally:
        catalog.close()
        safe_rmtree(settings.home)
        safe_rmtree(plain_dir)


if __name__ == "__main__":
    main()
