"""`imageci backup` while a server runs and a test run writes to the catalog, then `imageci restore` into
an empty home: the same `images`, `results` and `events`, and a clean `verify`. A blob missing from the
backup, or damaged in it, is named (exit 7); a home that holds a catalog is never overwritten (exit 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imageci.config import Settings

from conftest import IMAGECI, REPO, Env, busybox_rootfs, make_env, write_suite
from pgkit import database
from s3kit import BUCKET, S3Server

pytestmark = pytest.mark.root
SUITE = {"ok": "#!/bin/sh\necho all good\n", "bad": "#!/bin/sh\necho nope\nexit 1\n"}


def _versions(env: Env, tmp_path: Path) -> list[str]:
    suite = write_suite(tmp_path / "suite", SUITE)
    refs = []
    for marker in ("one", "two"):
        done = env.cli("import", "bak", str(busybox_rootfs(tmp_path / f"{marker}.tar", marker)),
                       "--suite", str(suite))
        assert done.returncode == 0, done.stderr
        refs.append(f"bak@{env.catalog.versions('bak')[-1].serial}")
    assert env.cli("test", refs[0]).returncode == 1
    assert env.cli("promote", refs[0], "--force", "--reason", "for the backup").returncode == 0
    return refs


def _views(env: Env, refs: list[str]) -> list[str]:
    """What `images`, `results` and `events` print about the versions (the home's path made alike)."""
    outputs = []
    for args in (("images",), *(("results", r, "--json") for r in refs), *(("events", r) for r in refs)):
        done = env.cli(*args)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.replace(str(env.home), "HOME"))
    return outputs


def test_a_backup_taken_while_a_server_runs_restores_the_same_home(env: Env, tmp_path: Path) -> None:
    from serverkit import start_server

    refs = _versions(env, tmp_path)
    running = start_server(env.home, seed=False)
    next(running)
    try:
        writer = subprocess.Popen([*IMAGECI, "test", refs[1], "--rerun-all"], env=env.env(), cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        during = env.cli("backup", str(tmp_path / "during"))
        assert writer.wait(timeout=300) == 1
        assert during.returncode == 0, during.stdout + during.stderr
        quiet = env.cli("backup", str(tmp_path / "quiet"))
        assert quiet.returncode == 0 and "backed up the sqlite catalog" in quiet.stdout, quiet.stderr
    finally:
        next(running, None)

    for name in ("during", "quiet"):  # each restores into an empty home with every blob, and verifies clean
        home = make_env(tmp_path / f"restored-{name}")
        done = home.cli("restore", str(tmp_path / name))
        assert done.returncode == 0, done.stdout + done.stderr
        verified = home.cli("verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        if name == "quiet":
            assert _views(home, refs) == _views(env, refs)
        home.catalog.close()

    refused = env.cli("restore", str(tmp_path / "quiet"))  # never over a catalog in use
    assert refused.returncode == 2 and "holds 1 product(s)" in refused.stderr
    assert env.cli("backup", str(tmp_path / "quiet")).returncode == 2  # never into a backup

    blobs = sorted((tmp_path / "quiet" / "blobs").rglob("*[0-9a-f]"))
    blobs = [b for b in blobs if b.is_file()]
    gone, damaged = blobs[0], blobs[1]
    gone.unlink()
    damaged.chmod(0o644)
    damaged.write_bytes(b"not what it was")
    broken = make_env(tmp_path / "restored-broken")
    done = broken.cli("restore", str(tmp_path / "quiet"))
    assert done.returncode == 7, done.stdout + done.stderr
    assert f"missing: blob sha256:{gone.name}" in done.stderr and f"corrupt: blob sha256:{damaged.name}" in done.stderr
    broken.catalog.close()


def test_a_postgresql_catalog_is_dumped_and_restored_into_an_empty_database(postgres_url: str, tmp_path: Path) -> None:
    env = make_env(tmp_path / "home", database(postgres_url, "backup_source"))
    refs = _versions(env, tmp_path)
    done = env.cli("backup", str(tmp_path / "pg"))
    assert done.returncode == 0 and "backed up the postgresql catalog" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "pg" / "catalog.pgdump").is_file() and not (tmp_path / "pg" / "catalog.db").exists()
    settings = Settings(home=tmp_path / "restored", db_url=database(postgres_url, "backup_target"), jobs=2,
                        build_cache=None)
    restored = Env(settings, None, None)  # type: ignore[arg-type] (the catalog is the restore's to make)
    done = restored.cli("restore", str(tmp_path / "pg"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _views(restored, refs) == _views(env, refs) and restored.cli("verify").returncode == 0
    again = restored.cli("restore", str(tmp_path / "pg"))  # never into a database that has tables
    assert again.returncode == 2 and "restore into an empty database" in again.stderr
    sqlite_home = make_env(tmp_path / "sqlite-home")
    other = sqlite_home.cli("restore", str(tmp_path / "pg"))
    assert other.returncode == 2 and "a backup of a postgresql catalog; this home's is sqlite" in other.stderr
    sqlite_home.catalog.close()
    env.catalog.close()


def test_a_home_on_object_storage_is_backed_up_and_restored_into_another_bucket_prefix(
        s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3.env("backup-source").items():
        monkeypatch.setenv(k, v)  # the CLI's processes inherit them
    env = make_env(tmp_path / "home")
    refs = _versions(env, tmp_path)
    done = env.cli("backup", str(tmp_path / "b"))
    assert done.returncode == 0, done.stdout + done.stderr
    listed = {line.split()[0] for line in (tmp_path / "b" / "blobs.txt").read_text().splitlines()}
    monkeypatch.setenv("IMAGECI_STORE_URL", "s3://imageci/backup-target")  # a new database and an empty prefix
    restored = make_env(tmp_path / "restored")
    done = restored.cli("restore", str(tmp_path / "b"))
    assert done.returncode == 0, done.stdout + done.stderr
    there = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="backup-target/")["Contents"]
    assert {o["Key"].rsplit("/", 1)[-1] for o in there} == {d.removeprefix("sha256:") for d in listed}
    verified = restored.cli("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert _views(restored, refs) == _views(env, refs)
    restored.catalog.close()
