"""What is in an image and what changed (issue 14, part 1): BOMs read from dpkg (status and
distroless status.d), apk and rpm databases without running the image, proved against the real
syft (the same purls); SPDX 2.3 and CycloneDX 1.6 documents validated by spdx-tools and
cyclonedx-python-lib; `imageci diff` of two versions; damaged databases refused by file:line."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from imageci.errors import UsageError
from imageci.rootpath import read_text, resolve
from imageci.supply.diff import package_changes
from imageci.supply.extract import extract_bom
from imageci.supply.licenses import declared, spdx_id
from imageci.supply.packages import Bom, Package, canonical_purl
from imageci.supply.records import DamagedDatabase, paragraphs

from conftest import EXAMPLE, REPO, Env, require_tool

DATA = REPO / "tests" / "data" / "bom"


def _purls(doc: dict[str, object]) -> set[str]:
    return {canonical_purl(p["purl"]) for p in doc["packages"]}  # type: ignore[attr-defined, index]


def _unpack(tar: Path, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(dest)], check=True)
    return dest


# ---- the example image, built: BOM, SPDX, CycloneDX ------------------------------------------------

@pytest.mark.root
def test_a_built_image_has_its_bom_and_syft_finds_the_same_packages(env: Env, tmp_path: Path) -> None:
    from conftest import syft_purls

    built = env.cli("build", str(EXAMPLE / "image.yaml"))
    assert built.returncode == 0, built.stdout + built.stderr
    [v] = env.catalog.versions("debian-bookworm-minimal")
    assert {"bom", "file-index"} <= {a.kind for a in v.artifacts}  # read at build time, stored with it
    ref = f"debian-bookworm-minimal@{v.serial}"
    done = env.cli("bom", ref, "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["digest"] == f"sha256:{v.digest}" and doc["distro"]["id"] == "debian"
    assert len(doc["packages"]) > 80
    by_name = {p["name"]: p for p in doc["packages"]}
    bash = by_name["bash"]
    assert bash["source"] == "bash" and bash["source_version"] != bash["version"]  # a binNMU: 5.2.15-2+b13
    assert "upstream=bash%40" in bash["purl"]
    assert "GPL-2+" in by_name["adduser"]["licenses"] and "public-domain" in by_name["tzdata"]["licenses"]
    assert "tzdata" in by_name and "ca-certificates" in by_name
    rootfs = _unpack(env.store.path(v.digest), tmp_path / "rootfs")
    assert _purls(doc) == syft_purls(f"dir:{rootfs}")

    # SPDX 2.3: read back and validated by spdx-tools (and its CLI), the same purls
    spdx_file = tmp_path / "image.spdx.json"
    assert env.cli("bom", ref, "--format", "spdx", "--output", str(spdx_file)).returncode == 0
    parsed = parse_file(str(spdx_file))
    assert validate_full_spdx_document(parsed) == []
    pyspdxtools = shutil.which("pyspdxtools") or str(Path(__import__("sys").executable).parent / "pyspdxtools")
    assert subprocess.run([pyspdxtools, "-i", str(spdx_file)], capture_output=True).returncode == 0
    refs = {canonical_purl(r.locator) for p in parsed.packages for r in p.external_references}
    assert refs == _purls(doc)
    declared_adduser = next(p for p in parsed.packages if p.name == "adduser").license_declared
    assert str(declared_adduser) == "GPL-2.0-or-later"
    image = next(p for p in parsed.packages if p.spdx_id == "SPDXRef-Image")
    assert image.checksums[0].value == v.digest
    again = env.cli("bom", ref, "--format", "spdx")
    assert json.loads(again.stdout) == json.loads(spdx_file.read_text())  # the same version, the same document

    # CycloneDX 1.6: validated against the schema, the same purls
    cdx = env.cli("bom", ref, "--format", "cyclonedx")
    assert cdx.returncode == 0, cdx.stderr
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx.stdout) is None
    cdx_doc = json.loads(cdx.stdout)
    assert cdx_doc["specVersion"] == "1.6" and cdx_doc["metadata"]["component"]["type"] == "container"
    assert {canonical_purl(c["purl"]) for c in cdx_doc["components"] if "purl" in c} == _purls(doc)

    table = env.cli("bom", ref)
    assert table.returncode == 0 and "pkg:deb/debian/tzdata@" in table.stdout and "packages" in table.stdout


# ---- other package databases, against syft ----------------------------------------------------------

def _rpm_root(tmp_path: Path) -> Path:
    require_tool(shutil.which("rpmbuild") is not None and shutil.which("rpm") is not None, "rpm")
    # rpmbuild's %install scripts take paths unquoted: its top directory must have no spaces (a test home may)
    top = Path(tempfile.mkdtemp(prefix="imageci-rpmbuild-"))
    try:
        done = subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", str(DATA / "imageci-hello.spec")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        [built] = list((top / "RPMS").rglob("*.rpm"))
        rpm_file = shutil.copy(built, tmp_path / built.name)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    root = tmp_path / "rpm-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=fedora\nVERSION_ID=40\nPRETTY_NAME="Fedora Linux 40"\n')
    done = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts", "-i",
                           str(rpm_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root


def test_apk_rpm_and_distroless_databases_give_syfts_purls(tmp_path: Path, image_env: tuple[Env, object]) -> None:
    from conftest import syft_purls

    apk = tmp_path / "apk-root"
    (apk / "lib" / "apk" / "db").mkdir(parents=True)
    (apk / "etc").mkdir()
    shutil.copy(DATA / "apk-installed", apk / "lib" / "apk" / "db" / "installed")
    (apk / "etc" / "os-release").write_text('ID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n')
    bom = extract_bom(apk)
    assert [(p.name, p.source, p.licenses) for p in bom.packages] == [
        ("musl", "musl", ["MIT"]), ("busybox", "busybox", ["GPL-2.0-only"]),
        ("ssl_client", "busybox", ["GPL-2.0-only"])]
    assert {canonical_purl(p) for p in bom.purls()} == syft_purls(f"dir:{apk}")

    rpm_root = _rpm_root(tmp_path)
    before = sorted(p.name for p in (rpm_root / "var" / "lib" / "rpm").iterdir())
    bom = extract_bom(rpm_root)
    assert [(p.name, p.version, p.licenses) for p in bom.packages] == [("imageci-hello", "1:1.2-3", ["MIT"])]
    assert {canonical_purl(p) for p in bom.purls()} == syft_purls(f"dir:{rpm_root}")
    assert sorted(p.name for p in (rpm_root / "var" / "lib" / "rpm").iterdir()) == before  # the image is not written

    # distroless: one file per package in status.d, no Status field, no status file
    env, version = image_env
    status = read_text(_unpack(env.store.path(version.digest), tmp_path / "debian"), "var/lib/dpkg/status") or ""  # type: ignore[attr-defined]
    distroless = tmp_path / "distroless"
    (distroless / "var" / "lib" / "dpkg" / "status.d").mkdir(parents=True)
    (distroless / "etc").mkdir()
    shutil.copy(tmp_path / "debian" / "etc" / "os-release", distroless / "etc" / "os-release")
    for record in paragraphs(status, "status"):
        if record.get("Package") in ("base-files", "tzdata", "libc6"):
            text = "".join(f"{k}: {v}\n".replace("\n", "\n ").rstrip(" ") for k, v in record.fields.items()
                           if k != "Status")
            (distroless / "var" / "lib" / "dpkg" / "status.d" / record.get("Package")).write_text(text)
    bom = extract_bom(distroless)
    assert sorted(p.name for p in bom.packages) == ["base-files", "libc6", "tzdata"]
    assert {canonical_purl(p) for p in bom.purls()} == syft_purls(f"dir:{distroless}")


# ---- damaged databases: refused, naming file:line; nothing half-read -------------------------------

def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(body), 0o644, 1760000000
            tar.addfile(info, io.BytesIO(body))
    return path


GOOD = b"Package: hello\nStatus: install ok installed\nVersion: 2.10-3\nArchitecture: amd64\n\n"


@pytest.mark.parametrize(("status", "says"), [
    (GOOD + b"Package: broken\nStatus: install ok installed\nthis line is not a field\n",
     "/var/lib/dpkg/status:8: not a 'Field: value' line: 'this line is not a field' (in the record at "
     "/var/lib/dpkg/status:6, broken)"),
    (GOOD + b"Package: nover\nStatus: install ok installed\nArchitecture: amd64\n",
     "/var/lib/dpkg/status:6: a record without Version"),
    (GOOD + b"Package: badver\nStatus: install ok installed\nVersion: not a version!\n",
     "/var/lib/dpkg/status:6: badver: 'not a version!' is not a Debian version"),
    (b" continuation first\n" + GOOD, "/var/lib/dpkg/status:1: a continuation line outside any field"),
    (GOOD + b"Package: odd\nStatus: installed\nVersion: 1.0\n", "/var/lib/dpkg/status:6: Status 'installed'"),
])
def test_a_damaged_dpkg_status_is_refused_with_its_line(env: Env, tmp_path: Path, status: bytes, says: str) -> None:
    tar = _tarball(tmp_path / "rootfs.tar", {"etc/os-release": b"ID=debian\nVERSION_ID=12\n",
                                              "var/lib/dpkg/status": status})
    imported = env.cli("import", "damaged", str(tar))
    assert imported.returncode == 0, imported.stderr  # the version is kept: its bytes are what they are
    assert "no BOM" in imported.stderr and says in imported.stderr, imported.stderr
    [v] = env.catalog.versions("damaged")
    assert "bom" not in {a.kind for a in v.artifacts}  # nothing half-read was stored
    done = env.cli("bom", "damaged:testing", "--format", "json")
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""


def test_a_config_files_package_is_not_installed_and_an_unreadable_rpm_db_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var" / "lib" / "dpkg").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "status").write_bytes(
        GOOD + b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
               b"Package: held\nStatus: hold ok installed\nVersion: 1:0.9~rc1\nSource: held-src (1:0.9~rc1-1)\n")
    bom = extract_bom(root)
    assert [(p.name, p.source, p.source_version) for p in bom.packages] == [
        ("hello", "hello", "2.10-3"), ("held", "held-src", "1:0.9~rc1-1")]
    assert bom.distro is None and bom.packages[0].purl == "pkg:deb/debian/hello@2.10-3?arch=amd64"
    require_tool(shutil.which("rpm") is not None, "rpm")
    (root / "var" / "lib" / "rpm").mkdir()
    (root / "var" / "lib" / "rpm" / "rpmdb.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(DamagedDatabase, match="/var/lib/rpm: rpm cannot read this database"):
        extract_bom(root)
    assert isinstance(DamagedDatabase("x"), UsageError)


def test_links_in_the_image_resolve_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr" / "lib" / "os-release").write_text("ID=inside\n")
    (root / "etc" / "os-release").symlink_to("../usr/lib/os-release")
    assert read_text(root, "/etc/os-release") == "ID=inside\n"
    (root / "etc" / "os-release").unlink()
    (root / "etc" / "os-release").symlink_to("/usr/lib/os-release")  # absolute: the image's /usr, not ours
    assert resolve(root, "etc/os-release") == root / "usr" / "lib" / "os-release"
    (root / "etc" / "shadow-link").symlink_to("/etc/shadow")  # the host's would exist; the image's does not
    assert read_text(root, "etc/shadow-link") is None
    (root / "var").symlink_to("/var")  # a directory link out: followed inside, where nothing is
    assert read_text(root, "var/lib/dpkg/status") is None
    (root / "loop").symlink_to("loop")
    assert resolve(root, "loop/x") is None
    (root / "escape").symlink_to("../../../../etc")
    assert resolve(root, "escape/passwd") is None  # .. stops at the image's root: /etc/passwd there is absent


def test_licenses_from_copyright_files_and_their_spdx_ids() -> None:
    machine_readable = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
                        "Files: *\nCopyright: 2020 A\nLicense: GPL-2+ or Artistic\n\n"
                        "Files: lib/*\nLicense: LGPL-2.1+ with OpenSSL exception\n\n"
                        "License: GPL-2+\n text\n")
    assert declared(machine_readable) == ["GPL-2+", "Artistic", "LGPL-2.1+"]
    assert declared("Copyright 1999.\nSee /usr/share/common-licenses/GPL-3 for the text.\n") == ["GPL-3"]
    assert [spdx_id(n) for n in ("GPL-2+", "GPL-2", "LGPL-2.1+", "Expat", "BSD-3-clause", "Apache-2.0",
                                 "public-domain", "GFDL-NIV-1.3")] == [
        "GPL-2.0-or-later", "GPL-2.0-only", "LGPL-2.1-or-later", "MIT", "BSD-3-Clause", "Apache-2.0", None, None]


# ---- diff -----------------------------------------------------------------------------------------

def _pkg(name: str, version: str, kind: str = "deb") -> Package:
    return Package(type=kind, name=name, version=version, arch="amd64", purl=f"pkg:{kind}/x/{name}@{version}",
                   found_in="/var/lib/dpkg/status")


def test_package_changes_use_each_managers_version_order() -> None:
    a = Bom(packages=[_pkg("lib", "1.9"), _pkg("rc", "1.0"), _pkg("epoch", "2.0"), _pkg("gone", "1"),
                      _pkg("same", "1.0"), _pkg("r", "1.9-1", "rpm"), _pkg("alp", "1.2-r9", "apk")])
    b = Bom(packages=[_pkg("lib", "1.10"), _pkg("rc", "1.0~rc1"), _pkg("epoch", "1:1.0"), _pkg("new", "0.1"),
                      _pkg("same", "1.0"), _pkg("r", "1.10-1", "rpm"), _pkg("alp", "1.2-r10", "apk")])
    changes = {(c.name, c.change) for c in package_changes(a, b)}
    assert changes == {("lib", "upgraded"), ("rc", "downgraded"), ("epoch", "upgraded"), ("gone", "removed"),
                       ("new", "added"), ("r", "upgraded"), ("alp", "upgraded")}


@pytest.mark.root
def test_diff_names_package_and_file_changes(env: Env, tmp_path: Path) -> None:
    first = env.cli("build", str(EXAMPLE / "image.yaml"))
    assert first.returncode == 0, first.stderr
    definition = (EXAMPLE / "image.yaml").read_text()
    changed = definition.replace("  - ca-certificates\n", "  - ca-certificates\n  - less\n").replace(
        "      IMAGE_FAMILY=debian\n", "      IMAGE_FAMILY=debian\n      IMAGE_FLAVOUR=with-less\n").replace(
        "  - run: apt-get clean", "  - run: echo 12.99 > /etc/debian_version && mkdir -p /opt/site && "
        "echo hello > /opt/site/motd\n  - run: apt-get clean")
    assert changed.count("less") == 2 and "debian_version" in changed
    variant = tmp_path / "variant"
    shutil.copytree(EXAMPLE, variant)
    (variant / "image.yaml").write_text(changed)
    second = env.cli("build", str(variant / "image.yaml"))
    assert second.returncode == 0, second.stdout + second.stderr
    old, new = env.catalog.versions("debian-bookworm-minimal")
    a, b = f"debian-bookworm-minimal@{old.serial}", f"debian-bookworm-minimal@{new.serial}"
    done = env.cli("diff", a, b, "--json")
    assert done.returncode == 0, done.stderr
    diff = json.loads(done.stdout)
    assert diff["before"] == a and diff["after"] == b
    assert [(p["name"], p["change"]) for p in diff["packages"]] == [("less", "added")]
    files = {f["path"]: f for f in diff["files"]}
    assert files["/etc/imageci-release"]["change"] == "changed"
    assert files["/etc/imageci-release"]["after"]["size"] > files["/etc/imageci-release"]["before"]["size"]
    assert files["/etc/debian_version"]["after"]["owner"] == "base-files"  # a package's file changed outside it
    assert files["/opt/site/motd"]["change"] == "added" and files["/opt/site"]["change"] == "added"
    assert not any(p.startswith("/usr/bin/less") for p in files)  # less's own files come with the package
    assert not any(p.startswith("/var/lib/dpkg/") for p in files)
    assert diff["files_by_packages"] > 5
    back = json.loads(env.cli("diff", b, a, "--json").stdout)
    assert [(p["name"], p["change"]) for p in back["packages"]] == [("less", "removed")]
    assert back["files"] and {f["path"] for f in back["files"]} == set(files)
    text = env.cli("diff", a, b)
    assert "package + less" in text.stdout and "/etc/debian_version (file of base-files)" in text.stdout, text.stdout
    same = env.cli("diff", a, a)
    assert same.returncode == 0 and "no package or file changed" in same.stdout
    unknown = env.cli("diff", a, "debian-bookworm-minimal@19990101.001")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
