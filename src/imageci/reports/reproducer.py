"""A script per run that re-runs exactly that run: the same image bytes (by
digest), the same test revision (a snapshot of the suite taken when it ran),
the same testbeds and options. ``$IMAGECI_HOME/runs/<id>/reproduce.sh``.

DEP-8 trees are referred to by path (a source tree is not ours to copy); a
``--dep8-package`` source is the one cached for that run's package version.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from imageci.config import SECRET_VARIABLES, VARIABLES
from imageci.fs import write_file_atomically

# Every setting (imageci.config.VARIABLES) that is set is pinned, except secrets (the API token, the broker
# URL), where the tests ran (a reproducer runs them here, with the local executor) and who is told of the
# outcome (a reproduction notifies nobody).
PLACEMENT = frozenset({"IMAGECI_EXECUTOR", "IMAGECI_VISIBILITY_TIMEOUT"})
NOTIFICATIONS = frozenset({"IMAGECI_WEBHOOK_URL", "IMAGECI_MAIL_FROM", "IMAGECI_MAIL_TO"})
PINNED_ENV = tuple(v for v in VARIABLES if v not in SECRET_VARIABLES | PLACEMENT | NOTIFICATIONS)
# A run against a server is re-run from any machine: what names this machine's files is not pinned.
MACHINE_LOCAL = frozenset({"IMAGECI_HOME", "IMAGECI_DB_URL", "IMAGECI_BUILD_CACHE", "IMAGECI_HOSTS",
                           "IMAGECI_SERVER"})


@dataclass
class RunSpec:
    run_id: int
    image: str  # NAME@SERIAL: exactly that version (serials are never reused, a version's bytes never change)
    digest: str
    suite: Path | None
    tests: list[str] | None  # None: the whole suite
    testbeds: list[str]
    retries: int
    jobs: int
    fresh: str | None
    dep8: list[Path] = field(default_factory=list)
    dep8_packages: list[Path] = field(default_factory=list)  # the fetched trees
    quarantine: Path | None = None  # --quarantine FILE (the suite's own travels with its snapshot)
    structure: list[Path] = field(default_factory=list)  # --structure FILEs, copied
    testinfra: list[Path] = field(default_factory=list)  # --testinfra modules (by path: they may import siblings)
    limits: list[str] = field(default_factory=list)  # --limit KEY=VALUE
    suite_given: bool = True  # --suite DIR (False: the version's stored suite)


def write_reproducer(run_dir: Path, spec: RunSpec, env: dict[str, str] | None = None) -> Path:
    """Snapshot the suite into ``run_dir`` and write ``reproduce.sh`` there (for this machine)."""
    env = dict(os.environ) if env is None else env
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # by version, not by digest alone: the same bytes may be published as versions of several products
    argv = [sys.executable, "-m", "imageci.cli", "run" if spec.tests else "test", spec.image]
    if spec.suite is not None:
        snapshot = run_dir / "suite"
        if snapshot.exists():
            shutil.rmtree(snapshot)
        shutil.copytree(spec.suite, snapshot, symlinks=True)
        argv += ["--suite", str(snapshot)]
    for tb in spec.testbeds:
        argv += ["--testbed", tb]
    argv += ["--retries", str(spec.retries), "--jobs", str(spec.jobs), "--rerun-all"]
    if spec.fresh:
        argv += ["--fresh", spec.fresh]
    if spec.quarantine is not None:
        shutil.copy2(spec.quarantine, run_dir / "quarantine.yaml")
        argv += ["--quarantine", str(run_dir / "quarantine.yaml")]
    for i, path in enumerate(spec.structure, start=1):
        copy = run_dir / f"structure-{i}-{path.name}"
        shutil.copy2(path, copy)
        argv += ["--structure", str(copy)]
    for module in spec.testinfra:
        argv += ["--testinfra", str(module.resolve())]
    for tree in [*spec.dep8, *spec.dep8_packages]:
        argv += ["--dep8", str(tree.resolve())]
    for item in spec.limits:
        argv += ["--limit", item]
    lines = [
        "#!/bin/sh",
        f"# Re-runs imageci run {spec.run_id}: {spec.image} (sha256:{spec.digest}),",
        "# the suite as it was then (snapshot next to this file), the same testbeds and options.",
        "# Extra arguments are passed on (e.g. --junit out.xml).",
        "set -eu",
    ]
    lines += [f"export {k}={shlex.quote(env[k])}" for k in PINNED_ENV if k in env]
    # extra arguments are options, so they go before "--"; test names after it (a test may be named "--help")
    names = f" -- {shlex.join(spec.tests)}" if spec.tests else ""
    lines.append(f"exec {shlex.join(argv)} \"$@\"{names}")
    script = run_dir / "reproduce.sh"
    write_file_atomically(script, ("\n".join(lines) + "\n").encode())
    script.chmod(0o700)  # only its owner: it may hold a database URL
    return script


def write_portable_reproducer(run_dir: Path, spec: RunSpec, server: str, image: str,
                              env: dict[str, str] | None = None) -> Path:
    """``reproduce.sh`` for a run whose image came from ``server`` (as ``image``, NAME@SERIAL there): one
    self-contained file that re-runs it on any machine with imageci and a token (IMAGECI_TOKEN or
    ``imageci login``): the image is fetched from the server by digest, the suite is the version's
    stored one, and what was given as files (``--suite``, ``--structure``, ``--quarantine``) travels
    inside the script. The new run is recorded on the server too. DEP-8 trees and testinfra modules
    are named by path and must exist there."""
    env = dict(os.environ) if env is None else env
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    bundle: dict[str, Path] = {}
    argv = ['"${IMAGECI:-imageci}"', "--server", shlex.quote(server), "run" if spec.tests else "test",
            shlex.quote(image)]
    if spec.suite is not None and spec.suite_given:
        bundle["suite"] = spec.suite
        argv += ["--suite", '"$bundle/suite"']
    for tb in spec.testbeds:
        argv += ["--testbed", shlex.quote(tb)]
    argv += ["--retries", str(spec.retries), "--jobs", str(spec.jobs)]
    if spec.fresh:
        argv += ["--fresh", shlex.quote(spec.fresh)]
    if spec.quarantine is not None:
        bundle["quarantine.yaml"] = spec.quarantine
        argv += ["--quarantine", '"$bundle/quarantine.yaml"']
    for i, path in enumerate(spec.structure, start=1):
        bundle[f"structure-{i}-{path.name}"] = path
        argv += ["--structure", f'"$bundle/structure-{i}-{path.name}"']
    for module in spec.testinfra:
        argv += ["--testinfra", shlex.quote(str(module.resolve()))]
    for tree in [*spec.dep8, *spec.dep8_packages]:
        argv += ["--dep8", shlex.quote(str(tree.resolve()))]
    for item in spec.limits:
        argv += ["--limit", shlex.quote(item)]
    lines = [
        "#!/bin/sh",
        f"# Re-runs imageci run {spec.run_id} of {image} (sha256:{spec.digest}) from {server}, on any machine:",
        "# the image is fetched by digest, the new run is recorded there. Needs IMAGECI_TOKEN (scope test) or",
        "# `imageci login`; IMAGECI=/path/to/imageci if it is not on PATH. Extra arguments are passed on.",
        "set -eu",
    ]
    lines += [f"export {k}={shlex.quote(env[k])}" for k in PINNED_ENV if k in env and k not in MACHINE_LOCAL]
    if bundle:
        lines += ['bundle=$(mktemp -d)', "trap 'rm -rf \"$bundle\"' EXIT",
                  "base64 -d <<'END_OF_BUNDLE' | tar -xzf - -C \"$bundle\"", _packed(bundle), "END_OF_BUNDLE"]
    names = f" -- {shlex.join(spec.tests)}" if spec.tests else ""
    lines.append(f"{' '.join(argv)} \"$@\"{names}")
    script = run_dir / "reproduce.sh"
    write_file_atomically(script, ("\n".join(lines) + "\n").encode())
    script.chmod(0o700)
    return script


def _packed(files: dict[str, Path]) -> str:
    """``files`` (name in the bundle → file or directory here) as a base64 tar.gz, lines of 76."""
    import base64
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, path in files.items():
            tar.add(path, arcname=name, filter=lambda t: t.replace(uid=0, gid=0, uname="", gname=""))
    text = base64.b64encode(buf.getvalue()).decode()
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def recorded_reproducer(run_id: int, image: str, digest: str, options: dict[str, object], server: str) -> str:
    """A ``reproduce.sh`` made from what the catalog recorded of a run (its tests, testbeds, retries), for
    a reader of the dashboard: it re-runs them against ``server``. A run whose suite came from files
    (``--suite`` and the like) needs them again: the script asks for the directory in ``$SUITE``. No setting
    of the machine that ran it is in it (a run's own script may pin a database URL)."""
    given_tests, given_beds = options.get("tests"), options.get("testbeds")
    tests = [str(t) for t in given_tests] if isinstance(given_tests, list) and options.get("named") else []
    beds = [str(t) for t in given_beds] if isinstance(given_beds, list) else []
    retries = options.get("retries", 0)
    argv = ['"${IMAGECI:-imageci}"', "--server", shlex.quote(server), "run" if tests else "test", shlex.quote(image)]
    lines = [
        "#!/bin/sh",
        f"# Re-runs imageci run {run_id} of {image} (sha256:{digest.removeprefix('sha256:')}) from {server}:",
        "# the same tests and testbeds; the image is fetched by digest and the new run is recorded there.",
        "# Needs IMAGECI_TOKEN (scope test) or `imageci login`.",
    ]
    if options.get("suite_given"):
        lines.append("# That run's suite was given as files, which the server does not keep: SUITE=DIR names them.")
        argv += ["--suite", '"${SUITE:?set SUITE to the suite directory that run was given}"']
    for tb in beds:
        argv += ["--testbed", shlex.quote(tb)]
    argv += ["--retries", str(int(retries) if isinstance(retries, int) else 0)]
    names = f" -- {shlex.join(tests)}" if tests else ""
    return "\n".join([*lines, "set -eu", f"{' '.join(argv)} \"$@\"{names}"]) + "\n"
