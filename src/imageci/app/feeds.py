"""A channel as a feed that LXD and Incus hosts follow: which versions of a
namespace are on the channel, as the caller may see them, with the files of
their LXD form (``build.lxdimage``). ``build.simplestreams`` writes it in the
simplestreams format; the API serves it and the files.

- One feed per namespace and channel. A namespace the caller may not read and
  that has no public product is unknown (404), as an unknown image is.
- A follower's token (bound to a channel) has only its channel's feed.
- A version is listed only when it is committed, on the channel, and has its
  whole LXD form (metadata, squashfs and a fingerprint computed from them);
  anything less is absent, never half-listed. A version whose image has no
  ``/sbin/init`` is absent too (``lxc launch`` could not start it); ``imageci
  images`` says why a version is not listed.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from imageci.app.access import Principal
from imageci.app.session import Session
from imageci.errors import UnknownReferenceError
from imageci.formats.lxdform import feed_state
from imageci.formats.simplestreams import FTYPES, Feed, FeedItem, FeedProduct, FeedVersion, product_key, version_items
from imageci.store import lookups
from imageci.store.states import CHANNELS, LXD_METADATA, SQUASHFS


def _check(session: Session, by: Principal, namespace: str, channel: str) -> set[str]:
    """The states of ``channel`` if ``by`` may read ``namespace``'s feed of it."""
    if channel not in CHANNELS:
        raise UnknownReferenceError(f"no channel {channel!r}; channels: {', '.join(CHANNELS)}")
    if by.channel is not None and by.channel != channel:
        raise UnknownReferenceError(f"no feed {namespace}/{channel}")
    if not by.sees_product(namespace, False) and not lookups.namespace_public(session.reader, namespace):
        raise UnknownReferenceError(f"no feed {namespace}/{channel}")
    return {s.value for s in CHANNELS[channel]}


def _rows(session: Session, by: Principal, namespace: str, channel: str) -> list[lookups.FeedRow]:
    states = _check(session, by, namespace, channel)
    rows = lookups.feed(session.reader, namespace, states, set(FTYPES), {LXD_METADATA, SQUASHFS})
    return [r for r in rows if by.sees(r.version.namespace, r.version.public, r.version.state)]


def lxd_feed(session: Session, namespace: str, channel: str, *, by: Principal) -> Feed:
    """The versions of ``namespace`` on ``channel`` that LXD can take, as ``by`` may see them."""
    products: dict[str, FeedProduct] = {}
    updated: datetime | None = None
    for row in _rows(session, by, namespace, channel):
        v = row.version
        info = json.loads(row.build_info).get("lxd")
        if feed_state(info) != "listed":
            continue  # no LXD form, or no /sbin/init: `lxc launch` could not start it
        items = version_items(v.name, v.serial, ((a.kind, a.filename, a.digest, a.size) for a in row.artifacts),
                              str(info["fingerprint"]))
        os_name, release, variant = str(info["os"]), str(info["release"]), str(info["variant"])
        key = product_key(os_name, release, v.architecture, variant)
        product = products.get(key)
        if product is None:
            product = products[key] = FeedProduct(key=key, name=v.name, os=os_name, release=release,
                                                  arch=v.architecture, variant=variant, aliases=[v.name],
                                                  versions=[])
        product.versions.append(FeedVersion(serial=v.serial, image=v.label, state=v.state, items=items))
        updated = row.updated if updated is None or row.updated > updated else updated
    return Feed(namespace=namespace, channel=channel, updated=updated,
                products=sorted(products.values(), key=lambda p: p.key))


def lxd_file(session: Session, namespace: str, channel: str, name: str, serial: str, filename: str, *,
             by: Principal) -> tuple[FeedItem, Path]:
    """A file the feed lists (``images/NAME/SERIAL/FILENAME``): its item and its blob's path. What the
    feed does not list cannot be fetched through it."""
    for product in lxd_feed(session, namespace, channel, by=by).products:
        if product.name == name:
            for version in product.versions:
                item = version.items.get(filename) if version.serial == serial else None
                if item is not None:
                    return item, session.store.path(item.sha256)
    raise UnknownReferenceError(f"no file images/{name}/{serial}/{filename} in feed {namespace}/{channel}")
