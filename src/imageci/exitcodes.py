"""Process exit codes of the ``imageci`` command. Each one means one thing.

They are documented in docs/configuration.md; tests assert them. Worst wins when a run
has several outcomes: ERROR > FAILED > NO_TESTS.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # everything asked for succeeded (flaky tests count as passing)
    FAILED = 1  # at least one test failed (and none errored)
    USAGE = 2  # bad usage or bad input: arguments, definition, suite file, unknown image reference, a bad setting
    ERROR = 3  # a testbed or the harness broke (not the image's fault)
    NO_TESTS = 4  # nothing ran: every selected test was skipped, or none was selected
    GATE_REFUSED = 5  # promotion refused: the gate does not hold
    BUILD_FAILED = 6  # the builder (mmdebstrap) failed; nothing was registered
    STORE_CORRUPT = 7  # `verify` found a blob (or an unpacked rootfs) whose bytes do not match its digest
    CATALOG_UNUSABLE = 8  # the catalog is damaged, not an imageci catalog, or from a newer imageci; untouched
    DENIED = 9  # no valid credentials (unknown, expired or revoked token), or not allowed to do this
    PUSH_FAILED = 10  # `push`: the destination refused or could not be reached; nothing was recorded as pushed
    RUNTIME_UNMET = 11  # `check-consumer`: the image lacks a runtime the project declares; its suite did not run
    BISECT_UNRELIABLE = 12  # `bisect`: the good end did not pass every time, or the bad end did not fail every time
    BISECT_INCONCLUSIVE = 13  # `bisect`: no set of changes could be named (or the one found did not confirm)
    INTERRUPTED = 130  # Ctrl-C / SIGTERM; temporary state was cleaned up
