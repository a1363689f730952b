"""Feeds: channels in the formats real clients read (LXD/Incus simplestreams)."""
