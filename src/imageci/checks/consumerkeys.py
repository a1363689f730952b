"""How a consumer's test is named and its content keyed as evidence (``checks.consumer`` runs it): what a gate
and a plan read of a consumer without loading the check itself."""

from __future__ import annotations

import hashlib
import json

PREFIX = "consumer:"  # a consumer's test id: consumer:NAME


def consumer_test_id(name: str) -> str:
    return f"{PREFIX}{name}"


def consumer_digest(snapshot: str, command: str, setup: str | None, timeout: int) -> str:
    """The consumer's content as evidence is keyed: its snapshot and how it runs."""
    doc = json.dumps({"snapshot": snapshot, "command": command, "setup": setup, "timeout": timeout}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()
