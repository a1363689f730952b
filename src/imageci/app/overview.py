"""Products × channels: what a maintainer looks at first. For each product the
caller may see, the newest version on each channel (``testing``, ``stable``),
its state, when it was made, and whether its gate holds now (a stable version
was judged when it was promoted: "promoted")."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from imageci.app.access import LOCAL, Principal
from imageci.app.gating import gate
from imageci.app.session import Session
from imageci.errors import ImageciError
from imageci.store import lookups
from imageci.store.lookups import VersionInfo
from imageci.store.states import CHANNELS, State


class ChannelCell(BaseModel):
    channel: str
    image: str | None  # NAME@SERIAL; None: nothing on this channel
    serial: str | None = None
    state: str | None = None
    created: datetime | None = None
    gate: str = ""  # "holds" | "blocked" | "none" (no gate defined) | "promoted" (stable already) | "unknown: …"
    gate_detail: str = ""  # the gate's explanation, first line


class ProductCard(BaseModel):
    name: str
    namespace: str
    public: bool
    architecture: str | None  # of its newest version
    versions: int
    channels: list[ChannelCell]


def _newest(found: list[VersionInfo], states: set[State]) -> VersionInfo | None:
    on = [v for v in found if State(v.state) in states]
    return max(on, key=lambda v: v.serial) if on else None


def _gate_word(session: Session, v: VersionInfo) -> tuple[str, str]:
    if v.state == State.STABLE:  # judged when it was promoted (its audit trail says on what)
        return "promoted", "on stable"
    try:
        result = gate(session, session.catalog.resolve(v.label))
    except ImageciError as exc:  # a stored suite or definition that no longer loads: said, not raised
        return f"unknown: {exc}", ""
    if result is None:
        return "none", "no gate is defined for this image"
    return ("holds" if result.holds else "blocked"), result.explain().splitlines()[0]


def overview(session: Session, *, viewer: Principal = LOCAL, gates: bool = True) -> list[ProductCard]:
    """Every product ``viewer`` may see with the newest version on each channel (and its gate when
    ``gates``). A follower bound to a channel sees only that channel's versions."""
    by_product: dict[str, list[VersionInfo]] = {}
    for v, _size in lookups.versions(session.reader):
        if viewer.sees(v.namespace, v.public, v.state):
            by_product.setdefault(v.name, []).append(v)
    cards = []
    for name, ns, public, _count in lookups.products(session.reader):
        found = by_product.get(name, [])
        if not found and not viewer.sees_product(ns, public):
            continue
        cells = []
        for channel, states in CHANNELS.items():
            on = _newest(found, states)
            if on is None:
                cells.append(ChannelCell(channel=channel, image=None))
                continue
            word, detail = _gate_word(session, on) if gates else ("", "")
            cells.append(ChannelCell(channel=channel, image=on.label, serial=on.serial, state=on.state,
                                     created=on.created_at, gate=word, gate_detail=detail))
        newest = max(found, key=lambda v: v.serial) if found else None
        cards.append(ProductCard(name=name, namespace=ns, public=public, versions=len(found),
                                 architecture=newest.architecture if newest else None, channels=cells))
    return cards
