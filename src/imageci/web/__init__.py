"""The web dashboard: server-rendered pages over the application layer, served
by ``imageci serve`` (with the API's tokens) and ``imageci dashboard`` (the
local home, read-only, on loopback). Imports ``server``, ``app`` and below."""
