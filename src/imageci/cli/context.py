"""What every command needs: settings, the catalog, the artifact store, and
turning errors into the documented exit codes."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from imageci.build.oci import ImageConfig
from imageci.checks.base import Check
from imageci.checks.builtin import GROUPS, builtin_checks
from imageci.checks.script import ScriptCheck
from imageci.checks.structure import structure_checks
from imageci.checks.testinfra import checks_from_testinfra
from imageci.config import Settings
from imageci.definitions.image import Gate, ImageDefinition, LoadedDefinition, load_definition
from imageci.definitions.structure import load_structure
from imageci.definitions.suite import Suite, load_suite
from imageci.errors import ImageciError, UsageError
from imageci.exitcodes import ExitCode
from imageci.homelock import HomeLock
from imageci.owners import Owner, lock_alive, process_owner
from imageci.store.blobs import BlobStore
from imageci.store.catalog import Catalog
from imageci.store.models import Version

# Wide enough for tables when output goes to a file or a CI log.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

F = TypeVar("F", bound=Callable[..., Any])


class _ConsoleLog(logging.Handler):
    """Warnings from the layers below (e.g. a changed cache rebuilt) shown to the user."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]warning[/]: {escape(record.getMessage())}", highlight=False)


def show_warnings() -> None:
    logger = logging.getLogger("imageci")
    if not any(isinstance(h, _ConsoleLog) for h in logger.handlers):
        logger.addHandler(_ConsoleLog(logging.WARNING))
        logger.propagate = False


def _sigterm(_signo: int, _frame: object) -> None:
    raise KeyboardInterrupt


def handle_errors(fn: F) -> F:
    """Map ImageciError → its exit code, Ctrl-C/SIGTERM → 130, with a clear message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _sigterm)
        try:
            return fn(*args, **kwargs)
        except ImageciError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted: temporary state cleaned up[/]")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]


@dataclass
class Context:
    settings: Settings
    _catalog: Catalog | None = field(default=None)
    _store: BlobStore | None = field(default=None)
    _lock: HomeLock | None = field(default=None)

    @classmethod
    def load(cls) -> Context:
        settings = Settings.load()
        settings.ensure()
        ctx = cls(settings)
        ctx.lock.shared()  # `imageci gc` waits for no one else to hold the home
        return ctx

    @property
    def lock(self) -> HomeLock:
        if self._lock is None:
            self._lock = HomeLock(self.settings.home)
        return self._lock

    @property
    def owner(self) -> Owner:
        """This process's owner token (its resources and runs carry it)."""
        return process_owner(self.settings.tmp_dir)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.open(self.settings.db_url)
            for run in self._catalog.abort_dead_runs(lambda owner: lock_alive(Path(owner))):
                n = len(self._catalog.attempts(run.image_digest, run_id=run.id))
                err_console.print(f"[yellow]run {run.id} was aborted[/]: the imageci process running it died "
                                  f"(killed or crashed); its {n} recorded attempt(s) are kept", highlight=False)
        return self._catalog

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            self._store = BlobStore(self.settings.store_dir, self.owner.token)
        return self._store

    @staticmethod
    def definition_for(version: Version) -> LoadedDefinition | None:
        """The definition the version was built from, if it is still where it was."""
        info = json.loads(version.build_info or "{}")
        def_path = info.get("definition_path")
        if def_path and Path(def_path).exists():
            return load_definition(Path(def_path))
        return None

    def suite_dir_for(self, version: Version, override: Path | None) -> Path:
        if override is not None:
            return override
        loaded = self.definition_for(version)
        suite = loaded.suite_dir() if loaded else None
        if suite is None:
            raise UsageError(f"{version.product.name}@{version.serial}: no test suite known (its definition names "
                             "none or moved); pass --suite DIR")
        return suite

    def gate_for(self, version: Version) -> Gate | None:
        loaded = self.definition_for(version)
        if loaded is None or loaded.definition.tests is None:
            return None
        return loaded.definition.tests.gate

    def keep_for(self, version: Version) -> int:
        loaded = self.definition_for(version)
        return loaded.definition.keep if loaded else ImageDefinition.model_fields["keep"].default


def load_checks(suite_dir: Path, names: list[str] | None = None) -> list[Check]:
    return checks_of(load_suite(suite_dir), names)


def checks_of(suite: Suite, names: list[str] | None = None, config: ImageConfig | None = None) -> list[Check]:
    """The suite's checks (those named, when ``names``): scripts, built-ins, and the tests of the
    container-structure-test files and testinfra modules it lists. ``config`` is the image's own
    configuration, for structure tests that read it."""
    members = tuple(n for b in suite.builtins for n in GROUPS.get(b.name, ()))
    listed: list[Check] = [c for path in suite.structure
                           for c in structure_checks(load_structure(path), config or ImageConfig())]
    listed += [c for path in suite.testinfra for c in checks_from_testinfra(path)]
    scripts: list[Check] = [ScriptCheck(spec) for spec in
                            suite.select(names, also=members + tuple(c.id for c in listed))]
    chosen = [c for c in listed if not names or c.id in names]
    return scripts + list(builtin_checks(suite, names or None)) + chosen


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
