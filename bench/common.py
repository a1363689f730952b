"""Helpers shared by the benchmarks: a throwaway imageci home with the example built."""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from imageci.build.service import build_image
from imageci.config import Settings
from imageci.definitions.image import load_definition
from imageci.store.blobs import BlobStore
from imageci.store.catalog import Catalog
from imageci.store.models import Version

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "debian-bookworm-minimal" / "image.yaml"
BUILD_CACHE = Path(os.environ.get("IMAGECI_TEST_BUILD_CACHE", Path.home() / ".cache" / "imageci" / "test-builds"))


def fresh_home(prefix: str, cache: bool = True) -> tuple[Settings, Catalog, BlobStore]:
    home = Path(tempfile.mkdtemp(prefix=f"imageci-bench-{prefix}-"))
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=os.cpu_count() or 1,
                        build_cache=BUILD_CACHE if cache else None)
    settings.ensure()
    return settings, Catalog.open(settings.db_url), BlobStore(settings.store_dir)


def built_example(settings: Settings, catalog: Catalog, store: BlobStore) -> Version:
    return build_image(load_definition(EXAMPLE), settings, catalog, store).version


def pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
