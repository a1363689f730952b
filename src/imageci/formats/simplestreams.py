"""The simplestreams format LXD and Incus read, for versions in their LXD form
(``build.lxdimage``): one writer for every feed imageci serves — a channel's
(``app.feeds``, served by ``imageci serve``) and the one the LXD testbed
serves its LXD daemon for a run (``testbeds.lxdfeed``).

``streams/v1/index.json`` names one ``image-downloads`` products file,
``streams/v1/images.json``, whose products are keyed ``os:release:arch:variant``
and whose versions are keyed by serial (``YYYYMMDD.NNN``: a date first, and they
sort as strings), each with its metadata items (``lxd.tar.xz``,
``incus.tar.xz``, carrying LXD's fingerprint as ``combined_squashfs_sha256``)
and its ``squashfs`` item. Paths are relative to the feed's base URL, which
``lxc remote add NAME URL --protocol simplestreams`` takes as it is."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from pydantic import BaseModel

from imageci.store.states import INCUS_METADATA, LXD_METADATA, SQUASHFS

INDEX = "streams/v1/index.json"
PRODUCTS = "streams/v1/images.json"
FTYPES = {LXD_METADATA: "lxd.tar.xz", INCUS_METADATA: "incus.tar.xz", SQUASHFS: "squashfs"}


class FeedItem(BaseModel):
    ftype: str
    path: str  # relative to the feed's base URL
    sha256: str
    size: int
    combined_squashfs_sha256: str | None = None  # on the metadata items: LXD's fingerprint


class FeedVersion(BaseModel):
    serial: str
    image: str  # NAME@SERIAL
    state: str
    items: dict[str, FeedItem]  # by file name


class FeedProduct(BaseModel):
    key: str  # os:release:arch:variant
    name: str
    os: str
    release: str
    arch: str
    variant: str
    aliases: list[str]
    versions: list[FeedVersion]  # by serial


class Feed(BaseModel):
    namespace: str
    channel: str
    updated: datetime | None
    products: list[FeedProduct]


def version_items(name: str, serial: str, artifacts: Iterable[tuple[str, str, str, int]],
                  fingerprint: str) -> dict[str, FeedItem]:
    """A version's items from its LXD artifacts ``(kind, filename, sha256, size)``: the metadata
    tarballs carry the fingerprint; an ``incus.tar.xz`` that is not the ``lxd.tar.xz`` bytes is left
    out (the fingerprint is of those)."""
    arts = {kind: (filename, digest, size) for kind, filename, digest, size in artifacts if kind in FTYPES}
    items = {}
    for kind, (filename, digest, size) in arts.items():
        if kind == INCUS_METADATA and digest != arts[LXD_METADATA][1]:
            continue
        items[filename] = FeedItem(ftype=FTYPES[kind], path=f"images/{name}/{serial}/{filename}", sha256=digest,
                                   size=size, combined_squashfs_sha256=fingerprint if kind != SQUASHFS else None)
    return items


def product_key(os_name: str, release: str, arch: str, variant: str) -> str:
    return f"{os_name.lower()}:{release}:{arch}:{variant}"


def _updated(feed: Feed) -> dict[str, str]:
    return {"updated": format_datetime(feed.updated)} if feed.updated else {}


def index(feed: Feed) -> dict[str, Any]:
    return {"format": "index:1.0", **_updated(feed),
            "index": {"images": {"datatype": "image-downloads", "path": PRODUCTS, "format": "products:1.0",
                                 "products": [p.key for p in feed.products], **_updated(feed)}}}


def images(feed: Feed) -> dict[str, Any]:
    products = {}
    for p in feed.products:
        products[p.key] = {
            "aliases": ",".join(p.aliases), "arch": p.arch, "os": p.os, "release": p.release,
            "release_title": p.release, "variant": p.variant, "requirements": {}, "lxd_requirements": {},
            "versions": {v.serial: {"items": {name: item.model_dump(exclude_none=True)
                                              for name, item in sorted(v.items.items())}}
                         for v in p.versions},
        }
    return {"content_id": "images", "datatype": "image-downloads", "format": "products:1.0", **_updated(feed),
            "products": products}
