"""Where imageci keeps its state. Everything lives under one home directory.

``IMAGECI_HOME`` (default ``$XDG_DATA_HOME/imageci``, i.e. ``~/.local/share/imageci``)
holds the catalog database, the artifact store, unpacked rootfs caches, logs
and temporary build directories, so two homes never mix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imageci.owners import home_id


def default_home() -> Path:
    env = os.environ.get("IMAGECI_HOME")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "imageci"


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    jobs: int
    build_cache: Path | None

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def rootfs_cache(self) -> Path:
        return self.home / "rootfs"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def home_id(self) -> str:
        """Names this home on host-wide resources (cgroups, container labels)."""
        return home_id(self.home)

    @classmethod
    def load(cls, home: Path | None = None) -> Settings:
        home = (home or default_home()).resolve()
        db_url = os.environ.get("IMAGECI_DB_URL") or f"sqlite:///{home / 'catalog.db'}"
        jobs = int(os.environ.get("IMAGECI_JOBS") or (os.cpu_count() or 1))
        cache = os.environ.get("IMAGECI_BUILD_CACHE")
        return cls(home=home, db_url=db_url, jobs=max(1, jobs), build_cache=Path(cache) if cache else None)

    def ensure(self) -> None:
        for d in (self.home, self.store_dir, self.tmp_dir, self.rootfs_cache, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
