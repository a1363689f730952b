"""`imageci import`: images built elsewhere. Layers are flattened as another tool
(umoci) unpacks them, an image buildah built imports the same from every
transport (an OCI layout, an OCI archive, a docker archive, a real registry) and
its tests run; damaged and hostile images are refused with nothing recorded."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imageci.build.ocisource import parse_source, read_layout
from imageci.formats.layers import DamagedImageError, Layer, flatten
from imageci.store.models import OCI_CONFIG, Version
from imageci.supply.packages import canonical_purl

from conftest import Env, docker_registry, require_tool, syft_purls, write_suite

pytestmark = pytest.mark.root


@dataclass
class E:
    """A tar entry: a file (data), a directory, a symlink or hard link (link), or a whiteout."""

    name: str
    data: bytes | None = None
    link: str | None = None
    hard: bool = False
    mode: int = 0o644
    uid: int = 0


def _tar(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mtime, info.uid, info.gid, info.mode = 1_700_000_000, e.uid, e.uid, e.mode
            if e.link is not None:
                info.type = tarfile.LNKTYPE if e.hard else tarfile.SYMTYPE
                info.linkname = e.link
                tar.addfile(info)
            elif e.data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def write_layout(root: Path, layers: list[bytes], *, compress: str = "gzip", tag: str = "v1",
                 runtime: dict[str, object] | None = None, architecture: str = "amd64") -> Path:
    """An OCI image layout, written by hand to the image-spec (so tests control every byte)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    packed = {"gzip": lambda b: gzip.compress(b, mtime=0), "zstd": _zstd, "none": lambda b: b}[compress]
    suffix = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[compress]
    config = {"architecture": architecture, "os": "linux", "config": runtime or {"Env": ["PATH=/usr/bin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(b).hexdigest()}" for b in layers]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **put(json.dumps(config).encode())},
                "layers": [{"mediaType": f"application/vnd.oci.image.layer.v1.tar{suffix}", **put(packed(b))}
                           for b in layers]}
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                **put(json.dumps(manifest).encode()),
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (root / "index.json").write_text(json.dumps(index))
    return root


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry below ``root``: (type, mode, content hash or link target); hard links as files."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", 0, os.readlink(path))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            found[rel] = ("node", stat.S_IFMT(st.st_mode), f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
        else:
            found[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def _flat(layout: Path, tag: str = "v1") -> bytes:
    image = read_layout(layout, tag, "amd64")
    out = io.BytesIO()
    flatten(image.layers, out)
    return out.getvalue()


def _extract(data: bytes, dest: Path) -> Path:
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="fully_trusted", numeric_owner=True)
    return dest


# Layer 1: a base; layer 2 removes a file, makes /opt/app opaque (keeping its own new file), overwrites
# the file a hard link shares, replaces a directory with a file and whites out something absent; layer 3
# removes a whole directory and re-creates a file under a removed one.
STACK = [
    [E("etc"), E("etc/motd", b"one\n"), E("etc/removed", b"gone\n"), E("opt"), E("opt/app"),
     E("opt/app/old"), E("opt/app/old/file", b"old\n"), E("opt/app/config", b"old config\n"),
     E("data"), E("data/file", b"first content\n", mode=0o600), E("data/link", link="data/file", hard=True),
     E("data/same", link="data/file", hard=True), E("was-dir"), E("was-dir/child", b"child\n"),
     E("usr"), E("usr/share"), E("usr/share/doc"), E("usr/share/doc/pkg"), E("usr/share/doc/pkg/README", b"r\n"),
     E("bin"), E("bin/tool", b"#!/bin/sh\n", mode=0o4755), E("bin/sh", link="tool")],
    [E("etc"), E("etc/.wh.removed", b""), E("etc/motd", b"two\n"), E("opt/app"), E("opt/app/.wh..wh..opq", b""),
     E("opt/app/new", b"new\n"), E("data/file", b"second content\n"), E("was-dir", b"now a file\n"),
     E("etc/.wh.never-there", b"")],
    [E("usr/share/.wh.doc", b""), E("usr/share/doc-new"), E("usr/share/doc-new/x", b"x\n")],
]


def test_layers_flatten_as_umoci_unpacks_them(tmp_path: Path) -> None:
    require_tool(shutil.which("umoci") is not None, "umoci")
    layout = write_layout(tmp_path / "layout", [_tar(layer) for layer in STACK])
    ours = tree(_extract(_flat(layout), tmp_path / "ours"))
    done = subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:v1", str(tmp_path / "umoci")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ours == tree(tmp_path / "umoci")
    # and what that means, spelled out
    assert "etc/removed" not in ours and ours["etc/motd"][2] == hashlib.sha256(b"two\n").hexdigest()
    assert sorted(p for p in ours if p.startswith("opt/app/")) == ["opt/app/new"]
    assert ours["data/link"][2] == hashlib.sha256(b"first content\n").hexdigest()  # the link kept its content
    assert ours["data/file"][2] == hashlib.sha256(b"second content\n").hexdigest()
    assert ours["was-dir"][0] == "file" and "was-dir/child" not in ours
    assert not any(p.startswith("usr/share/doc/") for p in ours) and "usr/share/doc-new/x" in ours
    assert ours["bin/tool"][1] == 0o4755 and ours["bin/sh"] == ("link", 0, "tool")
    assert not any(".wh." in p for p in ours)


def test_the_flattened_bytes_do_not_depend_on_the_compression(tmp_path: Path) -> None:
    layers = [_tar(layer) for layer in STACK]
    flat = {c: _flat(write_layout(tmp_path / c, layers, compress=c)) for c in ("gzip", "zstd", "none")}
    assert flat["gzip"] == flat["zstd"] == flat["none"]
    with tarfile.open(fileobj=io.BytesIO(flat["gzip"])) as tar:  # hard links still linked where they can be
        members = {m.name: m for m in tar}
    assert members["data/same"].islnk() is False  # its target changed above it: a file with the old content
    assert members["bin/sh"].issym()


def test_damaged_layers_are_refused(tmp_path: Path) -> None:
    layers = [_tar(layer) for layer in STACK[:2]]
    layout = write_layout(tmp_path / "layout", layers)
    image = read_layout(layout, "v1", "amd64")
    blob = image.layers[1].path
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DamagedImageError, match="not a readable tar stream|hash"):
        flatten(image.layers, io.BytesIO())
    wrong = [Layer(layer.path, layer.digest, "0" * 64) for layer in read_layout(
        write_layout(tmp_path / "again", layers), "v1", "amd64").layers]
    with pytest.raises(DamagedImageError, match="diff id"):
        flatten(wrong, io.BytesIO())


def _import(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return env.cli("import", *args)


def _leftovers(env: Env) -> list[Path]:
    return [p for p in (env.settings.store_dir / "tmp").iterdir()] + list(env.settings.tmp_dir.glob("build-*"))


@pytest.mark.parametrize("entries, why", [
    ([E("../../escape", b"x")], "contains '..'"),
    ([E("/etc/passwd", b"x")], "absolute path"),
    ([E("up", link="/"), E("up/etc/evil", b"x")], "resolves outside"),
    ([E("hl", link="../../etc/shadow", hard=True)], "contains '..'|points outside|hard link"),
])
def test_hostile_images_are_refused_and_nothing_is_recorded(env: Env, tmp_path: Path, entries: list[E],
                                                            why: str) -> None:
    layout = write_layout(tmp_path / "layout", [_tar([E("etc"), E("etc/ok", b"ok")]), _tar(entries)])
    tarball = tmp_path / "rootfs.tar.gz"
    tarball.write_bytes(gzip.compress(_tar([E("etc"), *entries])))
    for source in (f"oci:{layout}:v1", str(tarball)):
        res = _import(env, "hostile", source)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "refusing" in res.stderr and any(w in res.stderr for w in why.split("|")), res.stderr
        assert "Traceback" not in res.stderr
    assert env.catalog.versions("hostile") == []
    assert _leftovers(env) == []
    assert not any(env.settings.rootfs_cache.iterdir()) if env.settings.rootfs_cache.exists() else True


def test_bad_sources_get_a_clear_error(env: Env, tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "layout", [_tar([E("etc")])])
    cases = {
        ("x", str(tmp_path / "missing.tar")): "no such file",
        ("x", f"oci:{layout}:nope"): "no image tagged 'nope' (tags: v1)",
        ("x", str(tmp_path)): "not an OCI image layout",
        ("Bad_Name", f"oci:{layout}:v1"): "bad image name",
        ("x", f"oci-archive:{tmp_path / 'missing.tar'}"): "no such file",
        ("x", "docker://"): "bad registry reference",
    }
    for (name, source), message in cases.items():
        res = _import(env, name, source)
        assert res.returncode == 2 and message in res.stderr, (source, res.stderr)
    arm = write_layout(tmp_path / "arm", [_tar([E("etc")])], architecture="arm64")
    res = _import(env, "x", f"oci:{arm}:v1", "--arch", "amd64")
    assert res.returncode == 2 and "is a arm64 image, not amd64" in res.stderr
    assert env.catalog.versions("x") == []


def test_a_tarball_imports_once_and_keeps_its_suite(env: Env, tmp_path: Path) -> None:
    data = _tar([E("etc"), E("etc/os-release", b"ID=imported\n")])
    (tmp_path / "rootfs.tar.zst").write_bytes(_zstd(data))
    (tmp_path / "rootfs.tar").write_bytes(data)
    suite = write_suite(tmp_path / "suite", {"t": "#!/bin/sh\ntrue\n"})
    first = _import(env, "plain", str(tmp_path / "rootfs.tar.zst"), "--suite", str(suite))
    assert first.returncode == 0 and "imported plain@" in first.stdout, first.stderr
    again = _import(env, "plain", str(tmp_path / "rootfs.tar"))
    assert again.returncode == 0 and "already imported" in again.stdout
    [v] = env.catalog.versions("plain")
    assert v.digest == hashlib.sha256(data).hexdigest() and v.state == "testing"
    assert {a.kind for a in v.artifacts} == {"rootfs", OCI_CONFIG, "suite", "lxd-metadata", "incus-metadata",
                                             "squashfs", "bom", "file-index"}
    assert json.loads(v.build_info)["transport"] == "tarball"


# ---- an image another tool built, from every transport ------------------------------------------------


@pytest.fixture(scope="module")
def buildah_image(image_env: tuple[Env, Version], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two layers buildah commits on top of the example Debian rootfs: the second removes a file,
    empties /usr/share/doc and re-creates it (an opaque directory) and adds an app; the config has env,
    entrypoint, cmd, user, working directory and labels. An OCI layout, tag v1."""
    require_tool(shutil.which("buildah") is not None, "buildah")
    e, version = image_env
    work = tmp_path_factory.mktemp("buildah")
    buildah = ["buildah", "--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver",
               "overlay"]

    def run(*args: str) -> str:
        done = subprocess.run([*buildah, *args], capture_output=True, text=True)
        assert done.returncode == 0, f"buildah {args}: {done.stderr}"
        return done.stdout.strip()

    try:
        base = run("from", "scratch")
        run("add", base, str(e.store.path(version.digest)), "/")
        run("config", "--env", "APP_MODE=production", "--entrypoint", '["/opt/app/run"]', "--cmd", "--serve",
            "--user", "nobody", "--workingdir", "/opt/app", "--label", "org.example.team=infra", base)
        run("commit", "-q", base, "imported-base")
        top = run("from", "imported-base")
        root = Path(run("mount", top))
        (root / "etc" / "issue.net").unlink()
        shutil.rmtree(root / "usr" / "share" / "doc")
        (root / "usr" / "share" / "doc").mkdir()
        (root / "usr" / "share" / "doc" / "ONLY-THIS").write_text("opaque\n")
        (root / "opt" / "app").mkdir(parents=True)
        (root / "opt" / "app" / "run").write_text("#!/bin/sh\necho app\n")
        (root / "opt" / "app" / "run").chmod(0o755)
        run("umount", top)
        run("commit", "-q", top, "imported-app")
        run("push", "imported-app", f"oci:{work / 'layout'}:v1")
        yield work / "layout"
    finally:
        subprocess.run([*buildah, "rm", "--all"], capture_output=True)
        subprocess.run(["umount", "-R", str(work / "storage" / "overlay")], capture_output=True)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with docker_registry(tmp_path) as address:
        yield address


@pytest.mark.slow
def test_an_image_buildah_built_imports_from_every_transport_and_its_tests_run(
        buildah_image: Path, registry: str, env: Env, tmp_path: Path) -> None:
    copies = {"oci-archive": f"oci-archive:{tmp_path / 'app.oci.tar'}:v1",
              "docker-archive": f"docker-archive:{tmp_path / 'app.docker.tar'}",
              "docker": f"docker://{registry}/team/app:v1"}
    for target in copies.values():
        done = subprocess.run(["skopeo", "copy", "--quiet", "--insecure-policy", "--dest-tls-verify=false",
                               f"oci:{buildah_image}:v1", target], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    suite = write_suite(tmp_path / "suite", {
        "whiteouts": "#!/bin/sh\nset -e\ntest ! -e /etc/issue.net\ntest \"$(ls /usr/share/doc)\" = ONLY-THIS\n",
        "app": "#!/bin/sh\nset -e\ntest \"$(/opt/app/run)\" = app\n. /etc/os-release\ntest \"$ID\" = debian\n"})
    first = env.cli("import", "team-app", f"oci:{buildah_image}:v1", "--suite", str(suite))
    assert first.returncode == 0 and "2 layer(s) flattened" in first.stdout, first.stdout + first.stderr
    for source in copies.values():
        again = env.cli("import", "team-app", source, "--no-tls-verify")
        assert again.returncode == 0 and "already imported" in again.stdout, (source, again.stdout, again.stderr)
    [v] = env.catalog.versions("team-app")
    info = json.loads(v.build_info)
    assert info["transport"] == "oci" and len(info["layers"]) == 2
    # its BOM, read at import, names the packages syft finds in the same OCI layout
    bom = env.cli("bom", "team-app:testing", "--format", "json")
    assert bom.returncode == 0, bom.stderr
    assert {canonical_purl(p["purl"]) for p in json.loads(bom.stdout)["packages"]} == syft_purls(
        f"oci-dir:{buildah_image}")
    # the flattened tree is the one umoci unpacks from the same layout
    require_tool(shutil.which("umoci") is not None, "umoci")
    done = subprocess.run(["umoci", "raw", "unpack", "--image", f"{buildah_image}:v1", str(tmp_path / "umoci")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert tree(_extract(env.store.path(v.digest).read_bytes(), tmp_path / "ours")) == tree(tmp_path / "umoci")
    # the config buildah wrote is what structure tests see
    (tmp_path / "meta.yaml").write_text(
        "schemaVersion: 2.0.0\nmetadataTest:\n  envVars:\n    - key: APP_MODE\n      value: production\n"
        "  entrypoint: [/opt/app/run]\n  cmd: [--serve]\n  user: nobody\n  workdir: /opt/app\n"
        "  labels:\n    - key: org.example.team\n      value: infra\n")
    res = env.cli("test", "team-app:testing", "--structure", str(tmp_path / "meta.yaml"), "--suite", str(suite))
    assert res.returncode == 0, res.stdout + res.stderr
    verdicts = {a.test_id: a.verdict for a in env.catalog.attempts(v.digest)}
    assert verdicts == {"whiteouts": "pass", "app": "pass", "cst:metadata": "pass"}, verdicts
    gate = env.cli("gate", "team-app:testing")  # with a suite, an imported image has the default gate
    assert gate.returncode == 0, gate.stdout + gate.stderr
    (tmp_path / "wrong.yaml").write_text("schemaVersion: 2.0.0\nmetadataTest:\n  user: root\n")
    wrong = env.cli("test", "team-app:testing", "--structure", str(tmp_path / "wrong.yaml"))
    assert wrong.returncode == 1 and "nobody" in wrong.stdout, wrong.stdout + wrong.stderr


def test_parse_source_names_every_transport() -> None:
    assert str(parse_source("docker://r.example/app:1")) == "docker://r.example/app:1"
    assert parse_source("oci:/srv/layout:v2").tag == "v2"
    assert parse_source("oci:/srv/lay:out/dir").tag is None
    assert parse_source("docker-archive:/tmp/x.tar:app:1").location == "/tmp/x.tar:app:1"
