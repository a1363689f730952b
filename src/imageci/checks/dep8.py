"""DEP-8 (autopkgtest) tests as imageci checks, with autopkgtest's verdicts.

A test passes only if it exits 0 and, unless ``allow-stderr``, writes nothing
to stderr. ``skippable`` turns exit 77 into a skip. Restrictions become the
capabilities a testbed must offer (a mismatch is a skip with the reason);
unknown restrictions are skipped, as the spec asks. ``build-needed`` builds the
tree in the testbed first, as autopkgtest does (its build dependencies installed). ``Depends`` are installed
in the testbed with apt when missing; when they cannot be, the result is
``skip`` with ``skip-not-installable`` and ``error`` otherwise (never ``fail``).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field

from imageci.capabilities import (
    ARCH_PREFIX,
    ARCHIVE,
    ISOLATION_CONTAINER,
    ISOLATION_MACHINE,
    NETWORK,
    REBOOT,
    REVERT,
    ROOT,
)
from imageci.checks.base import Check, Outcome, format_log
from imageci.checks.depcache import DependencyCache, ensure_lists, install
from imageci.definitions.dep8 import Dep8Suite, Dep8Test
from imageci.definitions.limits import Limits
from imageci.testbeds.base import ExecResult, Testbed
from imageci.verdicts import SKIP_EXIT_CODE, Verdict

SRC_DIR = "/var/tmp/imageci/src"
ARTIFACTS = "/var/tmp/imageci/artifacts"
NEEDS_INTERNET = "needs-internet"
# autopkgtest's create-normal-user, remembered in the testbed like /run/autopkgtest-normal-user
NORMAL_USER = """
set -e
if [ -s /run/imageci-normal-user ]; then cat /run/imageci-normal-user; exit 0; fi
for u in test $(for i in 1 2 3 4 5; do echo "test-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \\n')"; done); do
  getent passwd "$u" >/dev/null && continue
  if command -v adduser >/dev/null; then
    adduser --disabled-login --gecos 'Temporary autopkgtest user,,,' "$u" >&2
  else
    useradd --comment 'Temporary autopkgtest user' --create-home --user-group "$u" >&2
  fi
  mkdir -p /run && echo "$u" > /run/imageci-normal-user && echo "$u"
  exit 0
done
exit 1
"""
DEFAULT_TIMEOUT = 2800
# needs-reboot: a test runs /tmp/autopkgtest-reboot MARK; the testbed reboots and the test runs again with
# AUTOPKGTEST_REBOOT_MARK=MARK (autopkgtest's contract)
PID_FILE = "/tmp/imageci-dep8.pid"  # the shell whose child the test is
REBOOT_COMMAND = "/tmp/autopkgtest-reboot"
REBOOT_MARK_FILE = "/run/autopkgtest-reboot-mark"
REBOOT_SCRIPT = f"""#!/bin/sh
# imageci's autopkgtest-reboot MARK: note MARK, end the test; the testbed reboots and runs it again
set -e
[ -n "$1" ] || {{ echo "usage: $0 MARK" >&2; exit 1; }}
printf '%s\\n' "$1" > {REBOOT_MARK_FILE}
wrapper=$(cat {PID_FILE})
for stat in /proc/[0-9]*/stat; do
  read -r pid _ _ parent _ < "$stat" 2>/dev/null || continue
  [ "$parent" != "$wrapper" ] || kill -KILL "$pid"
done
"""
KILLED = (137, -9)
MAX_REBOOTS = 20
# restriction → testbed capability it requires
NEEDS = {"needs-root": ROOT, "isolation-container": ISOLATION_CONTAINER, "isolation-machine": ISOLATION_MACHINE,
         "needs-internet": NETWORK, "breaks-testbed": REVERT, "needs-reboot": REBOOT}
# restrictions that change how the result is judged, not where the test runs
BEHAVIOUR = {"allow-stderr", "skippable", "flaky", "superficial", "rw-build-tree", "skip-not-installable",
             "hint-testsuite-triggers", "needs-recommends", "build-needed"}
BUILD_NEEDED = "build-needed"
# autopkgtest's build of a tree whose tests need it built: patches kept applied for the tests
BUILD_COMMAND = ('DEB_BUILD_OPTIONS="parallel=$(nproc) $DEB_BUILD_OPTIONS" dpkg-buildpackage -us -uc -b && '
                 "dpkg-source --before-build .")


def dependency_names(depends: str, suite: Dep8Suite) -> list[list[str]]:
    """Depends → a list of alternatives per relation, ``@``/``@builddeps@`` expanded,
    version constraints, architecture qualifiers and build profiles dropped."""
    relations: list[list[str]] = []
    # autopkgtest: @builddeps@ always implies build-essential
    text = depends.replace("@builddeps@", ", ".join([*suite.build_depends, "build-essential"]))
    for rel in (r.strip() for r in text.split(",")):
        if not rel:
            continue
        if rel == "@":
            relations += [[b] for b in suite.binaries]
            continue
        alts = []
        for alt in rel.split("|"):
            alt = re.sub(r"\([^)]*\)|\[[^]]*\]|<[^>]*>", "", alt).strip()
            if alt:
                alts.append(alt.split(":")[0] if alt.endswith((":any", ":native")) else alt)
        if alts:
            relations.append(alts)
    return relations


@dataclass(frozen=True)
class Dep8Check(Check):
    suite: Dep8Suite
    test: Dep8Test
    cache: DependencyCache | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        return f"{self.suite.source}/{self.test.name}"

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(repr((self.suite.source, self.test.name, self.test.command, self.test.depends,
                       self.test.restrictions, self.test.features, self.test.architecture)).encode())
        if self.test.path:
            p = self.suite.root / self.test.path
            h.update(p.read_bytes() if p.is_file() else b"<missing>")
        return h.hexdigest()

    @property
    def needs(self) -> tuple[str, ...]:
        """What the restrictions ask of the testbed; without needs-internet, the image's apt
        archive (autopkgtest's contract: the configured archive is always usable)."""
        words = {NEEDS[r] for r in self.test.restrictions if r in NEEDS}
        if NETWORK not in words:
            words.add(ARCHIVE)
        return tuple(sorted(words))

    @property
    def limits(self) -> Limits:
        return Limits()

    @property
    def flaky(self) -> bool:
        return "flaky" in self.test.restrictions

    @property
    def destructive(self) -> bool:
        return "breaks-testbed" in self.test.restrictions

    @property
    def description(self) -> str:
        return f"DEP-8 test {self.test.name} of {self.suite.source}"

    def precheck(self) -> Outcome | None:
        unknown = [r for r in self.test.restrictions if r not in NEEDS and r not in BEHAVIOUR]
        if unknown:
            return Outcome(Verdict.SKIP, f"unknown restriction {unknown[0]}")
        if self.test.path and not (self.suite.root / self.test.path).is_file():
            return Outcome(Verdict.ERROR, f"{self.test.path} is declared in {self.test.control.name} but missing")
        return None

    def _arch_ok(self, testbed: Testbed) -> str | None:
        arches = self.test.architecture
        if not arches:
            return None
        mine = next((c.removeprefix(ARCH_PREFIX) for c in testbed.capabilities() if c.startswith(ARCH_PREFIX)), "")
        allowed = [a for a in arches if not a.startswith("!")]
        if any(a == f"!{mine}" for a in arches) or (allowed and mine not in allowed and "any" not in allowed):
            return f"Architecture: {' '.join(arches)} excludes {mine}"
        return None

    def _install(self, testbed: Testbed) -> tuple[Outcome | None, bytes]:
        depends = self.test.depends
        if BUILD_NEEDED in self.test.restrictions:  # the build's own needs, as autopkgtest installs them
            depends = ", ".join(x for x in (depends, *self.suite.build_depends, "build-essential, fakeroot") if x)
        relations = dependency_names(depends, self.suite)
        if not relations:
            return None, b""
        probe = " ".join(shlex.quote(a) for rel in relations for a in rel)
        r = testbed.exec(["sh", "-c", f"for p in {probe}; do dpkg-query -W -f='${{Status}} ${{Package}}\\n' "
                          "\"$p\" 2>/dev/null | grep '^install ok installed' || true; done"], timeout=120)
        have = {line.split()[-1] for line in r.stdout.decode().splitlines() if line.strip()}
        missing = [rel[0] for rel in relations if not any(a in have for a in rel)]
        if not missing:
            return None, b""
        return install(testbed, missing, recommends="needs-recommends" in self.test.restrictions, cache=self.cache,
                       not_installable=Verdict.SKIP if "skip-not-installable" in self.test.restrictions
                       else Verdict.ERROR)

    def _normal_user(self, testbed: Testbed) -> tuple[str | None, bytes]:
        """The testbed's ordinary user (autopkgtest's create-normal-user: ``test``, or a
        random name when that exists), made once per testbed; None without root."""
        if ROOT not in testbed.capabilities():
            return None, b""
        r = testbed.exec(["sh", "-c", NORMAL_USER], timeout=120)
        name = r.stdout.decode().strip()
        if r.exit_code != 0 or not name:
            return None, format_log("# no ordinary user could be made (tests run as root)", r.stdout, r.stderr)
        return name, b""

    def run(self, testbed: Testbed) -> Outcome:
        arch = self._arch_ok(testbed)
        if arch:
            return Outcome(Verdict.SKIP, arch)
        blocked, install_log = self._install(testbed)
        if blocked is not None:
            return blocked
        install_log += ensure_lists(testbed, self.cache)
        tree = f"{SRC_DIR}/{self.suite.source}"
        testbed.copy_in(self.suite.root, tree)
        user, user_log = self._normal_user(testbed)
        install_log += user_log
        self._prepare(testbed, tree, user)
        if BUILD_NEEDED in self.test.restrictions:
            unbuilt, build_log = _build(testbed, tree, user)
            install_log += build_log
            if unbuilt is not None:
                return Outcome(unbuilt.verdict, unbuilt.reason, unbuilt.exit_code, install_log)
        as_root = "needs-root" in self.test.restrictions
        rounds, install_log, too_many = self._rounds(testbed, self._script(tree, user if as_root else None), tree,
                                                     None if as_root else user, install_log)
        if too_many is not None:
            return too_many
        return self._judge(testbed, rounds, install_log, f" as {user}" if user and not as_root else " as root")

    def _prepare(self, testbed: Testbed, tree: str, user: str | None) -> None:
        q = shlex.quote
        prepare = f"mkdir -p -m 1777 {ARTIFACTS}"
        if self.test.path:
            prepare += f" && chmod +x {q(tree + '/' + self.test.path)}"
        if user:  # autopkgtest gives every file it copies into the testbed to its ordinary user
            prepare += f" && chown -R {q(user)} {q(tree)}"
        if BUILD_NEEDED in self.test.restrictions:  # the build writes its packages beside the tree
            prepare += f" && chmod 1777 {SRC_DIR}"
        testbed.exec(["sh", "-c", prepare], timeout=300)

    def _script(self, tree: str, normal_user: str | None) -> str:
        """The shell that runs the test with the environment autopkgtest gives one (adt_testbed.py);
        ``normal_user``: the ordinary user a root test is told of."""
        q = shlex.quote
        script = ("set -e; export USER=$(id -nu); . /etc/profile >/dev/null 2>&1 || true; "
                  ". ~/.profile >/dev/null 2>&1 || true; "
                  f"export AUTOPKGTEST_ARTIFACTS={ARTIFACTS} ADT_ARTIFACTS={ARTIFACTS}; "
                  "export AUTOPKGTEST_TMP=$(mktemp -d) && export ADTTMP=$AUTOPKGTEST_TMP; "
                  "export DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 DEB_BUILD_OPTIONS=parallel=$(nproc); "
                  "unset LANGUAGE LC_CTYPE LC_NUMERIC LC_TIME LC_COLLATE LC_MONETARY LC_MESSAGES LC_PAPER LC_NAME "
                  "LC_ADDRESS LC_TELEPHONE LC_MEASUREMENT LC_IDENTIFICATION LC_ALL; "
                  f"cd {q(tree)}; ")
        if normal_user:
            script += f"export AUTOPKGTEST_NORMAL_USER={q(normal_user)} ADT_NORMAL_USER={q(normal_user)}; "
        # The test runs as a child of this shell (autopkgtest-reboot kills it; the shell reports 128+9),
        # whose own stderr is silenced so its "Killed" notice is not taken for the test's stderr.
        script += f"echo $$ > {PID_FILE}; exec 3>&2 2>/dev/null; "
        if self.test.command is not None:
            return script + f"bash -ec {q(self.test.command)} 2>&3 3>&-; exit $?"
        # by its absolute path in the tree, as autopkgtest starts it: a test may find its data by "$0"
        return script + f"{q(tree + '/' + (self.test.path or ''))} 2>&3 3>&-; exit $?"

    def _rounds(self, testbed: Testbed, script: str, tree: str, run_as: str | None, install_log: bytes
                ) -> tuple[list[tuple[str, ExecResult]], bytes, Outcome | None]:
        """Run the test, again after each reboot it asks for (``autopkgtest-reboot MARK``); ``run_as``: the
        ordinary user it runs as (None: root). A test that asks for too many reboots fails. Returns the
        rounds, ``install_log`` with what offering reboots logged, and the failure if there was one."""
        q = shlex.quote
        can_reboot = REBOOT in testbed.capabilities()
        rounds: list[tuple[str, ExecResult]] = []
        mark = ""
        while True:
            if can_reboot:
                install_log += _offer_reboot(testbed)
            marked = (f"export AUTOPKGTEST_REBOOT_MARK={q(mark)} ADT_REBOOT_MARK={q(mark)}; " if mark else "") + script
            argv = ["su", "-s", "/bin/bash", run_as, "-c", marked] if run_as else ["bash", "-c", marked]
            res = testbed.exec(argv, cwd=tree, timeout=DEFAULT_TIMEOUT)
            rounds.append((mark, res))
            mark = _reboot_mark(testbed) if can_reboot and res.exit_code in KILLED else ""
            if not mark:
                return rounds, install_log, None
            if len(rounds) > MAX_REBOOTS:
                return rounds, install_log, Outcome(Verdict.FAIL, f"asked for more than {MAX_REBOOTS} reboots",
                                                    res.exit_code, install_log + _rounds_log(rounds))
            testbed.reboot()

    def _judge(self, testbed: Testbed, rounds: list[tuple[str, ExecResult]], install_log: bytes, who: str
               ) -> Outcome:
        """The verdict of the test's last round, as autopkgtest gives it."""
        res = rounds[-1][1]
        header = f"# DEP-8 {self.id} on {testbed.name}{who}: "
        if res.timed_out:
            return Outcome(Verdict.FAIL, f"timed out after {DEFAULT_TIMEOUT}s", None,
                           install_log + _rounds_log(rounds[:-1]) + format_log(header + "timed out", res.stdout,
                                                                                 res.stderr))
        code = res.exit_code
        log = install_log + _rounds_log(rounds[:-1]) + format_log(header + f"exit {code}", res.stdout, res.stderr)
        stderr = b"".join(r.stderr for _, r in rounds)
        if code == SKIP_EXIT_CODE and "skippable" in self.test.restrictions:
            return Outcome(Verdict.SKIP, "test skipped itself (exit 77, skippable)", code, log)
        if code != 0:
            cannot_start = " (the test could not be started: not executable, or its interpreter is missing)"
            return Outcome(Verdict.FAIL, f"non-zero exit status {code}{cannot_start if code in (126, 127) else ''}",
                           code, log)
        if stderr.strip() and "allow-stderr" not in self.test.restrictions:
            first = stderr.decode("utf-8", "replace").strip().splitlines()[0][:200]
            return Outcome(Verdict.FAIL, f"stderr: {first}", code, log)
        return Outcome(Verdict.PASS, "", code, log)


def _build(testbed: Testbed, tree: str, user: str | None) -> tuple[Outcome | None, bytes]:
    """Build the tree in the testbed the way autopkgtest does for ``build-needed`` (``dpkg-buildpackage
    -us -uc -b``, then ``dpkg-source --before-build``), as the ordinary user when there is one; a tree
    that does not build fails the test, with the build's output as its log."""
    script = f"set -e; cd {shlex.quote(tree)}; export DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8; {BUILD_COMMAND}"
    argv = ["su", "-s", "/bin/sh", user, "-c", script] if user else ["sh", "-c", script]
    r = testbed.exec(argv, cwd=tree, timeout=DEFAULT_TIMEOUT)
    who = f" as {user}" if user else " as root"
    if r.timed_out:
        return (Outcome(Verdict.FAIL, f"the tree's build (build-needed) timed out after {DEFAULT_TIMEOUT}s"),
                format_log(f"# build-needed: {BUILD_COMMAND}{who}: timed out", r.stdout, r.stderr))
    log = format_log(f"# build-needed: {BUILD_COMMAND}{who}: exit {r.exit_code}", r.stdout, r.stderr)
    if r.exit_code != 0:
        return Outcome(Verdict.FAIL, f"the tree did not build (build-needed): dpkg-buildpackage exit {r.exit_code}",
                       r.exit_code), log
    return None, log


def _offer_reboot(testbed: Testbed) -> bytes:
    """autopkgtest's reboot command in the testbed (again after each boot: /tmp is emptied)."""
    r = testbed.exec(["sh", "-c", f"cat > {REBOOT_COMMAND} && chmod 0755 {REBOOT_COMMAND} && "
                      f"(ln -sf {REBOOT_COMMAND} /sbin/autopkgtest-reboot 2>/dev/null || true)"],
                     stdin=REBOOT_SCRIPT.encode(), timeout=60)
    return b"" if r.exit_code == 0 else format_log(f"# could not install {REBOOT_COMMAND}", r.stdout, r.stderr)


def _reboot_mark(testbed: Testbed) -> str:
    """The mark a killed test left with autopkgtest-reboot ("" when it was killed otherwise)."""
    r = testbed.exec(["sh", "-c", f"cat {REBOOT_MARK_FILE} 2>/dev/null && rm -f {REBOOT_MARK_FILE}"], timeout=60)
    return r.stdout.decode("utf-8", "replace").strip() if r.exit_code == 0 else ""


def _rounds_log(rounds: list[tuple[str, ExecResult]]) -> bytes:
    """The output of the runs of a test that ended in a reboot it asked for."""
    return b"".join(format_log(f"# ran{f' with AUTOPKGTEST_REBOOT_MARK={mark}' if mark else ''}; it asked for a "
                               "reboot (autopkgtest-reboot)", res.stdout, res.stderr) for mark, res in rounds)


def dep8_checks(suite: Dep8Suite, cache: DependencyCache | None = None) -> list[Dep8Check]:
    """One check per test; ``cache`` keeps installed dependency sets for the next test and run."""
    return [Dep8Check(suite, t, cache) for t in suite.tests]
