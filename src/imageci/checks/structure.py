"""container-structure-test semantics on any testbed.

Verdicts follow container-structure-test v1.19: regexes are searched (not
anchored) in stdout, stderr or the file; every failed expectation is listed;
a command test's exit code must equal ``exitCode`` (default 0); paths and
arguments expand ``$VAR``/``${VAR}`` from the image's environment; a file
existence test looks at the path itself (a symlink is ``L...``, not its
target) and prints permissions the way Go's ``FileMode.String`` does
(``-rwxr-xr-x``, ``urwxr-xr-x`` for setuid, ``dtrwxrwxrwx`` for /tmp).

Where imageci differs on purpose: ``uid``/``gid`` are checked against the
real owner on every testbed (the tar driver of container-structure-test
cannot read owners and always fails them), command tests run on any testbed
(its tar driver cannot run commands at all), and symlinks inside the image
resolve inside the image, never on the host.

Ids: ``cst:command/NAME``, ``cst:existence/NAME``, ``cst:content/NAME``,
``cst:metadata``, ``cst:license/N``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from imageci.checks.base import Check, Outcome, format_log
from imageci.definitions.limits import Limits
from imageci.definitions.structure import (
    CommandTest,
    EnvVar,
    FileContentTest,
    FileExistenceTest,
    LicenseTest,
    MetadataTest,
    StructureSpec,
    go_regex,
)
from imageci.formats.oci import ImageConfig
from imageci.testbeds.base import Testbed
from imageci.verdicts import Verdict

STRUCTURE_VERSION = "1"
DEBIAN_DOC = "/usr/share/doc"
LICENSE_DENY = ("AGPL", "WTFPL")  # what container-structure-test's license test refuses
LICENSE_SKIP = ("libgnutls30",)
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(text: str, env: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` from ``env``; unknown variables become empty (like os.Expand)."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def go_mode_string(mode: int) -> str:
    """Go's os.FileMode.String() for a Unix st_mode: type/special letters, then rwx."""
    letters = ""
    if stat.S_ISDIR(mode):
        letters += "d"
    if stat.S_ISLNK(mode):
        letters += "L"
    if stat.S_ISBLK(mode):
        letters += "D"
    if stat.S_ISCHR(mode):
        letters += "Dc"
    if stat.S_ISFIFO(mode):
        letters += "p"
    if stat.S_ISSOCK(mode):
        letters += "S"
    if mode & stat.S_ISUID:
        letters += "u"
    if mode & stat.S_ISGID:
        letters += "g"
    if mode & stat.S_ISVTX:
        letters += "t"
    rwx = "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return (letters or "-") + rwx


def _search(pattern: str, text: str) -> bool:
    return re.search(go_regex(pattern), text) is not None


@dataclass(frozen=True)
class _Base(Check):
    source: str  # the file it came from, for the description
    config: ImageConfig

    @property
    def needs(self) -> tuple[str, ...]:
        return ()

    @property
    def limits(self) -> Limits:
        return Limits()

    @property
    def flaky(self) -> bool:
        return False

    def precheck(self) -> Outcome | None:
        return None

    def _digest(self, test: object) -> str:
        doc = json.dumps({"cst": STRUCTURE_VERSION, "test": repr(test)}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()

    def _verdict(self, errors: list[str], log: bytes, code: int | None = None) -> Outcome:
        if errors:
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return Outcome(Verdict.FAIL, errors[0][:300] + more, code, log + b"\n".join(e.encode() for e in errors))
        return Outcome(Verdict.PASS, "", code, log)


@dataclass(frozen=True)
class CommandCheck(_Base):
    test: CommandTest
    global_env: tuple[EnvVar, ...] = ()

    @property
    def id(self) -> str:
        return f"cst:command/{self.test.name}"

    @property
    def digest(self) -> str:
        return self._digest((self.test, self.global_env))

    @property
    def description(self) -> str:
        return f"command test from {self.source}"

    def run(self, testbed: Testbed) -> Outcome:
        image_env = self.config.env_map()
        env = dict(image_env)
        for var in (*self.global_env, *self.test.env_vars):
            env[var.key] = expand(var.value, image_env)
        cwd = self.config.workdir or "/"
        log = b""
        for up in self.test.setup:
            r = testbed.exec([expand(a, image_env) for a in up], env=env, cwd=cwd, timeout=600)
            log += format_log(f"# setup: {shlex.join(up)} (exit {r.exit_code})", r.stdout, r.stderr)
            if r.exit_code != 0:
                return Outcome(Verdict.ERROR, f"setup command {shlex.join(up)} exited {r.exit_code}", r.exit_code,
                               log)
        argv = [expand(a, image_env) for a in (self.test.command, *self.test.args)]
        r = testbed.exec(argv, env=env, cwd=cwd, timeout=600)
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        log += format_log(f"# {shlex.join(argv)} (exit {r.exit_code})", r.stdout, r.stderr)
        for down in self.test.teardown:
            t = testbed.exec([expand(a, image_env) for a in down], env=env, cwd=cwd, timeout=600)
            log += format_log(f"# teardown: {shlex.join(down)} (exit {t.exit_code})", t.stdout, t.stderr)
        if r.timed_out:
            return Outcome(Verdict.FAIL, "timed out", None, log)
        errors = [f"expected error {p!r} not found" for p in self.test.expected_error if not _search(p, err)]
        errors += [f"excluded error {p!r} found" for p in self.test.excluded_error if _search(p, err)]
        errors += [f"expected output {p!r} not found" for p in self.test.expected_output if not _search(p, out)]
        errors += [f"excluded output {p!r} found" for p in self.test.excluded_output if _search(p, out)]
        if r.exit_code != self.test.exit_code:
            errors.append(f"exit code {r.exit_code}, expected {self.test.exit_code}")
        return self._verdict(errors, log, r.exit_code)


# Prints "missing" or "<raw mode hex> <uid> <gid>" for the path itself (lstat).
_STAT = 'if [ -e "$1" ] || [ -L "$1" ]; then stat -c "%f %u %g" -- "$1"; else echo missing; fi'


@dataclass(frozen=True)
class ExistenceCheck(_Base):
    test: FileExistenceTest

    @property
    def id(self) -> str:
        return f"cst:existence/{self.test.name}"

    @property
    def digest(self) -> str:
        return self._digest(self.test)

    @property
    def description(self) -> str:
        return f"file existence test from {self.source}"

    def run(self, testbed: Testbed) -> Outcome:
        t = self.test
        path = expand(t.path, self.config.env_map())
        r = testbed.exec(["sh", "-c", _STAT, "sh", path], timeout=120)
        log = format_log(f"# stat {path}", r.stdout, r.stderr)
        fields = r.stdout.decode().split()
        if r.exit_code != 0 or not fields:
            return Outcome(Verdict.ERROR, f"could not examine {path} (exit {r.exit_code})", r.exit_code, log)
        exists = fields != ["missing"]
        if not exists:
            return self._verdict([f"{path} should exist but does not"] if t.should_exist else [], log)
        if not t.should_exist:
            return self._verdict([f"{path} should not exist but does"], log)
        mode, uid, gid = int(fields[0], 16), int(fields[1]), int(fields[2])
        shown = go_mode_string(mode)
        errors = []
        if t.permissions is not None and shown != t.permissions:
            errors.append(f"{path} has permissions {shown}, expected {t.permissions}")
        bits = {"any": 0o111, "owner": 0o100, "group": 0o010, "other": 0o001}
        if t.is_executable_by is not None and not mode & bits[t.is_executable_by]:
            errors.append(f"{path} is not executable by {t.is_executable_by} ({shown})")
        if t.uid is not None and uid != t.uid:
            errors.append(f"{path} is owned by uid {uid}, expected {t.uid}")
        if t.gid is not None and gid != t.gid:
            errors.append(f"{path} has gid {gid}, expected {t.gid}")
        return self._verdict(errors, log)


@dataclass(frozen=True)
class ContentCheck(_Base):
    test: FileContentTest

    @property
    def id(self) -> str:
        return f"cst:content/{self.test.name}"

    @property
    def digest(self) -> str:
        return self._digest(self.test)

    @property
    def description(self) -> str:
        return f"file content test from {self.source}"

    def run(self, testbed: Testbed) -> Outcome:
        path = expand(self.test.path, self.config.env_map())
        r = testbed.exec(["cat", "--", path], timeout=120)
        log = format_log(f"# cat {path}", b"", r.stderr)
        if r.exit_code != 0:
            return self._verdict([f"cannot read {path}: {r.stderr.decode(errors='replace').strip()}"], log)
        text = r.stdout.decode("utf-8", "replace")
        errors = [f"expected content {p!r} not found in {path}" for p in self.test.expected_contents
                  if not _search(p, text)]
        errors += [f"excluded content {p!r} found in {path}" for p in self.test.excluded_contents if _search(p, text)]
        return self._verdict(errors, log)


@dataclass(frozen=True)
class MetadataCheck(_Base):
    """Compares the image's own configuration; no testbed needed."""

    test: MetadataTest

    @property
    def id(self) -> str:
        return "cst:metadata"

    @property
    def digest(self) -> str:
        return self._digest(self.test)

    @property
    def description(self) -> str:
        return f"metadata test from {self.source}"

    def precheck(self) -> Outcome | None:
        t, c = self.test, self.config
        env = c.env_map()
        labels = dict(c.labels)
        errors = []
        for what, want, have in (("env var", (*t.env_vars, *t.env), env), ("label", t.labels, labels)):
            for var in want:
                if var.key not in have:
                    errors.append(f"{what} {var.key} is not set")
                elif not (_search(var.value, have[var.key]) if var.is_regex else var.value == have[var.key]):
                    errors.append(f"{what} {var.key}={have[var.key]!r}, expected {var.value!r}")
        errors += [f"env var {v.key} is set" for v in t.unbound_env_vars if v.key in env]
        if t.cmd is not None and tuple(t.cmd) != c.cmd:
            errors.append(f"cmd is {list(c.cmd)}, expected {list(t.cmd)}")
        if t.entrypoint is not None and tuple(t.entrypoint) != c.entrypoint:
            errors.append(f"entrypoint is {list(c.entrypoint)}, expected {list(t.entrypoint)}")
        if t.workdir is not None and t.workdir != "" and t.workdir != c.workdir:
            errors.append(f"workdir is {c.workdir!r}, expected {t.workdir!r}")
        if t.user is not None and t.user != "" and t.user != c.user:
            errors.append(f"user is {c.user!r}, expected {t.user!r}")
        ports = {p.split("/")[0] for p in c.exposed_ports}
        errors += [f"port {p} is not exposed" for p in t.exposed_ports if p not in ports]
        errors += [f"port {p} is exposed" for p in t.unexposed_ports if p in ports]
        errors += [f"volume {v} is not declared" for v in t.volumes if v not in c.volumes]
        errors += [f"volume {v} is declared" for v in t.unmounted_volumes if v in c.volumes]
        log = json.dumps(c.as_oci(), indent=2, sort_keys=True).encode() + b"\n"
        return self._verdict(errors, log)

    def run(self, testbed: Testbed) -> Outcome:
        out = self.precheck()
        assert out is not None
        return out


# For each package directory under /usr/share/doc: "PKG<TAB>missing" without a
# copyright file, "PKG<TAB>WORD" for each denied word in it (case-insensitive).
def _license_script(files: Sequence[str]) -> str:
    deny = " ".join(LICENSE_DENY)
    skip = " ".join(LICENSE_SKIP)
    listed = " ".join(shlex.quote(f) for f in files)
    return f"""
check() {{ for w in {deny}; do grep -qi -- "$w" "$2" && printf '%s\\t%s\\n' "$1" "$w"; done; return 0; }}
if [ "$1" = debian ]; then
  for d in {DEBIAN_DOC}/*/; do
    p=$(basename "$d"); case " {skip} " in *" $p "*) continue;; esac
    if [ -f "$d/copyright" ]; then check "$p" "$d/copyright"; else printf '%s\\tmissing\\n' "$p"; fi
  done
fi
for f in {listed}; do [ -r "$f" ] && check "$f" "$f" || {{ [ -r "$f" ] || printf '%s\\tunreadable\\n' "$f"; }}; done
true
"""


@dataclass(frozen=True)
class LicenseCheck(_Base):
    test: LicenseTest
    index: int = 1

    @property
    def id(self) -> str:
        return f"cst:license/{self.index}"

    @property
    def digest(self) -> str:
        return self._digest(self.test)

    @property
    def description(self) -> str:
        return f"license test from {self.source}"

    def run(self, testbed: Testbed) -> Outcome:
        mode = "debian" if self.test.debian else "files"
        r = testbed.exec(["sh", "-c", _license_script(self.test.files), "sh", mode], timeout=300)
        log = format_log("# license check", r.stdout, r.stderr)
        if r.exit_code != 0:
            return Outcome(Verdict.ERROR, f"license check exited {r.exit_code}", r.exit_code, log)
        errors = []
        for line in r.stdout.decode("utf-8", "replace").splitlines():
            what, _, why = line.partition("\t")
            if why == "missing":
                errors.append(f"{what}: no copyright file")
            elif why == "unreadable":
                errors.append(f"{what}: cannot read it")
            else:
                errors.append(f"{what}: license mentions {why}")
        return self._verdict(errors, log)


StructureCheck = CommandCheck | ExistenceCheck | ContentCheck | MetadataCheck | LicenseCheck


def structure_checks(spec: StructureSpec, config: ImageConfig) -> list[StructureCheck]:
    src, s = spec.path.name, spec.spec
    out: list[StructureCheck] = [CommandCheck(src, config, t, s.global_env_vars) for t in s.command_tests]
    out += [ExistenceCheck(src, config, t) for t in s.file_existence_tests]
    out += [ContentCheck(src, config, t) for t in s.file_content_tests]
    out += [LicenseCheck(src, config, t, i) for i, t in enumerate(s.license_tests, start=1)]
    if s.metadata_test is not None:
        out.append(MetadataCheck(src, config, s.metadata_test))
    return out
