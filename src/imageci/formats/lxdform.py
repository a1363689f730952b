"""Whether a channel's LXD feed lists a version, read from its ``build_info["lxd"]`` alone (the query
commands import this without the ORM or any builder)."""

from __future__ import annotations

INIT = "/sbin/init"  # what an LXD container boots: a version without it is left out of the feed


def feed_state(info: object) -> str:
    """Whether the LXD feed lists a version, from its ``build_info["lxd"]``: ``listed``, or why not."""
    if not isinstance(info, dict) or not isinstance(info.get("fingerprint"), str):
        reason = info.get("error") if isinstance(info, dict) and isinstance(info.get("error"), str) else None
        return f"not listed: no LXD form{f' ({reason})' if reason else ''}"
    if info.get("bootable") == "no":
        return f"not listed: no {INIT} (lxc launch cannot start it)"
    return "listed"
