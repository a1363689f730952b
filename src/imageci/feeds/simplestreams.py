"""A channel's feed (``app.feeds.Feed``) in the simplestreams format LXD and
Incus read: ``streams/v1/index.json`` names one ``image-downloads`` products
file, ``streams/v1/images.json``, whose products are keyed
``os:release:arch:variant`` and whose versions are keyed by serial
(``YYYYMMDD.NNN``: a date first, and they sort as strings), each with its
metadata items (``lxd.tar.xz``, ``incus.tar.xz``, carrying LXD's fingerprint
as ``combined_squashfs_sha256``) and its ``squashfs`` item. Paths are relative
to the feed's base URL, which ``lxc remote add NAME URL --protocol
simplestreams`` takes as it is."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

from imageci.app.feeds import Feed

INDEX = "streams/v1/index.json"
PRODUCTS = "streams/v1/images.json"


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
