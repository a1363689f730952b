"""Benchmark: one trivial test in a fresh podman container, imageci vs tmt.

Same image (the example, as the OCI image imageci made of it), same trivial
test (`true`), same podman. imageci: the whole engine path (fresh container,
copy the test in, exec, remove, record). tmt: `tmt run --all provision --how
container` on a one-test plan. tmt comes from PyPI (IMAGECI_TMT or `tmt` on
PATH; `pip install tmt` into any venv).

Last line: `podman: imageci X s vs tmt Y s per trivial test (ratio Z)`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import built_example, fresh_home, sized  # noqa: E402

from imageci.checks.script import ScriptCheck  # noqa: E402
from imageci.definitions.suite import load_suite  # noqa: E402
from imageci.engine.runner import Engine  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.testbeds.podman import PodmanBackend  # noqa: E402

PLAN = """\
discover:
    how: shell
    tests:
      - name: trivial
        test: "true"
execute:
    how: tmt
"""


def run_tmt(tmt: str, tag: str, storage: dict[str, str]) -> float:
    """One tmt run of the plan in a container of ``tag``, from the same podman storage (``storage``: its
    environment) imageci keeps its images in."""
    with tempfile.TemporaryDirectory() as tree, tempfile.TemporaryDirectory() as runs:
        subprocess.run([tmt, "init", tree], check=True, capture_output=True)
        Path(tree, "plan.fmf").write_text(PLAN)
        workdir = Path(runs) / "run"
        t = time.monotonic()
        res = subprocess.run([tmt, "--root", tree, "run", "--id", str(workdir), "--all", "provision", "--how",
                              "container", "--image", tag], capture_output=True, text=True, env=storage)
        took = time.monotonic() - t
        if res.returncode != 0:
            raise SystemExit(f"tmt failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        return took


def main() -> None:
    tmt = os.environ.get("IMAGECI_TMT") or shutil.which("tmt")
    if not tmt:
        raise SystemExit("tmt not found: pip install tmt (or set IMAGECI_TMT)")
    settings, catalog, store = fresh_home("podman")
    try:
        version = built_example(settings, catalog, store)
        backend = PodmanBackend(settings.home, settings.rootfs_cache)
        engine = Engine(catalog, store, {"podman": backend}, jobs=1)
        tag = backend.store.ensure(engine.image_handle(version))
        suite = settings.home / "suite"
        suite.mkdir()
        (suite / "trivial.sh").write_text("#!/bin/sh\ntrue\n")
        (suite / "trivial.sh").chmod(0o755)
        check = ScriptCheck(load_suite(suite).tests[0])
        ours = []
        for _ in range(sized(5, 1)):
            t = time.monotonic()
            report = engine.run(version, [check], ["podman"], rerun_all=True)
            ours.append(time.monotonic() - t)
            assert report.results[0].verdict == "pass", report.results[0].reason
        theirs = [run_tmt(tmt, tag, backend.store.env()) for _ in range(sized(2, 1))]
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"imageci podman testbed: {', '.join(f'{x:.2f}' for x in ours)} s (median {a:.2f} s)")
        print(f"tmt provision container: {', '.join(f'{x:.1f}' for x in theirs)} s (median {b:.1f} s)")
        print(f"podman: imageci {a:.2f} s vs tmt {b:.1f} s per trivial test (ratio {a / b:.3f})")
    finally:
        catalog.close()
        safe_rmtree(settings.home)


if __name__ == "__main__":
    main()
