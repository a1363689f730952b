from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imageci.store import blobs
from imageci.store.blobs import BlobStore, CorruptBlobError

from conftest import Env


def test_put_is_content_addressed_and_read_only(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    blob = store.put_bytes(b"hello")
    assert blob.digest == hashlib.sha256(b"hello").hexdigest()
    path = store.path(blob.digest)
    assert path.read_bytes() == b"hello"
    assert path.parent.name == blob.digest[:2]
    assert not os.stat(path).st_mode & 0o222  # blobs are not writable
    assert store.put_bytes(b"hello") == blob  # idempotent
    src = tmp_path / "f"
    src.write_bytes(b"x" * 3_000_000)
    big = store.put_file(src)
    assert big.size == 3_000_000 and store.read_bytes(big.digest) == src.read_bytes()
    assert list(store.tmp.iterdir()) == []  # no temporary files left behind


def test_move_file_renames_into_store(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    src = store.tmp / "artifact"
    src.write_bytes(b"data")
    blob = store.move_file(src)
    assert not src.exists() and store.read_bytes(blob.digest) == b"data"


def test_corruption_detected_on_read_and_by_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path / "store")
    good = store.put_bytes(b"good")
    bad = store.put_bytes(b"soon corrupt")
    p = store.path(bad.digest)
    assert store.verified_path(bad.digest) == p  # hashed, and the file it hashed remembered
    hashed: list[Path] = []
    real_hash = blobs.hash_file
    monkeypatch.setattr(blobs, "hash_file", lambda path: hashed.append(path) or real_hash(path))
    assert store.verified_path(bad.digest) == p and hashed == []  # the same file: not read again
    before = p.stat()
    p.chmod(0o644)
    p.write_bytes(b"tampered!!!!")  # the same size, and the same mtime put back: its ctime still tells
    os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(CorruptBlobError):
        store.read_bytes(bad.digest)
    with pytest.raises(CorruptBlobError):
        store.verified_path(bad.digest)
    assert store.verified_path(good.digest) == store.path(good.digest)
    assert store.verify_all() == (2, [bad.digest])


def test_verify_command_exit_codes(env: Env) -> None:
    blob = env.store.put_bytes(b"payload")
    ok = env.cli("verify")
    assert ok.returncode == 0 and "1 blob(s): 0 corrupt" in ok.stdout
    p = env.store.path(blob.digest)
    p.chmod(0o644)
    p.write_bytes(b"bit rot")
    res = env.cli("verify")
    assert res.returncode == 7
    assert blob.digest in res.stderr


def test_bad_digest_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        BlobStore(tmp_path).path("../../etc/passwd")
