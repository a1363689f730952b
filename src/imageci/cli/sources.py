"""Where a command's answers come from: this machine's home (the application
layer, as the local operator) or an imageci server (its API, as the token's
principal). Both run the same operation (``imageci.app.operations``) and give
the same rows, so every command prints the same way and exits with the same
codes either way. Only what moves bytes (a log, a live log, a feed file) or
reads a file of this machine has a method of its own."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

    from imageci.app.operations import Operation
    from imageci.app.vulns import ImportedFeed
    from imageci.client.remote import ApiClient
    from imageci.config import Settings

Ans = TypeVar("Ans")

# Set by the top-level --server option (cli.main).
server_option: str | None = None


class Source(ABC):
    @abstractmethod
    def call(self, op: Operation[Any, Ans], req: BaseModel) -> Ans:
        """Operation ``op``'s answer to ``req``."""

    @abstractmethod
    def log(self, ref: str, test: str, run: int | None, attempt: int | None) -> bytes: ...

    @abstractmethod
    def live_read(self, run: int, key: str, offset: int) -> bytes: ...

    @abstractmethod
    def vulndb_import(self, path: Path, name: str | None) -> ImportedFeed: ...


class Local(Source):
    def call(self, op: Operation[Any, Ans], req: BaseModel) -> Ans:
        from imageci.app.access import LOCAL
        from imageci.app.session import Session

        return op.run(Session.open(), req, LOCAL)

    def log(self, ref: str, test: str, run: int | None, attempt: int | None) -> bytes:
        from imageci.app import queries
        from imageci.app.session import Session

        return queries.log_path(Session.open(), ref, test, run=run, attempt=attempt).read_bytes()

    def live_read(self, run: int, key: str, offset: int) -> bytes:
        from imageci.app import livelogs
        from imageci.app.session import Session

        return livelogs.read(Session.open(), run, key, offset)

    def vulndb_import(self, path: Path, name: str | None) -> ImportedFeed:
        from imageci.app import vulns
        from imageci.app.session import Session

        return vulns.import_feed(Session.open(), path, name=name)


class Server(Source):
    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def call(self, op: Operation[Any, Ans], req: BaseModel) -> Ans:
        return self.client.call(op, req)

    def log(self, ref: str, test: str, run: int | None, attempt: int | None) -> bytes:
        return self.client.get_bytes(f"/images/{self.client.ref(ref)}/log", test=test, run=run, attempt=attempt)

    def live_read(self, run: int, key: str, offset: int) -> bytes:
        return self.client.live_read(run, key, offset)

    def vulndb_import(self, path: Path, name: str | None) -> ImportedFeed:
        from imageci.app.vulns import ImportedFeed

        return self.client.post_file("/vulndb", ImportedFeed, path, name=name)  # type: ignore[no-any-return]


def remote_client(settings: Settings) -> ApiClient | None:
    """A client of the configured server (--server, IMAGECI_SERVER, `imageci login`), if any."""
    from imageci.client.remote import ApiClient, find_remote

    remote = find_remote(server_option, settings)
    return None if remote is None else ApiClient(remote)


def source() -> Source:
    """The server when one is configured (--server, IMAGECI_SERVER, `imageci login`), else this home."""
    from imageci.config import Settings

    client = remote_client(Settings.load())
    return Local() if client is None else Server(client)
