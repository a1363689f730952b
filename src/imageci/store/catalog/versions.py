"""Products and versions: registering, test configuration, transitions, pushes, finding them."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from imageci.errors import UnknownReferenceError
from imageci.store import lookups
from imageci.store.catalog.base import CatalogBase, NewArtifact, SqlAlchemyReader, TransitionError
from imageci.store.models import DEFAULT_NAMESPACE, TRANSITIONS, Artifact, Event, Product, Push, State, Version, utcnow
from imageci.store.refs import ImageRef

SERIAL = re.compile(r"[0-9]{8}\.[0-9]{3,6}")  # DATE.N, as _next_serial makes them


class VersionRows(CatalogBase):
    @staticmethod
    def _next_serial(s: Session, product: Product, now: datetime) -> str:
        day = now.strftime("%Y%m%d")
        last = s.scalar(select(func.max(Version.serial)).where(
            Version.product_id == product.id, Version.serial.like(f"{day}.%")))
        n = int(last.split(".")[1]) + 1 if last else 1
        return f"{day}.{n:03d}"

    def register_version(self, name: str, digest: str, artifacts: Sequence[NewArtifact], *,
                         input_hash: str | None, definition: str | None, build_info: dict[str, Any],
                         architecture: str = "amd64", actor: str | None = None,
                         publish_to_testing: bool = True, namespace: str = DEFAULT_NAMESPACE,
                         serial: str | None = None) -> Version:
        """Record a complete version and (by default) publish it to ``testing``,
        all in one transaction: a version is never visible half-registered. A new product is made
        in ``namespace``. ``serial``: the one wanted (a version fetched from a server keeps the server's),
        when it is a serial (DATE.N) and free in the product; else the next one."""
        actor = actor or self.actor
        for attempt in range(5):
            try:
                with self.session() as s:
                    product = self._product(s, name, create=True, namespace=namespace)
                    assert product is not None
                    now = utcnow()
                    wanted = serial if serial and SERIAL.fullmatch(serial) and attempt == 0 and s.scalar(
                        select(func.count(Version.id)).where(Version.product_id == product.id,
                                                             Version.serial == serial)) == 0 else None
                    version = Version(product_id=product.id, serial=wanted or self._next_serial(s, product, now),
                                      digest=digest, input_hash=input_hash, architecture=architecture,
                                      state=State.CREATED.value,
                                      created_at=now, definition=definition,
                                      build_info=json.dumps(build_info, sort_keys=True))
                    version.artifacts = [Artifact(kind=a.kind, filename=a.filename, digest=a.digest, size=a.size)
                                         for a in artifacts]
                    s.add(version)
                    s.flush()
                    s.add(Event(version_id=version.id, from_state=None, to_state=State.CREATED.value,
                                actor=actor, reason="registered", at=now))
                    if publish_to_testing:
                        version.state = State.TESTING.value
                        s.add(Event(version_id=version.id, from_state=State.CREATED.value,
                                    to_state=State.TESTING.value, actor=actor,
                                    reason="published to channel testing", at=now))
                    version.product = product
                return version
            except IntegrityError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def set_test_config(self, version_id: int, definition: str | None, artifacts: Sequence[NewArtifact], *,
                        drop: set[str] | None = None, build_info: dict[str, Any] | None = None) -> Version:
        """Record the version's current test configuration: the definition text (its ``tests`` and
        ``keep``, which are not build inputs, may have changed) and artifacts that replace those of the
        same kind (the suite snapshot); ``drop`` removes artifacts of those kinds. The image bytes are
        untouched; evidence is keyed by test digest."""
        with self.session() as s:
            v = s.get(Version, version_id, options=[selectinload(Version.product), selectinload(Version.artifacts)])
            if v is None:
                raise UnknownReferenceError(f"no version with id {version_id}")
            v.definition = definition
            if build_info is not None:
                v.build_info = json.dumps(build_info, sort_keys=True)
            kinds = {a.kind for a in artifacts} | (drop or set())
            v.artifacts = [a for a in v.artifacts if a.kind not in kinds] + [
                Artifact(kind=a.kind, filename=a.filename, digest=a.digest, size=a.size) for a in artifacts]
            s.flush()
            return v

    def attach(self, version_id: int, artifacts: Sequence[NewArtifact]) -> Version:
        """Add artifacts derived from the version's bytes (its BOM, its file index), replacing those of
        the same kinds; nothing else of the version changes."""
        with self.session() as s:
            v = s.get(Version, version_id, options=[selectinload(Version.product), selectinload(Version.artifacts)])
            if v is None:
                raise UnknownReferenceError(f"no version with id {version_id}")
            kinds = {a.kind for a in artifacts}
            v.artifacts = [a for a in v.artifacts if a.kind not in kinds] + [
                Artifact(kind=a.kind, filename=a.filename, digest=a.digest, size=a.size) for a in artifacts]
            s.flush()
            return v

    def transition(self, version_id: int, to: State, *, actor: str | None = None, reason: str = "") -> Version:
        with self.session() as s:
            v = s.get(Version, version_id, options=[selectinload(Version.product)])
            if v is None:
                raise UnknownReferenceError(f"no version with id {version_id}")
            frm = State(v.state)
            if to not in TRANSITIONS[frm]:
                raise TransitionError(f"{v.product.name}@{v.serial}: cannot go from {frm} to {to}")
            v.state = to.value
            s.add(Event(version_id=v.id, from_state=frm.value, to_state=to.value,
                        actor=actor or self.actor, reason=reason, at=utcnow()))
            return v

    def record_push(self, version_id: int, destination: str, manifest_digest: str, *,
                    actor: str | None = None) -> Push:
        with self.session() as s:
            push = Push(version_id=version_id, destination=destination, manifest_digest=manifest_digest,
                        actor=actor or self.actor, at=utcnow())
            s.add(push)
            s.flush()
            return push

    def pushes(self, version_id: int) -> list[Push]:
        with self.session() as s:
            return list(s.scalars(select(Push).where(Push.version_id == version_id).order_by(Push.id)))

    def find_by_input_hash(self, name: str, input_hash: str) -> Version | None:
        with self.session() as s:
            return s.scalar(
                select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
                .where(Product.name == name, Version.input_hash == input_hash,
                       Version.state.not_in([State.INACTIVE.value, State.DELETED.value]))
                .order_by(Version.serial.desc()).limit(1))

    def find_by_digest(self, name: str, digest: str) -> Version | None:
        with self.session() as s:
            return s.scalar(
                select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
                .where(Product.name == name, Version.digest == digest, Version.state != State.DELETED.value)
                .order_by(Version.serial.desc()).limit(1))

    def products(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(Product.name).order_by(Product.name)))

    def versions(self, name: str | None = None, states: set[State] | None = None) -> list[Version]:
        with self.session() as s:
            q = select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
            if name:
                q = q.where(Product.name == name)
            if states:
                q = q.where(Version.state.in_([st.value for st in states]))
            return list(s.scalars(q.order_by(Product.name, Version.serial)))

    def resolve(self, ref: str | ImageRef) -> Version:
        """The version a reference names (``store.lookups.resolve``); unknown names list the close ones."""
        with self.session() as s:
            info = lookups.resolve(SqlAlchemyReader(s), ref)
            version = s.scalar(select(Version).options(selectinload(Version.product), selectinload(Version.artifacts))
                               .where(Version.id == info.id))
            assert version is not None
            return version

    def set_product(self, name: str, *, namespace: str | None = None, public: bool | None = None) -> Product:
        """Move product ``name`` to ``namespace`` and/or make it public or private."""
        with self.session() as s:
            product = self._product(s, name)
            if product is None:
                raise UnknownReferenceError(f"unknown image {name!r}")
            if namespace is not None:
                product.namespace = namespace
            if public is not None:
                product.public = public
            return product
