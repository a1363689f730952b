"""Talking to an imageci server: where it is and the token to use (``--server``, the environment,
``imageci login``), and ``remote.ApiClient``, which asks the server for any declared operation and
moves bytes (uploads, downloads, live logs). Imports ``app``'s declarations and ``server.statuses``."""
