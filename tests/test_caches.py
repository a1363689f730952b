"""Every cache imageci keeps has a budget (IMAGECI_CACHE_BUDGET): doctor reports it, gc and retention trim
it least recently used first, never while a run may use it; and the test suite keeps only what failed."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from imageci import cacheuse
from imageci.app import caches
from imageci.config import Settings

from conftest import REPO

MB = 1 << 20


def _entry(directory: Path, name: str, used: float, *, marker: bool, size: int = MB) -> Path:
    tree = directory / name
    tree.mkdir(parents=True)
    (tree / "data").write_bytes(os.urandom(size))
    stamp = directory / f"{name}.complete" if marker else tree
    if marker:
        stamp.write_text("")
    os.utime(stamp, (used, used))
    return tree


def _home(tmp_path: Path) -> tuple[Settings, dict[str, Path]]:
    home = tmp_path / "home"
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1,
                        build_cache=tmp_path / "builds", cache_budget=int(2.5 * MB))
    settings.ensure()
    now = time.time()
    made = {}
    for n, age in enumerate((300, 100, 200)):  # a: oldest use, b: newest, c: between
        name = "abc"[n]
        made[f"rootfs-{name}"] = _entry(settings.rootfs_cache, name * 64, now - age, marker=True)
        made[f"deps-{name}"] = _entry(home / "cache" / "test-deps", name * 64, now - age, marker=False)
        made[f"build-{name}"] = _entry(settings.build_cache or tmp_path, name * 64, now - age, marker=False)
    return settings, made


def test_caches_over_budget_lose_their_least_recently_used_entries(tmp_path: Path) -> None:
    settings, made = _home(tmp_path)
    usage = {u.name: u for u in caches.usage(settings)}
    assert usage["unpacked images"].entries == 3 and usage["unpacked images"].over
    assert usage["test dependencies"].size >= 3 * MB and usage["builds (shared)"].over
    assert not usage["VM disks"].over and usage["VM disks"].entries == 0
    cacheuse.touch(settings.rootfs_cache / f"{'a' * 64}.complete")  # a run used the oldest one just now
    done = caches.trim(settings, home_alone=True)
    assert len(done) == 3 and all("least recently used" in line for line in done), done
    assert made["rootfs-a"].is_dir() and not made["rootfs-c"].exists()  # c is now the least recently used
    assert not (settings.rootfs_cache / f"{'c' * 64}.complete").exists()  # its marker went first
    assert not made["deps-a"].exists() and made["deps-b"].is_dir() and made["deps-c"].is_dir()
    assert not made["build-a"].exists() and made["build-b"].is_dir()
    assert not any(u.over for u in caches.usage(settings))
    assert caches.trim(settings, home_alone=True) == []  # within budget: nothing more goes


def test_nothing_a_run_may_use_is_trimmed(tmp_path: Path) -> None:
    settings, made = _home(tmp_path)
    with cacheuse.using(settings.build_cache or tmp_path):  # a build reads the shared cache
        done = caches.trim(settings, home_alone=False)  # and another imageci uses the home
    assert all(p.is_dir() for p in made.values())
    assert "unpacked images is over its budget: not trimmed while another imageci uses this home" in done
    assert not any("builds" in line for line in done)


def test_doctor_reports_and_gc_trims_each_cache(tmp_path: Path) -> None:
    settings, made = _home(tmp_path)
    env = {**os.environ, "IMAGECI_HOME": str(settings.home), "IMAGECI_BUILD_CACHE": str(settings.build_cache),
           "IMAGECI_CACHE_BUDGET": str(int(2.5 * MB))}
    env.pop("IMAGECI_DB_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imageci.cli", *args], env=env, capture_output=True, text=True,
                              timeout=300)

    doctor = {(f["area"], f["name"]): f for f in json.loads(cli("doctor", "--json").stdout)}
    found = doctor[("caches", "unpacked images")]
    assert not found["ok"] and "3 entries" in found["detail"] and "over budget" in found["detail"]
    assert doctor[("caches", "VM disks")]["ok"]
    with open(settings.home / ".lock", "a") as lock:  # another imageci uses the home
        fcntl.flock(lock, fcntl.LOCK_SH)
        assert cli("gc").returncode == 2  # gc would wait for it
        forced = cli("gc", "--force")
        assert forced.returncode == 0 and "not trimmed while another imageci uses this home" in forced.stdout
        assert made["rootfs-a"].is_dir()
    swept = cli("gc")
    assert swept.returncode == 0, swept.stderr
    assert f"trimmed unpacked images: removed {'a' * 64}" in swept.stdout
    assert not made["rootfs-a"].exists() and made["rootfs-b"].is_dir()
    assert all(f["ok"] for f in json.loads(cli("doctor", "--json").stdout) if f["area"] == "caches")


def test_the_test_suite_keeps_only_what_failed_of_its_last_run() -> None:
    """One run of the suite made ~28 GB under pytest's temporary directory and pytest kept three runs."""
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["tmp_path_retention_policy"] == "failed" and options["tmp_path_retention_count"] == 1
    makefile = (REPO / "Makefile").read_text()
    assert '--basetemp "$(TEST_TMP)"' in makefile  # emptied at the start of every run
