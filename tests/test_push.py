"""`imageci push`: a version into a real registry (Debian's docker-registry on
127.0.0.1) and OCI layouts through skopeo, proved by pulling it back with
skopeo: the layer is the tested rootfs, digest for digest; the annotations say
what the image is; a refusal records nothing."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from imageci.exitcodes import ExitCode
from imageci.store.models import Version
from imageci.testbeds.podmanstore import storage_conf

from conftest import Env, busybox_rootfs, docker_registry


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def test_a_pushed_version_pulls_back_as_the_tested_bytes(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    ref = f"{version.product.name}@{version.serial}"
    with docker_registry(tmp_path) as registry:
        done = e.cli("push", ref, f"docker://{registry}/team/base:v1", "--no-tls-verify", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        pushed = json.loads(done.stdout)
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry}/team/base:v1").stdout
        manifest = json.loads(raw)
        assert pushed["manifest_digest"] == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
        assert [layer["digest"] for layer in manifest["layers"]] == [f"sha256:{version.digest}"]
        info = json.loads(version.build_info or "{}")
        oci = "org.opencontainers.image"
        created = datetime.fromtimestamp(info["source_date_epoch"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert manifest["annotations"] == {
            f"{oci}.created": created, f"{oci}.version": version.serial, f"{oci}.title": version.product.name,
            f"{oci}.revision": version.input_hash, f"{oci}.source": info["mirror"]["url"],
            "io.imageci.digest": f"sha256:{version.digest}", "io.imageci.image": ref}
        # pulled back, the layer's bytes are the tested rootfs
        skopeo("copy", "--quiet", "--insecure-policy", "--preserve-digests", "--src-tls-verify=false",
               f"docker://{registry}/team/base:v1",
               f"oci:{tmp_path / 'pulled'}:v1")
        blob = tmp_path / "pulled" / "blobs" / "sha256" / version.digest
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == version.digest
        assert blob.read_bytes() == e.store.path(version.digest).read_bytes()
        # podman pulls it (into a storage of this test's own): its one layer is the tested rootfs
        conf = tmp_path / "storage.conf"
        conf.write_text(storage_conf(tmp_path / "podman", tmp_path / "podman-run"))
        penv = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
        pulled = subprocess.run(["podman", "pull", "-q", "--tls-verify=false", f"docker://{registry}/team/base:v1"],
                                capture_output=True, text=True, env=penv, timeout=600)
        assert pulled.returncode == 0, pulled.stderr
        layers = subprocess.run(["podman", "image", "inspect", "--format", "{{json .RootFS.Layers}}",
                                 pulled.stdout.strip()], capture_output=True, text=True, env=penv, check=True)
        assert json.loads(layers.stdout) == [f"sha256:{version.digest}"]
        subprocess.run(["podman", "rmi", "-a", "-f"], capture_output=True, env=penv)
        # no tag: the serial is the tag
        done = e.cli("push", ref, f"docker://{registry}/team/base", "--no-tls-verify")
        assert done.returncode == 0, done.stdout + done.stderr
        tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry}/team/base").stdout)
        assert sorted(tags["Tags"]) == sorted(["v1", version.serial])
    archive = tmp_path / "out" / "base.oci.tar"
    done = e.cli("push", ref, f"oci-archive:{archive}:v2")
    assert done.returncode == 0, done.stdout + done.stderr
    inspected = json.loads(skopeo("inspect", f"oci-archive:{archive}:v2").stdout)
    assert inspected["Layers"] == [f"sha256:{version.digest}"]
    raw = json.loads(skopeo("inspect", "--raw", f"oci-archive:{archive}:v2").stdout)
    assert raw["annotations"]["io.imageci.digest"] == f"sha256:{version.digest}"
    trail = e.cli("events", ref).stdout
    assert f"pushed to docker://{registry}/team/base:v1" in trail
    assert f"pushed to oci-archive:{archive}:v2" in trail


def test_a_refused_push_exits_10_and_records_nothing(env: Env, tmp_path: Path) -> None:
    done = env.cli("import", "tiny", str(busybox_rootfs(tmp_path / "tiny.tar", "push")))
    assert done.returncode == 0, done.stdout + done.stderr
    [version] = env.catalog.versions("tiny")
    ref = f"tiny@{version.serial}"
    with docker_registry(tmp_path, refuse_anonymous=True) as registry:
        done = env.cli("push", ref, f"docker://{registry}/team/tiny:v1", "--no-tls-verify")
    assert done.returncode == ExitCode.PUSH_FAILED, done.stdout + done.stderr
    assert f"could not push to docker://{registry}/team/tiny:v1" in done.stderr
    assert "auth" in done.stderr.lower() and "Traceback" not in done.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    done = env.cli("push", ref, f"docker://127.0.0.1:{closed}/team/tiny:v1", "--no-tls-verify")
    assert done.returncode == ExitCode.PUSH_FAILED and "connection refused" in done.stderr.lower(), done.stderr
    for bad in ("ftp://example/x", "docker://no-repository", f"docker://127.0.0.1:{closed}/team/tiny@sha256:00"):
        done = env.cli("push", ref, bad)
        assert done.returncode == ExitCode.USAGE and "Traceback" not in done.stderr, (bad, done.stderr)
    done = env.cli("push", ref, f"docker://127.0.0.1:{closed}/x/y", "--authfile", str(tmp_path / "missing.json"))
    assert done.returncode == ExitCode.USAGE and "no such authentication file" in done.stderr
    assert "pushed" not in env.cli("events", ref).stdout
    assert env.catalog.pushes(version.id) == []
