"""Benchmark: importing a multi-layer OCI image, side by side with umoci.

The image: the example Debian rootfs (built once through the shared build
cache) as a base layer, plus two layers on top that a second tool would make:
one replacing /usr/share/doc with an opaque directory and removing files, one
adding a few thousand small files. Written by hand to the image-spec (gzip
layers), so both tools read the same bytes.

- imageci: `imageci import NAME oci:DIR:v1` — verify every blob, flatten the
  layers (whiteouts, opaque directories) into one tar, hash it, unpack it once
  through the hostile-entry checks, store it, register the version.
- umoci: `umoci raw unpack --image DIR:v1 ROOTFS` — verify and unpack the
  layers onto a directory.

Both end with the verified root filesystem on disk. Best of 3 each, in the
same run. Last line: `import: imageci X s, umoci Y s (ratio umoci/imageci R)`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import built_example, fresh_home, sized  # noqa: E402


def _layer(entries: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_image(layout: Path, base: Path) -> None:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    plain = [base.read_bytes(),
             _layer([("usr/share/doc", None), ("usr/share/doc/.wh..wh..opq", b""),
                     ("usr/share/doc/README", b"docs removed\n"), ("etc/.wh.issue.net", b"")]),
             _layer([("opt", None), ("opt/app", None)]
                    + [(f"opt/app/f{i:05d}", os.urandom(512)) for i in range(sized(5000, 50))])]

    def put(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(b).hexdigest()}" for b in plain]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(json.dumps(config).encode())},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            **put(gzip.compress(b, compresslevel=1, mtime=0))} for b in plain]}
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                **put(json.dumps(manifest).encode()),
                                                "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    (layout / "index.json").write_text(json.dumps(index))


def main() -> None:
    if shutil.which("umoci") is None:
        raise SystemExit("umoci is not installed (scripts/host-setup.sh --test installs it)")
    settings, catalog, store = fresh_home("import")
    version = built_example(settings, catalog, store)
    catalog.close()
    work = Path(tempfile.mkdtemp(prefix="imageci-bench-import-"))
    write_image(work / "layout", store.path(version.digest))
    ours, theirs = [], []
    for n in range(sized(3, 1)):
        home = work / f"home-{n}"
        env = {**os.environ, "IMAGECI_HOME": str(home)}
        env.pop("IMAGECI_DB_URL", None)
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "imageci.cli", "import", "bench-app", f"oci:{work / 'layout'}:v1"],
                              env=env, capture_output=True, text=True)
        ours.append(time.monotonic() - t0)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        t0 = time.monotonic()
        subprocess.run(["umoci", "raw", "unpack", "--image", f"{work / 'layout'}:v1", str(work / f"umoci-{n}")],
                       check=True, capture_output=True)
        theirs.append(time.monotonic() - t0)
    print(f"image: {len(json.loads((work / 'layout' / 'index.json').read_text())['manifests'])} manifest, 3 layers "
          f"(the example rootfs, an opaque directory and whiteouts, 5000 files)")
    print(f"imageci import: {', '.join(f'{t:.2f}' for t in ours)} s; umoci raw unpack: "
          f"{', '.join(f'{t:.2f}' for t in theirs)} s")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(settings.home, ignore_errors=True)
    print(f"import: imageci {min(ours):.2f} s, umoci {min(theirs):.2f} s (ratio umoci/imageci "
          f"{min(theirs) / min(ours):.2f})")


if __name__ == "__main__":
    main()
