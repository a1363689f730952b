"""The HTTP API under ``/api/v1`` and the assembly of the whole server (``app``):
one router per resource group; most routes are derived from the application's
operation declarations (``derived``), the rest stream bytes (``images``,
``publishing``) or answer idempotent retries (``runs``). It imports ``server``,
``app`` and below, and the ``web`` and ``feeds`` routers it mounts."""
