"""A version's file index: every entry of its root file system with its type and mode, size,
sha256 (regular files) or target (links), and the package that owns it. Stored with the version
(``files.json``) so that two versions compare without unpacking either."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from pydantic import BaseModel

from imageci.fs import walk
from imageci.supply.owners import file_owners

FILES_SCHEMA = 1
# Package managers' own records: they change with every package change and are described by the BOM.
MANAGER_STATE = ("var/lib/dpkg/", "lib/apk/db/", "var/lib/rpm/", "usr/lib/sysimage/rpm/")


class FileEntry(BaseModel):
    mode: int  # st_mode: type and permission bits
    size: int
    sha256: str = ""  # regular files; a link's target for links
    owner: str = ""  # the package that owns it (empty: none)


class FileIndex(BaseModel):
    schema_version: int = FILES_SCHEMA
    files: dict[str, FileEntry]  # path relative to the root, without a leading slash


def _sha256(name: str, dir_fd: int) -> str:
    h = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def index_files(root: Path) -> FileIndex:
    owners = file_owners(root)
    files: dict[str, FileEntry] = {}
    for sub, dir_fd, name, st in walk(root):
        if stat.S_ISREG(st.st_mode):
            digest = _sha256(name, dir_fd)
        elif stat.S_ISLNK(st.st_mode):
            digest = os.readlink(name, dir_fd=dir_fd)
        else:
            digest = ""
        files[sub] = FileEntry(mode=st.st_mode, size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
                               sha256=digest, owner=owners.get(sub, ""))
    return FileIndex(files=dict(sorted(files.items())))
