"""Unpacking image tarballs: hostile archives are refused, nothing escapes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from imageci.build.rootfs import HostileArchiveError, safe_extract


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize(("members", "needle"), [
    ([_file("../escape")], "'..'"),
    ([_file("/etc/escape")], "absolute path"),
    ([_link("evil", "/tmp"), _file("evil/escape-through-symlink")], "resolves outside"),
    ([_link("up", "../../../../.."), _file("up/escape")], "resolves outside"),
    ([_link("hl", "/etc/passwd", tarfile.LNKTYPE)], "hard link"),
    ([_link("hl", "../outside", tarfile.LNKTYPE)], "hard link"),
])
def test_hostile_archives_are_refused_and_cleaned(tmp_path: Path, members: list, needle: str) -> None:
    archive = _tar(tmp_path / "bad.tar", members)
    dest = tmp_path / "dest"
    before = set(os.listdir(tmp_path))
    with pytest.raises(HostileArchiveError, match=needle):
        safe_extract(archive, dest)
    assert not dest.exists()  # partial extraction removed
    assert set(os.listdir(tmp_path)) == before
    assert not Path("/tmp/escape-through-symlink").exists()


def test_rootfs_features_are_kept(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    archive = _tar(tmp_path / "ok.tar", [
        _file("usr/bin/su", b"#!/bin/sh\n", 0o4755),
        _link("etc/localtime", "/usr/share/zoneinfo/Etc/UTC"),  # absolute symlinks are normal in a rootfs
        _link("bin", "usr/bin"),
        (dev, None),
    ])
    dest = tmp_path / "root"
    safe_extract(archive, dest)
    assert stat.S_IMODE(os.stat(dest / "usr/bin/su").st_mode) == 0o4755
    assert os.readlink(dest / "etc/localtime") == "/usr/share/zoneinfo/Etc/UTC"
    assert (dest / "bin" / "su").exists()
    assert not os.path.lexists(dest / "dev/null")  # device nodes are skipped: the sandbox has its own /dev


def test_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "junk.tar"
    bad.write_bytes(b"\x00not a tar" * 100)
    with pytest.raises(Exception, match="cannot unpack junk.tar"):
        safe_extract(bad, tmp_path / "d")
