"""Benchmark: publishing and fetching the example image through `imageci serve`
with its blobs in S3-compatible object storage (SeaweedFS on 127.0.0.1) vs in
the home's directory, in the same run, on the same bytes.

- publish: every artifact of the example uploaded (PUT /blobs, streamed,
  hashed) and the version committed (POST /versions);
- fetch: every artifact downloaded from the server. For the object store the
  server's read-through cache is emptied first, so each byte comes from the
  bucket, is hashed, then served.

Best of 3 each. Target: the object store at ≥ 0.7 of the local directory's
throughput. Last line: `object store: publish+fetch S MB/s vs L MB/s local
directory (ratio R); publish …, fetch …`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import QUICK, built_example, fresh_home, sized  # noqa: E402

from imageci.fs import safe_rmtree  # noqa: E402

from s3kit import BUCKET, S3Server, seaweedfs  # noqa: E402
from serverkit import API, Server, _token, start_server  # noqa: E402


def artifacts(tmp: Path) -> list[tuple[str, str, Path]]:
    """(kind, filename, file) of what is published: the example image's artifacts (``--quick``: one 8 MiB file)."""
    if QUICK:
        blob = tmp / "rootfs.tar"
        blob.write_bytes(os.urandom(8 << 20))
        return [("rootfs", "rootfs.tar", blob)]
    settings, catalog, store = fresh_home("objstore")
    version = built_example(settings, catalog, store)
    out = [(a.kind, a.filename, store.path(a.digest)) for a in version.artifacts]
    catalog.close()
    return out


def publish(server: Server, token: str, files: list[tuple[str, str, Path]], name: str) -> float:
    auth = {"Authorization": f"Bearer {token}"}
    body = []
    t0 = time.monotonic()
    with httpx.Client(base_url=server.url, headers=auth, timeout=600) as http:
        for kind, filename, path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()  # the client's own hash, as `imageci publish`
            r = http.put(f"{API}/blobs/sha256:{digest}", content=_chunks(path),
                         headers={"Content-Length": str(path.stat().st_size)})
            assert r.status_code in (200, 201), r.text
            body.append({"kind": kind, "filename": filename, "digest": digest, "size": path.stat().st_size})
        rootfs = next(a for a in body if a["kind"] == "rootfs")
        done = http.post(f"{API}/versions", json={"name": name, "digest": rootfs["digest"], "artifacts": body})
        assert done.status_code == 201, done.text
    return time.monotonic() - t0


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def fetch(server: Server, token: str, ref: str, files: list[tuple[str, str, Path]]) -> float:
    cache = server.home / "store" / "cache"
    if cache.exists():
        safe_rmtree(cache)  # every byte from the bucket
    t0 = time.monotonic()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as http:
        for _kind, filename, path in files:
            with http.stream("GET", f"{API}/images/{ref}/artifacts/{filename}", follow_redirects=True) as r:
                assert r.status_code == 200, r.read()
                n = sum(len(chunk) for chunk in r.iter_bytes(1 << 20))
            assert n == path.stat().st_size
    return time.monotonic() - t0


def measure(server: Server, files: list[tuple[str, str, Path]], tag: str,
            s3: S3Server | None = None) -> tuple[float, float]:
    """Best seconds of 3 to publish (each time a new product) and to fetch."""
    token = _token(server, f"bench-{tag}", "default", "admin")
    pubs, fetches = [], []
    for i in range(sized(3, 1)):
        name = f"bench-{tag}-{i}"
        pubs.append(publish(server, token, files, name))
        fetches.append(fetch(server, token, f"{name}:testing", files))
        _forget(server, files, s3)  # the next publish uploads again
    return min(pubs), min(fetches)


def _forget(server: Server, files: list[tuple[str, str, Path]], s3: S3Server | None) -> None:
    """Make the store forget the blobs (a fresh publish), outside the timings."""
    for _kind, _filename, path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (server.home / "store" / "blobs" / "sha256" / digest[:2] / digest).unlink(missing_ok=True)
        if s3 is not None:
            s3.client().delete_object(Bucket=BUCKET, Key=f"bench/blobs/sha256/{digest[:2]}/{digest}")


def store_alone(s3: S3Server, files: list[tuple[str, str, Path]]) -> tuple[float, float]:
    """Best seconds of 3 for boto3 itself to put every file into the bucket and get it back (no imageci in the
    way): the ceiling any client of this store has on this machine."""
    from boto3.s3.transfer import TransferConfig

    client, puts, gets = s3.client(), [], []
    config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=2)
    for i in range(sized(3, 1)):
        t0 = time.monotonic()
        for _kind, filename, path in files:
            client.upload_file(str(path), BUCKET, f"alone/{i}/{filename}", Config=config)
        puts.append(time.monotonic() - t0)
        t0 = time.monotonic()
        for _kind, filename, _path in files:
            body = client.get_object(Bucket=BUCKET, Key=f"alone/{i}/{filename}")["Body"]
            for _chunk in body.iter_chunks(1 << 20):
                pass
        gets.append(time.monotonic() - t0)
    return min(puts), min(gets)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="imageci-bench-objstore-"))
    try:
        files = artifacts(tmp)
        size = sum(p.stat().st_size for _k, _f, p in files) / 1e6
        with seaweedfs(tmp / "seaweedfs") as s3:
            for local in start_server(tmp / "local", None, seed=False):
                lp, lf = measure(local, files, "local")
            for remote in start_server(tmp / "s3", None, seed=False, **s3.env("bench")):
                sp, sf = measure(remote, files, "s3", s3)
            for signed in start_server(tmp / "presigned", None, seed=False, IMAGECI_STORE_PRESIGN="300",
                                       **s3.env("bench")):
                _pp, pf = measure(signed, files, "presigned", s3)
            ap, ag = store_alone(s3, files)
        local_rate, s3_rate = 2 * size / (lp + lf), 2 * size / (sp + sf)
        print(f"{size:.1f} MB in {len(files)} artifact(s); best of 3")
        print(f"the store alone (boto3 put and get, no imageci): put {size / ap:.0f} MB/s, get {size / ag:.0f} MB/s; "
              f"as a ratio to the local directory, at most {(lp + lf) / (ap + ag):.2f}")
        print(f"fetch with presigned URLs (IMAGECI_STORE_PRESIGN; the client fetches from the store itself): "
              f"{size / pf:.0f} MB/s")
        print(f"object store: publish+fetch {s3_rate:.0f} MB/s vs {local_rate:.0f} MB/s local directory "
              f"(ratio {s3_rate / local_rate:.2f}); publish {size / sp:.0f} vs {size / lp:.0f} MB/s, "
              f"fetch {size / sf:.0f} vs {size / lf:.0f} MB/s")
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
