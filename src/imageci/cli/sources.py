"""Where a command's answers come from: this machine's home (the application
layer, as the local operator) or an imageci server (its API, as the token's
principal). Both give the same rows, so every command prints the same way and
exits with the same codes either way."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imageci.app.ciplans import CiPlan
    from imageci.app.compliance import ComplianceReport
    from imageci.app.consumers import ConsumerRequest, ConsumerRow
    from imageci.app.gating import GateStatus, Promotion, Pruned
    from imageci.app.inventory import VersionDiff
    from imageci.app.livelogs import LiveLog
    from imageci.app.pins import PinRow
    from imageci.app.products import ProductRow
    from imageci.app.quarantines import QuarantineRequest, QuarantineRow
    from imageci.app.queries import EventRow, FlakyRow, ImageRow, Results
    from imageci.app.retention import RetentionReport
    from imageci.app.tokens import NewToken, TokenRow
    from imageci.app.upkeep import GcOutcome, VerifyOutcome
    from imageci.app.vulns import FeedRow, ImportedFeed, VulnReport
    from imageci.client.remote import ApiClient
    from imageci.config import Settings
    from imageci.supply.forms import BomFormat

# Set by the top-level --server option (cli.main).
server_option: str | None = None


class Source(ABC):
    @abstractmethod
    def images(self, name: str | None) -> list[ImageRow]: ...

    @abstractmethod
    def results(self, ref: str, tests: list[str] | None) -> Results: ...

    @abstractmethod
    def events(self, ref: str) -> list[EventRow]: ...

    @abstractmethod
    def flaky(self, name: str | None, since: str) -> list[FlakyRow]: ...

    @abstractmethod
    def gate(self, ref: str) -> GateStatus: ...

    @abstractmethod
    def promote(self, ref: str, to: str, force: bool, reason: str) -> Promotion: ...

    @abstractmethod
    def log(self, ref: str, test: str, run: int | None, attempt: int | None) -> bytes: ...

    @abstractmethod
    def live_logs(self, run: int) -> list[LiveLog]: ...

    @abstractmethod
    def live_read(self, run: int, key: str, offset: int) -> bytes: ...

    @abstractmethod
    def prune(self, older_than: str, name: str | None, dry_run: bool) -> list[Pruned]: ...

    @abstractmethod
    def pin(self, ref: str, reason: str | None) -> PinRow: ...

    @abstractmethod
    def retention(self, name: str | None, dry_run: bool) -> RetentionReport: ...

    @abstractmethod
    def verify(self) -> VerifyOutcome: ...

    @abstractmethod
    def gc(self, force: bool) -> GcOutcome: ...

    @abstractmethod
    def token_create(self, name: str, namespace: str, scopes: str, channel: str | None,
                     expires: str | None) -> NewToken: ...

    @abstractmethod
    def tokens(self) -> list[TokenRow]: ...

    @abstractmethod
    def token_revoke(self, name: str) -> TokenRow: ...

    @abstractmethod
    def products(self) -> list[ProductRow]: ...

    @abstractmethod
    def ci_plan(self, ref: str, testbeds: list[str] | None) -> CiPlan: ...

    @abstractmethod
    def product(self, name: str, namespace: str | None, public: bool | None) -> ProductRow: ...

    @abstractmethod
    def quarantines(self, product: str | None, lifted: bool) -> list[QuarantineRow]: ...

    @abstractmethod
    def quarantine_add(self, request: QuarantineRequest) -> QuarantineRow: ...

    @abstractmethod
    def quarantine_lift(self, entry_id: int, reason: str) -> QuarantineRow: ...

    @abstractmethod
    def consumers(self, product: str | None, removed: bool) -> list[ConsumerRow]: ...

    @abstractmethod
    def consumer_add(self, request: ConsumerRequest) -> ConsumerRow: ...

    @abstractmethod
    def consumer_remove(self, name: str) -> ConsumerRow: ...

    @abstractmethod
    def bom(self, ref: str, form: BomFormat) -> dict[str, Any]: ...

    @abstractmethod
    def diff(self, before: str, after: str) -> VersionDiff: ...

    @abstractmethod
    def vulndb_import(self, path: Path, name: str | None) -> ImportedFeed: ...

    @abstractmethod
    def vulndb_feeds(self) -> list[FeedRow]: ...

    @abstractmethod
    def vulns(self, ref: str) -> VulnReport: ...

    @abstractmethod
    def compliance(self, ref: str, content: Path | None, profile: str | None) -> ComplianceReport: ...


class Local(Source):
    def images(self, name: str | None) -> list[ImageRow]:
        from imageci.app import queries
        from imageci.app.session import Session

        return queries.images(Session.open(), name)

    def results(self, ref: str, tests: list[str] | None) -> Results:
        from imageci.app import queries
        from imageci.app.session import Session

        return queries.results(Session.open(), ref, tests)

    def events(self, ref: str) -> list[EventRow]:
        from imageci.app import queries
        from imageci.app.session import Session

        return queries.events(Session.open(), ref)

    def flaky(self, name: str | None, since: str) -> list[FlakyRow]:
        from imageci.app import queries
        from imageci.app.session import Session
        from imageci.definitions.durations import duration_arg

        return queries.flaky(Session.open(), name, duration_arg(since))

    def gate(self, ref: str) -> GateStatus:
        from imageci.app import gating
        from imageci.app.session import Session

        return gating.gate_status(Session.open(), ref)

    def promote(self, ref: str, to: str, force: bool, reason: str) -> Promotion:
        from imageci.app import gating
        from imageci.app.session import Session

        return gating.promotion_row(gating.promote(Session.open(), ref, to=to, force=force, reason=reason))

    def log(self, ref: str, test: str, run: int | None, attempt: int | None) -> bytes:
        from imageci.app import queries
        from imageci.app.session import Session

        return queries.log_path(Session.open(), ref, test, run=run, attempt=attempt).read_bytes()

    def live_logs(self, run: int) -> list[LiveLog]:
        from imageci.app import livelogs
        from imageci.app.session import Session

        return livelogs.logs(Session.open(), run)

    def live_read(self, run: int, key: str, offset: int) -> bytes:
        from imageci.app import livelogs
        from imageci.app.session import Session

        return livelogs.read(Session.open(), run, key, offset)

    def prune(self, older_than: str, name: str | None, dry_run: bool) -> list[Pruned]:
        from imageci.app import gating
        from imageci.app.session import Session
        from imageci.definitions.durations import duration_arg

        return gating.prune(Session.open(), older_than=duration_arg(older_than), name=name, dry_run=dry_run)

    def verify(self) -> VerifyOutcome:
        from imageci.app import upkeep
        from imageci.app.session import Session

        return upkeep.verify(Session.open())

    def pin(self, ref: str, reason: str | None) -> PinRow:
        from imageci.app import pins
        from imageci.app.session import Session

        return pins.pin(Session.open(), ref, reason)

    def retention(self, name: str | None, dry_run: bool) -> RetentionReport:
        from imageci.app import retention
        from imageci.app.session import Session

        return retention.retention(Session.open(), name=name, dry_run=dry_run)

    def gc(self, force: bool) -> GcOutcome:
        from imageci.app import upkeep
        from imageci.app.session import Session

        return upkeep.gc(Session.open(), force=force)

    def token_create(self, name: str, namespace: str, scopes: str, channel: str | None,
                     expires: str | None) -> NewToken:
        from imageci.app import tokens
        from imageci.app.access import LOCAL
        from imageci.app.session import Session
        from imageci.definitions.durations import duration_arg

        return tokens.create(Session.open(), name, namespace, scopes, channel=channel, by=LOCAL,
                             expires=duration_arg(expires) if expires else None)

    def tokens(self) -> list[TokenRow]:
        from imageci.app import tokens
        from imageci.app.access import LOCAL
        from imageci.app.session import Session

        return tokens.listing(Session.open(), by=LOCAL)

    def token_revoke(self, name: str) -> TokenRow:
        from imageci.app import tokens
        from imageci.app.access import LOCAL
        from imageci.app.session import Session

        return tokens.revoke(Session.open(), name, by=LOCAL)

    def products(self) -> list[ProductRow]:
        from imageci.app import products
        from imageci.app.session import Session

        return products.listing(Session.open())

    def ci_plan(self, ref: str, testbeds: list[str] | None) -> CiPlan:
        from imageci.app import ciplans
        from imageci.app.session import Session

        return ciplans.ci_plan(Session.open(), ref, testbeds)

    def product(self, name: str, namespace: str | None, public: bool | None) -> ProductRow:
        from imageci.app import products
        from imageci.app.session import Session

        return products.configure(Session.open(), name, namespace=namespace, public=public)

    def quarantines(self, product: str | None, lifted: bool) -> list[QuarantineRow]:
        from imageci.app import quarantines
        from imageci.app.session import Session

        return quarantines.entries(Session.open(), product=product, lifted=lifted)

    def quarantine_add(self, request: QuarantineRequest) -> QuarantineRow:
        from imageci.app import quarantines
        from imageci.app.session import Session

        return quarantines.add(Session.open(), request)

    def quarantine_lift(self, entry_id: int, reason: str) -> QuarantineRow:
        from imageci.app import quarantines
        from imageci.app.session import Session

        return quarantines.lift(Session.open(), entry_id, reason)

    def consumers(self, product: str | None, removed: bool) -> list[ConsumerRow]:
        from imageci.app import consumers
        from imageci.app.session import Session

        return consumers.listing(Session.open(), product, removed=removed)

    def consumer_add(self, request: ConsumerRequest) -> ConsumerRow:
        from imageci.app import consumers
        from imageci.app.session import Session

        return consumers.add(Session.open(), request)

    def consumer_remove(self, name: str) -> ConsumerRow:
        from imageci.app import consumers
        from imageci.app.session import Session

        return consumers.remove(Session.open(), name)

    def bom(self, ref: str, form: BomFormat) -> dict[str, Any]:
        from imageci.app import inventory
        from imageci.app.session import Session

        return inventory.bom_document(Session.open(), ref, form)

    def diff(self, before: str, after: str) -> VersionDiff:
        from imageci.app import inventory
        from imageci.app.session import Session

        return inventory.diff(Session.open(), before, after)

    def vulndb_import(self, path: Path, name: str | None) -> ImportedFeed:
        from imageci.app import vulns
        from imageci.app.session import Session

        return vulns.import_feed(Session.open(), path, name=name)

    def vulndb_feeds(self) -> list[FeedRow]:
        from imageci.app import vulns
        from imageci.app.session import Session

        return vulns.feeds(Session.open())

    def vulns(self, ref: str) -> VulnReport:
        from imageci.app import vulns
        from imageci.app.session import Session

        return vulns.report(Session.open(), ref)

    def compliance(self, ref: str, content: Path | None, profile: str | None) -> ComplianceReport:
        from imageci.app import compliance
        from imageci.app.session import Session

        return compliance.report(Session.open(), ref, content=content, profile=profile)


class Server(Source):
    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def images(self, name: str | None) -> list[ImageRow]:
        from imageci.app.queries import ImageRow

        return self.client.get("/images", list[ImageRow], name=name)  # type: ignore[no-any-return]

    def results(self, ref: str, tests: list[str] | None) -> Results:
        from imageci.app.queries import Results

        return self.client.get(f"/images/{self.client.ref(ref)}/results", Results,  # type: ignore[no-any-return]
                               test=tests or None)

    def events(self, ref: str) -> list[EventRow]:
        from imageci.app.queries import EventRow

        return self.client.get(f"/images/{self.client.ref(ref)}/events", list[EventRow])  # type: ignore[no-any-return]

    def flaky(self, name: str | None, since: str) -> list[FlakyRow]:
        from imageci.app.queries import FlakyRow

        return self.client.get("/flaky", list[FlakyRow], name=name, since=since)  # type: ignore[no-any-return]

    def gate(self, ref: str) -> GateStatus:
        from imageci.app.gating import GateStatus

        return self.client.get(f"/images/{self.client.ref(ref)}/gate", GateStatus)  # type: ignore[no-any-return]

    def promote(self, ref: str, to: str, force: bool, reason: str) -> Promotion:
        from imageci.app.gating import Promotion

        return self.client.post(f"/images/{self.client.ref(ref)}/promote", Promotion,  # type: ignore[no-any-return]
                                {"to": to, "force": force, "reason": reason})

    def log(self, ref: str, test: str, run: int | None, attempt: int | None) -> bytes:
        return self.client.get_bytes(f"/images/{self.client.ref(ref)}/log", test=test, run=run, attempt=attempt)

    def live_logs(self, run: int) -> list[LiveLog]:
        return self.client.live_logs(run)

    def live_read(self, run: int, key: str, offset: int) -> bytes:
        return self.client.live_read(run, key, offset)

    def prune(self, older_than: str, name: str | None, dry_run: bool) -> list[Pruned]:
        from imageci.app.gating import Pruned

        return self.client.post("/prune", list[Pruned],  # type: ignore[no-any-return]
                                {"older_than": older_than, "name": name, "dry_run": dry_run})

    def verify(self) -> VerifyOutcome:
        from imageci.app.upkeep import VerifyOutcome

        return self.client.post("/verify", VerifyOutcome, {})  # type: ignore[no-any-return]

    def pin(self, ref: str, reason: str | None) -> PinRow:
        from imageci.app.pins import PinRow

        path = f"/images/{self.client.ref(ref)}/pin"
        if reason is None:
            return self.client.delete(path, PinRow)  # type: ignore[no-any-return]
        return self.client.post(path, PinRow, {"reason": reason})  # type: ignore[no-any-return]

    def retention(self, name: str | None, dry_run: bool) -> RetentionReport:
        from imageci.app.retention import RetentionReport

        return self.client.post("/retention", RetentionReport,  # type: ignore[no-any-return]
                                {"name": name, "dry_run": dry_run})

    def gc(self, force: bool) -> GcOutcome:
        from imageci.app.upkeep import GcOutcome

        return self.client.post("/gc", GcOutcome, {})  # type: ignore[no-any-return]

    def token_create(self, name: str, namespace: str, scopes: str, channel: str | None,
                     expires: str | None) -> NewToken:
        from imageci.app.tokens import NewToken

        return self.client.post("/tokens", NewToken, {  # type: ignore[no-any-return]
            "name": name, "namespace": namespace, "scopes": scopes, "channel": channel, "expires": expires})

    def tokens(self) -> list[TokenRow]:
        from imageci.app.tokens import TokenRow

        return self.client.get("/tokens", list[TokenRow])  # type: ignore[no-any-return]

    def token_revoke(self, name: str) -> TokenRow:
        from imageci.app.tokens import TokenRow

        return self.client.delete(f"/tokens/{self.client.ref(name)}", TokenRow)  # type: ignore[no-any-return]

    def products(self) -> list[ProductRow]:
        from imageci.app.products import ProductRow

        return self.client.get("/products", list[ProductRow])  # type: ignore[no-any-return]

    def ci_plan(self, ref: str, testbeds: list[str] | None) -> CiPlan:
        from imageci.app.ciplans import CiPlan

        return self.client.get(f"/images/{self.client.ref(ref)}/plan", CiPlan,  # type: ignore[no-any-return]
                               testbed=testbeds or None)

    def product(self, name: str, namespace: str | None, public: bool | None) -> ProductRow:
        from imageci.app.products import ProductRow

        return self.client.patch(f"/products/{self.client.ref(name)}", ProductRow,  # type: ignore[no-any-return]
                                 {"namespace": namespace, "public": public})


    def quarantines(self, product: str | None, lifted: bool) -> list[QuarantineRow]:
        from imageci.app.quarantines import QuarantineRow

        return self.client.get("/quarantine", list[QuarantineRow], product=product,  # type: ignore[no-any-return]
                               lifted=lifted or None)

    def quarantine_add(self, request: QuarantineRequest) -> QuarantineRow:
        from imageci.app.quarantines import QuarantineRow

        return self.client.post("/quarantine", QuarantineRow,  # type: ignore[no-any-return]
                                request.model_dump(mode="json"))

    def quarantine_lift(self, entry_id: int, reason: str) -> QuarantineRow:
        from imageci.app.quarantines import QuarantineRow

        return self.client.post(f"/quarantine/{entry_id}/lift", QuarantineRow,  # type: ignore[no-any-return]
                                {"reason": reason})

    def consumers(self, product: str | None, removed: bool) -> list[ConsumerRow]:
        from imageci.app.consumers import ConsumerRow

        return self.client.get("/consumers", list[ConsumerRow], product=product,  # type: ignore[no-any-return]
                               removed=removed or None)

    def consumer_add(self, request: ConsumerRequest) -> ConsumerRow:
        from imageci.app.consumers import ConsumerRow

        return self.client.post("/consumers", ConsumerRow,  # type: ignore[no-any-return]
                                request.model_dump(mode="json"))

    def consumer_remove(self, name: str) -> ConsumerRow:
        from imageci.app.consumers import ConsumerRow

        return self.client.delete(f"/consumers/{name}", ConsumerRow)  # type: ignore[no-any-return]

    def bom(self, ref: str, form: BomFormat) -> dict[str, Any]:
        return self.client.get(f"/images/{self.client.ref(ref)}/bom", dict[str, Any],  # type: ignore[no-any-return]
                               format=form.value)

    def diff(self, before: str, after: str) -> VersionDiff:
        from imageci.app.inventory import VersionDiff

        return self.client.get("/diff", VersionDiff, before=before, after=after)  # type: ignore[no-any-return]

    def vulndb_import(self, path: Path, name: str | None) -> ImportedFeed:
        from imageci.app.vulns import ImportedFeed

        return self.client.post_file("/vulndb", ImportedFeed, path, name=name)  # type: ignore[no-any-return]

    def vulndb_feeds(self) -> list[FeedRow]:
        from imageci.app.vulns import FeedRow

        return self.client.get("/vulndb", list[FeedRow])  # type: ignore[no-any-return]

    def vulns(self, ref: str) -> VulnReport:
        from imageci.app.vulns import VulnReport

        return self.client.get(f"/images/{self.client.ref(ref)}/vulns", VulnReport)  # type: ignore[no-any-return]

    def compliance(self, ref: str, content: Path | None, profile: str | None) -> ComplianceReport:
        from imageci.app.compliance import ComplianceReport
        from imageci.errors import UsageError

        if content is not None:
            raise UsageError("--content evaluates a file of this machine: run it without a server (the server "
                             "evaluates its built-in content)")
        return self.client.get(f"/images/{self.client.ref(ref)}/compliance",  # type: ignore[no-any-return]
                               ComplianceReport, profile=profile)


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

