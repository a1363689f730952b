"""What the catalog answers to readers besides versions and their results, as portable SQL over a
``store.reading.Reader``: tokens, products and namespaces, vulnerability feeds and their records, and the
blobs something still references. Re-exported by ``store.lookups``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from imageci.store.reading import Reader, stamp


class TokenInfo(NamedTuple):
    name: str
    namespace: str
    scopes: str  # comma-separated
    channel: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


_TOKEN = "SELECT name, namespace, scopes, channel, created_at, created_by, expires_at, revoked_at FROM tokens"


def _token(row: tuple[object, ...]) -> TokenInfo:
    name, namespace, scopes, channel, created, by, expires, revoked = row
    return TokenInfo(str(name), str(namespace), str(scopes), str(channel) if channel is not None else None,
                     stamp(created), str(by), stamp(expires) if expires is not None else None,
                     stamp(revoked) if revoked is not None else None)


def token(reader: Reader, secret_sha256: str) -> TokenInfo | None:
    """The token whose secret hashes to ``secret_sha256`` (None: no such token)."""
    rows = reader.rows(f"{_TOKEN} WHERE secret_sha256 = :h", {"h": secret_sha256})
    return _token(rows[0]) if rows else None


def tokens(reader: Reader) -> list[TokenInfo]:
    """Every token, by namespace and name (never their secrets: only hashes are kept)."""
    return [_token(row) for row in reader.rows(f"{_TOKEN} ORDER BY namespace, name")]


def referenced_blobs(reader: Reader, *, but_versions: Sequence[int] = (), but_logs: Sequence[int] = (),
                     but_attempts: Sequence[int] = ()) -> set[str]:
    """Every blob digest the catalog points at: artifacts of any version (in any state), logs, and the
    consumers' snapshots. ``but_*``: as if those versions' artifacts, those attempts' logs and those
    attempts were gone (what retention's dry run would leave)."""
    found = {str(d) for (d,) in reader.rows(
        "SELECT digest FROM artifacts UNION SELECT log_digest FROM attempts WHERE log_digest IS NOT NULL "
        "UNION SELECT snapshot FROM consumers WHERE snapshot IS NOT NULL", {})}
    if not (but_versions or but_logs or but_attempts):
        return found
    gone_versions, gone_logs = set(but_versions), set(but_logs) | set(but_attempts)
    kept = {str(d) for vid, d in reader.rows("SELECT version_id, digest FROM artifacts", {})
            if int(str(vid)) not in gone_versions}
    kept |= {str(d) for aid, d in reader.rows("SELECT id, log_digest FROM attempts WHERE log_digest IS NOT NULL", {})
             if int(str(aid)) not in gone_logs}
    kept |= {str(d) for (d,) in reader.rows("SELECT snapshot FROM consumers WHERE snapshot IS NOT NULL", {})}
    return kept


def products(reader: Reader) -> list[tuple[str, str, bool, int]]:
    """Every product: name, namespace, public, number of versions."""
    return [(str(n), str(ns), bool(pub), int(str(c))) for n, ns, pub, c in reader.rows(
        "SELECT p.name, p.namespace, p.public, COUNT(v.id) FROM products p LEFT JOIN versions v "
        "ON v.product_id = p.id GROUP BY p.id, p.name, p.namespace, p.public ORDER BY p.name", {})]


def namespace_public(reader: Reader, namespace: str) -> bool:
    """Whether ``namespace`` has a public product."""
    return bool(reader.rows("SELECT 1 FROM products WHERE namespace = :ns AND public", {"ns": namespace}))


def vuln_rows(reader: Reader, releases: Sequence[str], packages: Sequence[str]) -> list[tuple[Any, ...]]:
    """Every feed's records for these source packages in these releases: (vuln, aliases, package,
    release, status, introduced, fixed, severity, description, feed name)."""
    if not releases or not packages:
        return []
    rels = {f"r{i}": r for i, r in enumerate(releases)}
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(packages), 500):
        names = {f"p{i}": p for i, p in enumerate(packages[start:start + 500])}
        found += [tuple(row) for row in reader.rows(
            "SELECT r.vuln, r.aliases, r.package, r.release, r.status, r.introduced, r.fixed, r.severity, "
            "r.description, f.name FROM vuln_records r JOIN vuln_feeds f ON f.id = r.feed_id "
            f"WHERE r.release IN ({', '.join(':' + k for k in rels)}) "
            f"AND r.package IN ({', '.join(':' + k for k in names)}) ORDER BY r.id", {**rels, **names})]
    return found


def vuln_feeds(reader: Reader) -> list[tuple[Any, ...]]:
    """The imported feeds: (name, format, source, sha256, records, skipped, imported_at, imported_by)."""
    return [tuple(row) for row in reader.rows(
        "SELECT name, format, source, sha256, records, skipped, imported_at, imported_by FROM vuln_feeds "
        "ORDER BY name")]
