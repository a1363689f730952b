"""Benchmark: BOM extraction and vulnerability matching at scale — a root with 1,000 dpkg packages
(bench/bom_vs_syft.py's synthetic root: 334 source packages) against a Debian Security Tracker feed
of 50,000 records (10,000 source packages × 5 CVEs, in bookworm and bullseye), imported into a
SQLite catalog. Times the import (one transaction) and then, median of 5, reading the BOM plus
matching it against the catalog; Python's peak memory (tracemalloc) during one extraction + match.
Target: ≤ 2 s.

Last line: `vulns: BOM + match of N packages against M records in X s (target 2 s), peak memory P MiB, K findings`.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bom_vs_syft import synthetic_root  # noqa: E402
from common import sized  # noqa: E402

from imageci.app import vulns  # noqa: E402
from imageci.app.session import Session  # noqa: E402
from imageci.config import Settings  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.supply.extract import extract_bom  # noqa: E402

SOURCES, PER_SOURCE = sized(10_000, 50), 5
URGENCY = ["low", "medium", "high", "unimportant", "not yet assigned"]


def tracker_feed(path: Path) -> int:
    doc: dict[str, dict[str, object]] = {}
    n = 0
    for s in range(SOURCES):
        entries: dict[str, object] = {}
        for k in range(PER_SOURCE):
            cve = f"CVE-20{20 + k}-{s:05d}"
            release: dict[str, object] = {"status": "resolved", "repositories": {"bookworm": "1.0-1"},
                                          "fixed_version": f"1.{(s + k) % 9}-1", "urgency": URGENCY[(s + k) % 5]}
            if k == 4:
                release = {"status": "open", "repositories": {"bookworm": "1.0-1"}, "urgency": "high"}
            entries[cve] = {"description": f"synthetic {cve}", "scope": "remote",
                            "releases": {"bookworm": release, **({"bullseye": release} if k % 2 else {})}}
            n += 2 if k % 2 else 1
        doc[f"src{s:04d}"] = entries
    path.write_text(json.dumps(doc))
    return n


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="imageci-bench-vulns-"))
    home = work / "home"
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    settings.ensure()
    session = Session.open(settings)
    try:
        root = synthetic_root(work / "root", sized(1000, 20))
        records = tracker_feed(work / "tracker.json")
        t0 = time.perf_counter()
        vulns.import_feed(session, work / "tracker.json")
        imported = time.perf_counter() - t0
        times, found = [], 0
        for _ in range(sized(5, 1)):
            t0 = time.perf_counter()
            bom = extract_bom(root)
            findings = vulns._findings(session, bom)[0]
            times.append(time.perf_counter() - t0)
            found = len(findings)
        tracemalloc.start()
        vulns._findings(session, extract_bom(root))
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        took = statistics.median(times)
        print(f"import of {records} records (one transaction): {imported:.2f} s")
        print(f"vulns: BOM + match of {len(bom.packages)} packages against {records} records in {took:.3f} s "
              f"(target 2 s), peak memory {peak:.1f} MiB, {found} findings")
    finally:
        session.close()
        safe_rmtree(work)


if __name__ == "__main__":
    main()
