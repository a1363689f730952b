"""Fresh VMs without a reboot: a VM of each image and shape is booted once and
saved (memory + frozen disk) as a template, kept for later processes
(``vmtemplates``); every testbed restores it into an overlay of its own, and
``warm`` VMs per image are restored ahead of the tests that will take them."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

from imageci.errors import TestbedError
from imageci.fs import safe_rmtree
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.ssh import SshTestbed
from imageci.testbeds.vm.process import DEFAULT_SHAPE, BootError, Shape, Vm, provide_names, wait_ready
from imageci.testbeds.vm.vmboot import VmMaker
from imageci.testbeds.vm.vmtemplates import DISK, STATE, Template

log = logging.getLogger("imageci")


class SnapshotPool:
    def __init__(self, maker: VmMaker, *, warm: int = 1) -> None:
        self.maker = maker
        self.warm = warm
        self._lock = threading.RLock()  # template() boots while holding it and re-enters
        self._templates: dict[tuple[str, Shape], Template] = {}
        self._failed: dict[tuple[str, Shape], BootError] = {}  # images whose boot failed in this run
        self._warm: dict[tuple[str, Shape], list[tuple[Vm, SshTestbed, Path]]] = {}
        self._filling = 0
        self._left: dict[str, int] = {}  # image digest → testbeds the run will still take (expect())
        self._stopping = False
        self.warm_made = 0
        self.warm_hits = 0

    def template(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> Template:
        """The image's template in this shape: this run's, else one an earlier process kept, else booted now
        (and kept for later ones)."""
        key = (image.digest, shape)
        with self._lock:
            existing = self._templates.get(key)
        if existing:
            return existing
        run_dir, _ = self.maker.run_state()
        name = self.maker.template_name(image, shape)
        with self._lock, self.maker.templates.making(name):
            if key in self._templates:
                return self._templates[key]
            failed = self._failed.get(key)
            if failed is not None:  # one cold boot per image and run: the others are told why at once
                raise BootError(f"{failed.args[0].splitlines()[0]} (the image's boot in this run; the first "
                                "test that needed it has the whole story)", failed.log.decode("utf-8", "replace"))
            t = self.maker.templates.find(name)
            if t is None:
                # a short name: qemu's QMP socket path inside must stay under 108 bytes
                t = self._boot(image, shape, run_dir / f"t{len(self._templates) + len(self._failed)}-"
                                                      f"{image.digest[:8]}")
                if self.maker.template_name(image, shape) == name:  # (not when KVM was demoted at this boot)
                    t = self.maker.templates.keep(name, t)
            self._templates[key] = t
            return t

    def _boot(self, image: ImageHandle, shape: Shape, tdir: Path) -> Template:
        """A template booted (and saved) in ``tdir`` with a key and seed of its own."""
        tdir.mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            identity = self.maker.identity(image, tdir)
            vm, ssh = self.maker.cold_boot(image, tdir, shape, identity)
        except BootError as exc:
            self._failed[(image.digest, shape)] = exc
            safe_rmtree(tdir)  # the VM is stopped; its overlay goes with it
            raise
        except BaseException:
            safe_rmtree(tdir)
            raise
        try:
            provide_names(ssh)  # saved with it: a VM restored from it needs no session of its own for them
            ssh.close()
            vm.save_state(tdir / STATE)
        except BaseException:
            vm.stop()
            safe_rmtree(tdir)
            raise
        vm.stop()
        return Template(tdir / DISK, tdir / STATE, time.monotonic() - started, *identity)

    def restore(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> tuple[Vm, SshTestbed, Path]:
        """A fresh VM from the image's snapshot, ready for SSH."""
        vm, vdir = self.resumed(image, shape)
        try:
            return vm, wait_ready(vm, 60 * self.maker.timeout_multiplier(image.architecture),
                                  want_system_state=False, probe=False), vdir
        except BaseException:
            vm.stop()
            safe_rmtree(vdir)
            raise

    def resumed(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> tuple[Vm, Path]:
        """A fresh VM from the image's snapshot, running again (its memory loaded: qemu's ``loadvm``), before
        anything answers in it; and its directory. A kept template that will not load (made by a qemu that
        reads the same, but not its state) is discarded and the image booted again, once."""
        t = self.template(image, shape)
        try:
            return self._resume(image, shape, t)
        except TestbedError as exc:
            if not t.kept:
                raise
            log.warning(f"the kept VM template of sha256:{image.digest[:12]} did not load ({exc}): booting again")
            with self._lock:
                if self._templates.get((image.digest, shape)) is t:
                    del self._templates[(image.digest, shape)]
                    self.maker.templates.discard(t.disk.parent.name)
            return self._resume(image, shape, self.template(image, shape))

    def _resume(self, image: ImageHandle, shape: Shape, t: Template) -> tuple[Vm, Path]:
        run_dir, _ = self.maker.run_state()
        vdir = Path(tempfile.mkdtemp(dir=run_dir, prefix="vm-"))
        vm = None
        try:
            disk = self.maker.overlay(t.disk, vdir / "disk.qcow2")
            vm = self.maker.new_vm(image, disk, vdir, shape=shape, uefi_vars=t.uefi_vars, identity=(t.key, t.seed))
            vm.start(incoming=t.state)
            vm.resume_incoming()
            return vm, vdir
        except BaseException:
            if vm is not None:
                vm.stop()
            safe_rmtree(vdir)
            raise

    def expect(self, image: ImageHandle, testbeds: int) -> None:
        """The run will take ``testbeds`` VMs of ``image``: no more are restored ahead of time than it will
        still take (a one-test run restores one VM, not a second nobody takes)."""
        with self._lock:
            self._left[image.digest] = testbeds

    def _wanted(self, digest: str) -> int:
        """How many VMs of the image to keep restored ahead of time now."""
        left = self._left.get(digest)
        return self.warm if left is None else min(self.warm, left)

    def warming(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> int:
        """VMs of the image restored ahead of time, waiting or on their way."""
        with self._lock:
            return len(self._warm.get((image.digest, shape), [])) + self._filling

    def take_warm(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> tuple[Vm, SshTestbed, Path] | None:
        """A VM restored ahead of time, if one is waiting; asks for the next one to be made (if the run will
        take it)."""
        if self.warm <= 0:
            return None
        key = (image.digest, shape)
        with self._lock:
            ready = self._warm.setdefault(key, [])
            got = ready.pop(0) if ready else None
            self.warm_hits += got is not None
            if image.digest in self._left:
                self._left[image.digest] = max(0, self._left[image.digest] - 1)
        self._refill(image, shape)
        return got

    def _refill(self, image: ImageHandle, shape: Shape) -> None:
        key = (image.digest, shape)

        def fill() -> None:
            try:
                while True:
                    with self._lock:
                        if self._stopping or len(self._warm.get(key, [])) + self._filling > self._wanted(key[0]):
                            return
                    made = self.restore(image, shape)
                    with self._lock:
                        if self._stopping:
                            made[0].stop()
                            safe_rmtree(made[2])
                            return
                        self._warm.setdefault(key, []).append(made)
                        self.warm_made += 1
            except Exception:  # noqa: BLE001 — a failed warm-up only costs the next test a restore
                return
            finally:
                with self._lock:
                    self._filling -= 1

        with self._lock:
            if self._stopping or len(self._warm.get(key, [])) + self._filling >= self._wanted(key[0]):
                return
            self._filling += 1
        threading.Thread(target=fill, name="imageci-warm-vm", daemon=True).start()

    def shutdown(self) -> None:
        """Stop warm VMs (and a restore in flight); forget the templates (their files live in the
        maker's run directory)."""
        with self._lock:
            self._stopping = True
            warm = [w for ws in self._warm.values() for w in ws]
            self._warm = {}
        for vm, ssh, vdir in warm:
            ssh.disconnect()
            vm.stop()
            safe_rmtree(vdir)
        deadline = time.monotonic() + 120
        while self._filling and time.monotonic() < deadline:  # let a restore in flight finish and stop
            time.sleep(0.1)
        with self._lock:
            self._stopping = False
            self._templates = {}
            self._failed = {}
            self._left = {}
