"""Known vulnerabilities (issue 14, part 2): feeds imported from files in the real formats (the
Debian Security Tracker's JSON, OSV records), matched by source package and Debian version order,
`imageci vulns`, and the vulnerability part of the gate — what `gate` explains is what `promote`
decides; allowances expire."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pytest

from imageci.supply.packages import Bom, Distro, Package
from imageci.supply.vulnfeeds import BadFeed, read_feed
from imageci.supply.vulnmatch import Row, match

from conftest import EXAMPLE, REPO, Env

DATA = REPO / "tests" / "data" / "vulns"


def _deb(name: str, source: str, version: str) -> Package:
    return Package(type="deb", name=name, version=version, arch="amd64", source=source, source_version=version,
                   purl=f"pkg:deb/debian/{name}@{version}", found_in="/var/lib/dpkg/status")


BOOKWORM = Bom(distro=Distro(id="debian", version_id="12", codename="bookworm"), packages=[
    _deb("libc6", "glibc", "2.36-9+deb12u4"), _deb("libc-bin", "glibc", "2.36-9+deb12u4"),
    _deb("zlib1g", "zlib", "1:1.2.13.dfsg-1"), _deb("tar", "tar", "1.34+dfsg-1.2+deb12u1"),
    _deb("libsystemd0", "systemd", "252.22-1~deb12u1"), _deb("perl-base", "perl", "5.36.0-7+deb12u1"),
    _deb("sed", "sed", "4.9-1"), _deb("bash", "bash", "5.2.15-2+b2")])


def _rows(path: Path, feed: str) -> list[Row]:
    return [Row(r.vuln, " ".join(r.aliases), r.package, r.release, r.status, r.introduced, r.fixed, r.severity,
                r.description, feed) for r in read_feed(path).records]


def test_the_trackers_statuses_and_osv_ranges_match_by_debian_version_order() -> None:
    tracker = read_feed(DATA / "debian-tracker.json")
    assert tracker.format == "debian-tracker" and not tracker.warnings
    statuses = {(r.vuln, r.release): (r.status, r.fixed, r.severity) for r in tracker.records}
    assert statuses[("CVE-2099-0003", "bookworm")] == ("not-affected", None, "high")  # fixed_version "0"
    assert statuses[("CVE-2099-0004", "bookworm")] == ("open", None, "high")  # "high**": the marks dropped
    assert statuses[("CVE-2099-0006", "bookworm")] == ("undetermined", None, "unknown")
    found = {f.id: f for f in match(BOOKWORM, _rows(DATA / "debian-tracker.json", "debian-tracker"))}
    assert set(found) == {"CVE-2099-0001", "CVE-2099-0004", "CVE-2099-0005", "CVE-2099-0006"}
    glibc = found["CVE-2099-0001"]
    assert glibc.binaries == ["libc-bin", "libc6"] and glibc.installed == "2.36-9+deb12u4"
    assert glibc.fixed == "9:99-1" and glibc.status == "fixed" and glibc.severity == "high"
    assert found["CVE-2099-0004"].fixed is None and found["CVE-2099-0004"].status == "open"

    osv = read_feed(DATA / "osv-debian.json")
    assert osv.format == "osv" and {r.release for r in osv.records} == {"Debian:12", "Debian:11"}
    both = match(BOOKWORM, [*_rows(DATA / "debian-tracker.json", "debian-tracker"),
                            *_rows(DATA / "osv-debian.json", "osv")])
    merged = next(f for f in both if f.id == "CVE-2099-0001")  # the DSA and the tracker's CVE are one finding
    assert merged.aliases == ["DSA-9999-1"] and merged.severity == "critical" and merged.fixed == "9:98-1"
    assert merged.feeds == ["debian-tracker", "osv"]
    perl = next(f for f in both if f.id == "CVE-2099-0009")
    assert perl.severity == "medium" and perl.aliases == ["DLA-9998-1"]
    assert not any(f.id == "CVE-2099-0010" for f in both)  # introduced after the installed sed
    assert both[0].severity == "critical"  # most severe first
    # versions are compared in Debian's order, never as strings: 1.10 is newer than 1.9
    rows = [Row("CVE-2099-1", "", "sed", "bookworm", "resolved", None, "4.10-1", "high", "", "t")]
    assert [f.id for f in match(BOOKWORM, rows)] == ["CVE-2099-1"]
    rows = [Row("CVE-2099-2", "", "sed", "bookworm", "resolved", None, "4.9~rc1-1", "high", "", "t")]
    assert match(BOOKWORM, rows) == []
    sid = Bom(distro=Distro(id="debian", version_id="13", codename="trixie"), packages=BOOKWORM.packages)
    assert match(sid, _rows(DATA / "debian-tracker.json", "t")) == []  # another release's records


@pytest.mark.parametrize(("content", "says"), [
    (b"[1, 2, 3]", "neither the Debian Security Tracker's JSON"),
    (b"name: not json\n", ":1:1: not JSON"),
    (b'{"glibc": {"CVE-1": {"releases": {"bookworm": {"status": "broken"}}}}}',
     "glibc/CVE-1, bookworm: status must be one of open, resolved, undetermined"),
    (b'{"glibc": {"CVE-1": {"releases": {"bookworm": {"status": "resolved"}}}}}', "resolved without a fixed_version"),
    (b'[{"id": "DSA-1", "affected": [{"package": {"name": "x"}}]}]', "needs a package with an ecosystem and a name"),
])
def test_a_feed_in_the_wrong_format_is_refused_naming_where(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "feed.json").write_bytes(content)
    with pytest.raises(BadFeed, match=says.replace("(", r"\(").replace(")", r"\)")):
        read_feed(tmp_path / "feed.json")


def test_an_unparseable_osv_version_is_left_out_with_a_warning_naming_the_record(tmp_path: Path) -> None:
    feed = read_feed(DATA / "osv-bad-version.json")
    assert [r.vuln for r in feed.records] == ["DSA-9995-1"]
    assert len(feed.warnings) == 1 and "DSA-9996-1" in feed.warnings[0] and "'not a version!'" in feed.warnings[0]
    with zipfile.ZipFile(tmp_path / "all.zip", "w") as archive:  # osv.dev's Debian/all.zip: one file per record
        for record in json.loads((DATA / "osv-debian.json").read_text()):
            archive.writestr(f"{record['id']}.json", json.dumps(record))
        archive.writestr("README.txt", "not a record")
    zipped = read_feed(tmp_path / "all.zip")
    assert zipped.format == "osv" and len(zipped.records) == len(read_feed(DATA / "osv-debian.json").records)


def _cli_json(env: Env, *args: str) -> dict[str, object]:
    done = env.cli(*args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.root
def test_the_vulnerability_gate_explains_what_promote_decides(env: Env, tmp_path: Path) -> None:
    definition = tmp_path / "image"
    shutil.copytree(EXAMPLE, definition)
    base = (EXAMPLE / "image.yaml").read_text()
    assert "    testbeds: [sandbox]\n" in base

    def gate_with(extra: str) -> str:
        (definition / "image.yaml").write_text(base.replace("    testbeds: [sandbox]\n",
                                                            "    testbeds: [sandbox]\n" + extra))
        built = env.cli("build", str(definition / "image.yaml"))
        assert built.returncode == 0, built.stdout + built.stderr
        [v] = env.catalog.versions("debian-bookworm-minimal")
        return f"debian-bookworm-minimal@{v.serial}"

    ref = gate_with("    vulnerabilities:\n      block: [high, critical]\n")
    assert env.cli("test", ref).returncode == 0
    gate = env.cli("gate", ref)
    assert gate.returncode == 5 and "no vulnerability data" in gate.stdout, gate.stdout + gate.stderr

    imported = env.cli("vulndb", "import", str(DATA / "debian-tracker.json"))
    assert imported.returncode == 0 and "as feed debian-tracker" in imported.stdout, imported.stderr
    report = _cli_json(env, "vulns", ref)
    ids = {f["id"]: f for f in report["findings"]}  # type: ignore[union-attr, index]
    assert set(ids) == {"CVE-2099-0001", "CVE-2099-0004", "CVE-2099-0005", "CVE-2099-0006"}
    assert ids["CVE-2099-0001"]["package"] == "glibc" and "libc6" in ids["CVE-2099-0001"]["binaries"]
    assert report["releases"] == ["bookworm", "Debian:12"]

    status = json.loads(env.cli("gate", ref, "--json").stdout)  # exit 5: it does not hold
    assert status["holds"] is False and status["unmet"] == []  # every test passed: only vulnerabilities block
    [section] = status["sections"]
    assert section["name"] == "vulnerabilities" and not section["holds"]
    assert section["details"] == ["blocks: CVE-2099-0001 (high) in glibc " + ids["CVE-2099-0001"]["installed"]
                                  + ": fixed in 9:99-1"]  # zlib's is high but has no fix; tar's is low
    refused = env.cli("promote", ref)
    assert refused.returncode == 5 and "CVE-2099-0001" in refused.stderr + refused.stdout

    later = (date.today() + timedelta(days=30)).isoformat()
    ref = gate_with("    vulnerabilities:\n      block: [high, critical]\n      allow:\n"
                    f"        - id: CVE-2099-0001\n          reason: not reachable in this image\n"
                    f"          expires: {later}\n")
    gate = env.cli("gate", ref)
    assert gate.returncode == 0 and "vulnerabilities: no blocking vulnerability" in gate.stdout, gate.stdout
    expired = (date.today() - timedelta(days=1)).isoformat()
    ref = gate_with("    vulnerabilities:\n      block: [high]\n      only_fixed: false\n      allow:\n"
                    f"        - id: CVE-2099-0001\n          reason: was fine\n          expires: {expired}\n")
    gate = env.cli("gate", ref)
    assert gate.returncode == 5, gate.stdout
    assert f"its allowance expired on {expired}" in gate.stdout and "CVE-2099-0004 (high) in zlib" in gate.stdout

    # a broken import of the same feed name changes nothing: one transaction, and the file is read first
    (tmp_path / "broken.json").write_text('{"glibc": {"CVE-1": {"releases": {"bookworm": {"status": "x"}}}}}')
    broken = env.cli("vulndb", "import", str(tmp_path / "broken.json"), "--name", "debian-tracker")
    assert broken.returncode == 2 and "status must be one of" in broken.stderr and "Traceback" not in broken.stderr
    feeds = json.loads(env.cli("vulndb", "list", "--json").stdout)
    assert [(f["name"], f["records"]) for f in feeds] == [("debian-tracker", 9)]
    osv = env.cli("vulndb", "import", str(DATA / "osv-bad-version.json"), "--name", "osv-extra")
    assert osv.returncode == 0 and "DSA-9996-1" in osv.stdout and "1 left out" in osv.stdout, osv.stdout
    page = env.cli("vulns", ref)
    assert page.returncode == 0 and "CVE-2099-0012" in page.stdout and "CVE-2099-0011" not in page.stdout
