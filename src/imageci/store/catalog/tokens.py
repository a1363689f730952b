"""API tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from imageci.errors import UsageError
from imageci.store.catalog.base import CatalogBase
from imageci.store.models import Token


class TokenRows(CatalogBase):
    def add_token(self, token: Token) -> Token:
        with self.session() as s:
            if s.scalar(select(Token.id).where(Token.name == token.name)) is not None:
                raise UsageError(f"a token named {token.name!r} exists; revoke it or choose another name")
            s.add(token)
            s.flush()
            return token

    def revoke_token(self, name: str, at: datetime) -> Token:
        with self.session() as s:
            token = s.scalar(select(Token).where(Token.name == name))
            if token is None:
                raise UsageError(f"no token named {name!r}")
            if token.revoked_at is None:
                token.revoked_at = at
            return token
