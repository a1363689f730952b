"""The ``imageci`` command (Typer): each command parses its arguments, asks an operation of this
home or of the configured server (``sources``) and prints the answer; exit codes are
``imageci.exitcodes``'. An interface: it imports ``app``, ``client`` and the server it starts."""
