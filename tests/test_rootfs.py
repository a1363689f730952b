"""Unpacking image tarballs: hostile archives are refused, nothing escapes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from imageci.formats.rootfs import HostileArchiveError, safe_extract


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


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE, mode: int = 0o644) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.mode = mode  # a hard link's header has its target's mode
    return info, None


@pytest.mark.parametrize(("members", "needle"), [
    ([_file("../escape")], "'..'"),
    ([_file("/etc/escape")], "absolute path"),
    ([_link("evil", "/tmp"), _file("evil/escape-through-symlink")], "resolves outside"),
    ([_link("up", "../../../../.."), _file("up/escape")], "resolves outside"),
    ([_link("hl", "/etc/passwd", tarfile.LNKTYPE)], "hard link"),
    ([_link("hl", "../outside", tarfile.LNKTYPE)], "hard link"),
    # only paths through a link the archive made are resolved: every spelling of one must be caught
    ([_link("./a/b", "/tmp"), _file("a/b/c/escape")], "resolves outside"),
    ([_file("d/f", b"x"), _link("d/l", "/tmp"), _file("./d//l/escape")], "resolves outside"),
    ([_link("evil", "/etc/hostname"), _file("evil", b"overwrite through the link")], "resolves outside"),
    ([_link("dir", "/etc"), _link("hl", "dir/passwd", tarfile.LNKTYPE)], "hard link"),
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


# ---- the unpacked cache is tamper-evident -------------------------------------------------------

def _tree_tar(path: Path) -> Path:
    hard = tarfile.TarInfo("./bin/also")
    hard.type, hard.linkname, hard.mode = tarfile.LNKTYPE, "./bin/tool", 0o4755  # as GNU tar records it
    return _tar(path, [_dir("./etc"), _file("./etc/os-release", b"NAME=demo\n"), _dir("./bin"),
                       _file("./bin/tool", b"#!/bin/sh\n", 0o4755), (hard, None), _file("./.hidden", b"h"),
                       _link("./bin/sh", "tool")])


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


@pytest.mark.root  # the rootfs keeps root ownership
def test_a_changed_cache_is_unpacked_again_and_verify_compares_it_with_the_blob(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    from imageci.formats import rootfs, treemanifest

    archive = _tree_tar(tmp_path / "r.tar")
    cache, digest = tmp_path / "cache", "d" * 64
    root = rootfs.unpacked_rootfs(archive, digest, cache)
    assert treemanifest.quick_check(root, cache / f"{digest}.manifest") == []
    assert rootfs.compare_with_archive(archive, root) == []
    (root / "etc" / "os-release").write_text("NAME=evil\n")
    (root / "etc" / "extra").write_text("planted")
    problems = {str(p) for p in treemanifest.quick_check(root, cache / f"{digest}.manifest")}
    assert {"etc/os-release: changed", "etc/extra: added"} <= problems
    deep = {str(p) for p in rootfs.compare_with_archive(archive, root)}
    assert {"etc/os-release: content changed", "etc/extra: added"} <= deep
    rootfs._checked.clear()  # a new process: the cheap check runs at first use
    root = rootfs.unpacked_rootfs(archive, digest, cache)
    assert (root / "etc" / "os-release").read_text() == "NAME=demo\n" and not (root / "etc" / "extra").exists()
    assert "was modified" in caplog.text and "unpacking it again from the verified blob" in caplog.text
    os.chmod(root / "bin" / "tool", 0o755)  # metadata alone: drops the setuid bit
    assert {str(p) for p in rootfs.compare_with_archive(archive, root)} >= {"bin/tool: owner or mode changed"}



@pytest.mark.root  # the rootfs keeps root ownership
def test_an_unchanged_tree_is_judged_by_its_digest_and_a_changed_one_entry_by_entry(tmp_path: Path) -> None:
    from imageci.formats import rootfs, treemanifest

    cache, digest = tmp_path / "cache", "d" * 64
    root = rootfs.unpacked_rootfs(_tree_tar(tmp_path / "r.tar"), digest, cache)
    manifest = cache / f"{digest}.manifest"
    line, record = manifest.read_bytes().split(b"\n", 1)
    assert line.startswith(treemanifest.DIGESTS)
    manifest.write_bytes(line + b"\nnot JSON")  # the record after the digests is not read for an unchanged tree
    assert treemanifest.quick_check(root, manifest) == [] == treemanifest.quick_check(root, manifest, ctime=False)
    (root / "etc" / "os-release").write_text("NAME=evil\n")
    assert "manifest is unreadable" in str(treemanifest.quick_check(root, manifest)[0])  # a changed one is
    manifest.write_bytes(record)  # written before manifests had the digests: compared entry by entry
    assert "etc/os-release: changed" in {str(p) for p in treemanifest.quick_check(root, manifest)}
    manifest.write_bytes(line + b"\n" + record)  # without ctimes: its content (same size) and mtime changed
    assert "etc/os-release: changed" in {str(p) for p in treemanifest.quick_check(root, manifest, ctime=False)}


@pytest.mark.root  # the rootfs keeps root ownership
def test_an_image_s_init_is_read_from_its_tree_once_per_digest(tmp_path: Path) -> None:
    from imageci.formats import rootfs
    from imageci.fs import safe_rmtree
    from imageci.testbeds import imageinit
    from imageci.testbeds.base import ImageHandle

    archive = _tar(tmp_path / "r.tar", [_dir("./lib"), _dir("./lib/systemd"), _dir("./sbin"),
                                        _file("./lib/systemd/systemd", b"\x7fELF", 0o755),
                                        _link("./sbin/init", "../lib/systemd/systemd")])
    cache, image = tmp_path / "cache", ImageHandle(digest="e" * 64, name="booted", rootfs_tar=archive)
    assert imageinit.has_systemd(image, cache) and imageinit.has_init(image, cache)
    # another process, the tree trimmed meanwhile: answered from what was kept, nothing checked or unpacked
    rootfs._checked.clear()
    safe_rmtree(cache / image.digest)
    (cache / f"{image.digest}.complete").unlink()
    assert imageinit.has_systemd(image, cache) and not (cache / image.digest).exists()
    rootfs.discard_unpacked(cache, image.digest)  # the tree's answer goes with it
    assert not (cache / f"{image.digest}.init").exists()
    plain = ImageHandle(digest="f" * 64, name="plain", rootfs_tar=_tar(tmp_path / "p.tar", [_dir("./etc")]))
    assert not imageinit.has_init(plain, cache) and not imageinit.has_systemd(plain, cache)
    assert (cache / f"{plain.digest}.init").read_text() == '{"init": null}'
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == []  # no temporary file left

def test_vm_assets_record_their_hashes(tmp_path: Path) -> None:
    import json

    from imageci.formats.vmdisk import ASSET_FILES, asset_problems
    from imageci.store.blobs import hash_file

    d = tmp_path / "digest-2048m-v2"
    d.mkdir()
    for name in ASSET_FILES:
        (d / name).write_text(name)
    marker = tmp_path / "digest-2048m-v2.complete"
    marker.write_text(json.dumps({n: hash_file(d / n).digest for n in ASSET_FILES}))
    assert asset_problems(marker) == []
    (d / "initrd").write_text("patched")
    assert asset_problems(marker) == ["digest-2048m-v2/initrd: content changed"]
    marker.write_text("")
    assert "no record of its bytes" in asset_problems(marker)[0]


def test_vm_assets_are_hashed_again_only_when_a_file_is_not_the_one_hashed(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process checks a VM's disk, kernel and initrd before it boots them, re-hashing them (a 700 MB disk:
    1.5 s) only when a file is not the very one hashed last; a same-size write with its mtime put back is
    still caught, and the assets are made again."""
    from imageci.formats import vmdisk

    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-1").write_bytes(b"k" * 100)
    (root / "boot" / "initrd.img-1").write_bytes(b"i" * 100)
    made = vmdisk.vm_assets(root, "d" * 64, tmp_path / "vm", free_space=16 << 20)
    hashed: list[Path] = []
    real = vmdisk.asset_problems
    monkeypatch.setattr(vmdisk, "asset_problems", lambda marker: hashed.append(marker) or real(marker))
    vmdisk._checked.clear()  # as a new process finds them
    assert vmdisk.vm_assets(root, "d" * 64, tmp_path / "vm", free_space=16 << 20) == made and hashed == []
    assert made.initrd is not None
    was = made.initrd.stat()
    made.initrd.write_bytes(b"x" * 100)
    os.utime(made.initrd, ns=(was.st_atime_ns, was.st_mtime_ns))
    vmdisk._checked.clear()
    assert vmdisk.vm_assets(root, "d" * 64, tmp_path / "vm", free_space=16 << 20) == made
    assert len(hashed) == 1 and made.initrd.read_bytes() == b"i" * 100  # caught, and made again


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry's type, mode, owner, size, link target, link count and (but a symlink's) mtime."""
    found: dict[str, tuple[object, ...]] = {}
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        link = stat.S_ISLNK(st.st_mode)
        found[str(path.relative_to(root))] = (
            stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink,
            0 if stat.S_ISDIR(st.st_mode) else st.st_size, os.readlink(path) if link else "",
            None if link else int(st.st_mtime))
    return found


def _odd(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


@pytest.mark.parametrize(("members", "fast"), [
    # a root filesystem as builders write it: GNU tar unpacks it, leaving the device nodes and FIFOs out
    ([_dir("./etc"), _file("./etc/passwd", b"root:x:0:0\n"), _file("./usr/bin/su", b"su", 0o4755),
      _link("./usr/bin/sudo-link", "./usr/bin/su", tarfile.LNKTYPE, 0o4755), _link("./bin", "usr/bin"),
      _odd("./dev/null", tarfile.CHRTYPE), _odd("./dev/sda", tarfile.BLKTYPE), _odd("./run/fifo", tarfile.FIFOTYPE),
      _file("./etc/owned", b"o", 0o640)], True),
    # whatever an exclusion would not leave out exactly: unpacked by Python, the same way
    ([_odd("dev/null", tarfile.CHRTYPE), _file("dev/null/inside")], False),  # below a left-out member
    ([_odd("dev/odd\nname", tarfile.CHRTYPE), _file("etc/x")], False),
    ([_odd("dev/back\\slash", tarfile.FIFOTYPE), _file("etc/x")], False),
    ([_odd("dev/null", tarfile.CHRTYPE), _link("etc/null", "dev/null", tarfile.LNKTYPE)], False),  # a link to one
    ([_dir("usr/lib"), _link("lib", "usr/lib"), _file("lib/inside")], False),  # through its own symlink: resolved
])
def test_gnu_tar_unpacks_what_python_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            members: list[tuple[tarfile.TarInfo, bytes | None]], fast: bool) -> None:
    from imageci.formats import rootfs

    for info, _ in members:
        info.uid, info.gid, info.mtime = (0, 42, 1760000000) if info.name.endswith("owned") else (0, 0, 1750000000)
    archive = _tar(tmp_path / "root.tar", members)
    used: list[list[str]] = []
    real = rootfs._gnu_tar
    monkeypatch.setattr(rootfs, "_gnu_tar", lambda fh, dest, skipped: used.append(skipped) or real(fh, dest, skipped))
    safe_extract(archive, tmp_path / "gnu")
    assert bool(used) is fast
    monkeypatch.setattr(rootfs, "_gnu_tar_present", lambda: False)
    safe_extract(archive, tmp_path / "python")
    assert _snapshot(tmp_path / "gnu") == _snapshot(tmp_path / "python")
    if fast:
        assert used == [["./dev/null", "./dev/sda", "./run/fifo"]]
        assert not os.path.lexists(tmp_path / "gnu/dev/null") and (tmp_path / "gnu/etc/passwd").is_file()
        assert os.stat(tmp_path / "gnu/usr/bin/sudo-link").st_nlink == 2
