"""Feeds: channels in the formats real clients read (LXD/Incus simplestreams), served next to the
API. Imports ``server``, ``app``, ``formats`` and below."""
