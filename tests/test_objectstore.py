"""Blobs in S3-compatible object storage, against a real server (SeaweedFS on
127.0.0.1): uploads verified before they are visible, a bounded read-through
cache that never evicts what a run holds, changed objects refused, gc and
verify on the bucket, an unreachable store refused cleanly."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from imageci.config import Settings
from imageci.store.blobs import BlobStore, CorruptBlobError, open_store
from imageci.store.objects import StoreUnavailable

from s3kit import BUCKET, S3Server


def _store(s3: S3Server, home: Path, monkeypatch: pytest.MonkeyPatch, prefix: str,
           budget: int = 1 << 30, endpoint: str | None = None) -> BlobStore:
    for k, v in {**s3.env(prefix), **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {})}.items():
        monkeypatch.setenv(k, v)
    settings = Settings.load(home, env={**os.environ, "IMAGECI_CACHE_BUDGET": str(budget)})
    settings.ensure()
    return open_store(settings, "owner")


def test_blobs_round_trip_through_the_bucket_and_a_cold_cache(s3: S3Server, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _store(s3, tmp_path / "a", monkeypatch, "roundtrip")
    big = os.urandom(40 << 20)  # past the multipart threshold
    (tmp_path / "big").write_bytes(big)
    small = writer.put_bytes(b"hello")
    large = writer.put_file(tmp_path / "big")
    assert large.digest == hashlib.sha256(big).hexdigest()
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET, Prefix="roundtrip/")["Contents"]}
    assert keys == {f"roundtrip/blobs/sha256/{d[:2]}/{d}" for d in (small.digest, large.digest)}
    assert not list((tmp_path / "a" / "store" / "tmp").iterdir())  # nothing left behind
    reader = _store(s3, tmp_path / "b", monkeypatch, "roundtrip")  # another machine: nothing cached
    assert reader.has(large.digest) and reader.size(large.digest) == len(big)
    assert reader.verified_path(large.digest).read_bytes() == big
    assert reader.read_bytes(small.digest) == b"hello"
    assert sorted(reader.iter_digests()) == sorted([small.digest, large.digest])
    missing = "0" * 64
    assert not reader.has(missing) and reader.size(missing) is None and not reader.path(missing).exists()
    with pytest.raises(CorruptBlobError, match="missing"):
        reader.pin(missing)
    assert reader.verify_all() == (2, [])


def test_the_cache_stays_within_its_budget_and_never_evicts_a_pinned_blob(s3: S3Server, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _store(s3, tmp_path / "a", monkeypatch, "cache")
    digests = [writer.put_bytes(os.urandom(1 << 20)).digest for _ in range(3)]
    reader = _store(s3, tmp_path / "b", monkeypatch, "cache", budget=(2 << 20) + 1000)
    cached = tmp_path / "b" / "store" / "cache" / "sha256"
    held = reader.pin(digests[0])  # a run reads it
    time.sleep(0.01)
    reader.path(digests[1])
    time.sleep(0.01)
    reader.path(digests[2])  # over budget: the least recently used unpinned entry goes, not the pinned one
    here = {p.name for p in cached.rglob("*") if p.is_file()}
    assert here == {digests[0], digests[2]}
    assert hashlib.sha256(held.path.read_bytes()).hexdigest() == digests[0]
    held.release()
    reader.path(digests[1])  # fetched again; now the oldest, digests[0], may go
    assert {p.name for p in cached.rglob("*") if p.is_file()} == {digests[1], digests[2]}


def test_an_object_changed_in_the_bucket_is_refused_on_fetch_and_named_by_verify(
        s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _store(s3, tmp_path / "a", monkeypatch, "tamper")
    good = writer.put_bytes(b"the bytes that were published")
    s3.client().put_object(Bucket=BUCKET, Key=f"tamper/blobs/sha256/{good.digest[:2]}/{good.digest}",
                           Body=b"the bytes someone put there instead")
    reader = _store(s3, tmp_path / "b", monkeypatch, "tamper")
    with pytest.raises(CorruptBlobError, match="changed in the object store"):
        reader.path(good.digest)
    assert not (tmp_path / "b" / "store" / "cache" / "sha256" / good.digest[:2] / good.digest).exists()
    assert not list((tmp_path / "b" / "store" / "tmp").iterdir())
    assert reader.verify_all() == (1, [good.digest])


def test_gc_removes_old_unreferenced_objects_and_interrupted_uploads(s3: S3Server, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(s3, tmp_path / "a", monkeypatch, "gc")
    kept, dropped = store.put_bytes(b"referenced"), store.put_bytes(b"nobody's")
    client = s3.client()
    client.create_multipart_upload(Bucket=BUCKET, Key=f"gc/blobs/sha256/ab/{'ab' * 32}")
    assert store.remove_unreferenced({kept.digest}, time.time() - 3600) == []  # within their grace
    later = time.time() + 5
    assert store.remove_unreferenced({kept.digest}, later, dry_run=True) == [dropped.digest]
    assert store.remove_unreferenced({kept.digest}, later) == [dropped.digest]
    assert sorted(store.iter_digests()) == [kept.digest]
    assert store.objects.sweep(later) == [f"aborted an interrupted upload of gc/blobs/sha256/ab/{'ab' * 32}"]
    assert not client.list_multipart_uploads(Bucket=BUCKET, Prefix="gc/").get("Uploads")


def test_an_unreachable_store_is_refused_cleanly_and_keeps_nothing(s3: S3Server, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(s3, tmp_path / "a", monkeypatch, "down")
    away = _store(s3, tmp_path / "a", monkeypatch, "down", endpoint="http://127.0.0.1:9")  # nothing listens
    with pytest.raises(StoreUnavailable, match="could not be reached") as caught:
        away.put_bytes(b"not stored")
    assert "127.0.0.1" not in str(caught.value)  # a client of the server learns no address
    assert not list((tmp_path / "a" / "store" / "tmp").iterdir())
    assert not store.has(hashlib.sha256(b"not stored").hexdigest())
    assert away.objects.check() != "writable" and store.objects.check() == "writable"


def test_retention_deletes_exactly_the_unreferenced_objects_from_the_bucket(s3: S3Server, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from imageci.app import retention
    from imageci.app.session import Session

    from test_retention import NOW, populate

    for k, v in s3.env("retention").items():
        monkeypatch.setenv(k, v)
    settings = Settings.load(tmp_path / "home", env=os.environ)
    settings.ensure()
    s = Session.open(settings)
    try:
        w = populate(s)
        before = set(s.store.iter_digests())
        retention.retention(s, now=NOW)
        # an object's age is the bucket's own (it cannot be back-dated): at the fake time, years ahead, even the
        # young upload is past its grace; everything else is as on a local store (tests/test_retention.py)
        gone = {w.blob[n] for n in ("v1", "v4", "v1-log", "v4-log", "v5-log", "v9-log", "abandoned-upload",
                                    "young-upload")}
        listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="retention/")["Contents"]
        assert {o["Key"].rsplit("/", 1)[-1] for o in listed} == before - gone
        cached = {p.name for p in (tmp_path / "home" / "store" / "cache").rglob("*") if p.is_file()}
        assert not cached & gone  # what was deleted is not served from a cache either
    finally:
        s.close()
