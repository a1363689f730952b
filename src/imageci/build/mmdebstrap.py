"""Building a Debian-family rootfs tarball with mmdebstrap."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imageci import cacheuse
from imageci.build.inputs import MirrorState, builder_id
from imageci.definitions.image import ImageDefinition, RunStep, WriteStep, package_applies
from imageci.errors import BuildError

MANIFEST_FORMAT = r"${Package}\t${Version}\t${Architecture}\n"
# Host-specific files mmdebstrap copies in; they must not ship in an image. A resolv.conf that is a link
# was made by a package of the image (systemd-resolved's stub): it stays.
HYGIENE_HOOK = '{ [ -L "$1/etc/resolv.conf" ] || rm -f "$1/etc/resolv.conf"; } && rm -f "$1/etc/hostname"'


@dataclass
class BuildOutput:
    rootfs: Path
    manifest: Path
    log: Path
    source_date_epoch: int
    command: list[str]
    seconds: float
    cached: bool = False


@dataclass
class BuildPlan:
    definition: ImageDefinition
    mirror: MirrorState
    workdir: Path
    hooks_files: list[Path] = field(default_factory=list)
    extra_packages: list[str] = field(default_factory=list)  # what the image's format needs (build.bootdisk)
    extra_files: dict[str, str] = field(default_factory=dict)  # path in the image → content, written last

    @property
    def source_date_epoch(self) -> int:
        if self.definition.source_date_epoch is not None:
            return self.definition.source_date_epoch
        return self.mirror.epoch

    def command(self) -> list[str]:
        d = self.definition
        argv = ["mmdebstrap", f"--variant={d.variant}", f"--architectures={d.architecture}",
                f"--components={','.join(d.components)}",
                "--mode=root" if os.geteuid() == 0 else "--mode=unshare", "--format=tar"]
        packages = [name for p in d.packages if (name := package_applies(p, d.architecture)) is not None]
        packages += [p for p in self.extra_packages if p not in packages]
        if packages:
            argv.append(f"--include={','.join(packages)}")
        steps = [*d.customize, *(WriteStep(write=path, content=text) for path, text in self.extra_files.items())]
        for i, step in enumerate(steps):
            if isinstance(step, RunStep):
                argv.append(f"--customize-hook=chroot \"$1\" /bin/sh -ec {shlex.quote(step.run)}")
            elif isinstance(step, WriteStep):
                src = self.workdir / f"write-{i}"
                src.write_text(step.content, encoding="utf-8")
                self.hooks_files.append(src)
                parent = str(Path(step.write).parent)
                argv.append(f"--customize-hook=mkdir -p \"$1\"{shlex.quote(parent)}")
                argv.append(f"--customize-hook=upload {shlex.quote(str(src))} {shlex.quote(step.write)}")
                argv.append(f"--customize-hook=chmod {step.mode} \"$1\"{shlex.quote(step.write)}")
        argv.append(f"--customize-hook={HYGIENE_HOOK}")
        manifest = self.workdir / "manifest.tsv"
        argv.append(f"--customize-hook=chroot \"$1\" dpkg-query -W -f={shlex.quote(MANIFEST_FORMAT)} "
                    f"> {shlex.quote(str(manifest))}")
        argv += [d.suite, str(self.workdir / "rootfs.tar"), d.mirror]
        return argv


def run_mmdebstrap(plan: BuildPlan, on_line: Callable[[str], None] | None = None) -> BuildOutput:
    """Run mmdebstrap into ``plan.workdir``. On any failure or interrupt the
    process group is stopped and the caller removes the workdir."""
    argv = plan.command()
    log_path = plan.workdir / "build.log"
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(plan.source_date_epoch),
               TMPDIR=str(plan.workdir), LC_ALL="C.UTF-8")
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"# {builder_id()}\n# SOURCE_DATE_EPOCH={plan.source_date_epoch}\n# "
                  + " ".join(shlex.quote(a) for a in argv) + "\n")
        log.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, text=True, errors="replace")
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if on_line:
                    on_line(line.rstrip("\n"))
            rc = proc.wait()
        except BaseException:
            _stop(proc)
            raise
    if rc != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise BuildError(f"mmdebstrap failed with exit code {rc}:\n" + "\n".join(tail))
    return BuildOutput(rootfs=plan.workdir / "rootfs.tar", manifest=plan.workdir / "manifest.tsv",
                       log=log_path, source_date_epoch=plan.source_date_epoch, command=argv,
                       seconds=time.monotonic() - started)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Ask mmdebstrap to clean up (SIGINT), then insist."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def from_cache(cache_dir: Path, key: str, workdir: Path, epoch: int) -> BuildOutput | None:
    """A build output stored earlier under ``key`` in a shared build cache."""
    entry = cache_dir / key
    names = ("rootfs.tar", "manifest.tsv", "build.log")
    if not all((entry / n).is_file() for n in names):
        return None
    cacheuse.touch(entry)  # used now: the least recently used entries go first when the cache is over budget
    for n in names:
        shutil.copyfile(entry / n, workdir / n)
    return BuildOutput(rootfs=workdir / "rootfs.tar", manifest=workdir / "manifest.tsv", log=workdir / "build.log",
                       source_date_epoch=epoch, command=[], seconds=0.0, cached=True)


def to_cache(cache_dir: Path, key: str, out: BuildOutput) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{key[:12]}-"))
    try:
        for p in (out.rootfs, out.manifest, out.log):
            shutil.copyfile(p, tmp / p.name)
        os.replace(tmp, cache_dir / key)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_file(cache_dir: Path | None, key: str, name: str) -> Path | None:
    """Another output of the build stored under ``key`` (a disk image made from its tree)."""
    if cache_dir is None:
        return None
    path = cache_dir / key / name
    return path if path.is_file() else None


def cache_file(cache_dir: Path | None, key: str, path: Path, name: str | None = None) -> None:
    """Keep ``path`` (as ``name``, by default its own) with the build output stored under ``key`` (when
    there is one)."""
    entry = cache_dir / key if cache_dir is not None else None
    if entry is None or not entry.is_dir():
        return
    name = name or path.name
    try:  # a name of its own: two builders of the same inputs may both be storing it
        fd, tmp_name = tempfile.mkstemp(dir=entry, prefix=f".{name}.")
    except OSError:
        return
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, entry / name)
    except OSError:
        tmp.unlink(missing_ok=True)
