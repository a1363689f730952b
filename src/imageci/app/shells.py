"""``imageci shell REF [--testbed T] [-- CMD…]``: a person in a fresh testbed of exactly that version.

The testbed is made as a test's would be (the same backend, the same isolation, the limits a test gets by
default, the mode its ``needs`` choose), the command (a login shell without one) runs there on the caller's
terminal, and the testbed is removed when it exits. The visit is an event of the version (who, when, which
testbed): audited, never evidence — no attempt, no verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from imageci.app.session import Session
from imageci.app.versions import config_of
from imageci.capabilities import KNOWN
from imageci.definitions.limits import DEFAULTS
from imageci.engine.runner import Engine
from imageci.errors import TestbedError, UsageError
from imageci.testbeds.base import Backend
from imageci.testbeds.registry import make_backend
from imageci.testbeds.terminal import LOGIN, RunFn

AttachFn = Callable[[RunFn], int]  # runs a command on the caller's terminal (testbeds.terminal.on_terminal)


def shell(session: Session, ref: str, on_terminal: AttachFn, *, testbed: str = "sandbox",
          argv: Sequence[str] = (), needs: Sequence[str] = (), backend: Backend | None = None) -> int:
    """Run ``argv`` (a login shell when empty) in a fresh testbed of ``ref``'s bytes on the caller's terminal;
    the command's exit status. Recorded as an event of the version. ``backend``: the testbed's, when the caller
    keeps one (warm VMs); else one made from the settings and finished after."""
    unknown = [w for w in needs if w not in KNOWN]
    if unknown:
        raise UsageError(f"unknown capability {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}")
    version = session.catalog.resolve(ref)
    own = backend is None
    backend = backend or make_backend(testbed, session.settings)
    engine = Engine(session.catalog, session.store, {testbed: backend})
    image = engine.image_handle(version, config_of(session, version))
    why = backend.why_not(image)
    missing = sorted(set(needs) - set(backend.capabilities(image)))
    if why or missing:
        raise TestbedError(f"testbed {testbed}: {why or 'lacks ' + ', '.join(missing)}")
    command = list(argv) or LOGIN
    session.catalog.note_event(version.id, f"shell on {testbed}: " + (" ".join(argv)[:200] if argv else
                                                                        "an interactive login shell"))
    backend.expect(image, 1)
    bed = backend.create(image, frozenset(needs), DEFAULTS)
    try:
        bed.open()
        return on_terminal(lambda tty, fds: bed.attached(command, tty=tty, fds=fds))
    finally:
        try:
            bed.close()
        finally:
            if own:
                backend.finish()
