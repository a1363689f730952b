"""`imageci build`, `publish`, `import` and `push`: versions made here, sent to a server or a registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imageci.cli.context import console, handle_errors, print_json
from imageci.cli.options import DefArg, RefArg

if TYPE_CHECKING:
    from imageci.app.session import Session
    from imageci.build.service import BuildResult
    from imageci.client.remote import ApiClient


def register(main: typer.Typer) -> None:
    main.command()(build)
    main.command()(publish)
    main.command('import')(import_)
    main.command()(push)


def _build(session: Session, definition: Path, force: bool, only: set[str] | None = None) -> list[BuildResult]:
    from imageci.app import building

    with console.status(f"building {definition}…") as status:
        what = definition.name

        def on_line(line: str) -> None:
            nonlocal what
            if line.startswith("== "):  # the next architecture's product
                what = line[3:].split(":")[0]
            if line.startswith(("I:", "W:", "E:", "== ")):
                status.update(f"building {what}: {line[:100]}")
        results = building.build(session, definition, force=force, on_line=on_line, only=only)
    for result in results:
        show_build(result)
    return results


def show_build(result: BuildResult) -> None:
    from imageci.store.models import label

    v = result.version
    if result.skipped:
        console.print(f"[cyan]unchanged inputs[/] (input hash {result.input_hash[:12]}): "
                      f"{label(v)} already built, skipping build (--force rebuilds)")
    elif result.identical:
        console.print(f"[cyan]rebuilt bit-identical[/] to {label(v)} (sha256:{v.digest[:12]})")
    else:
        src = " from the build cache" if result.from_cache else f" in {result.seconds:.1f}s"
        console.print(f"[green]built[/] {label(v)}{src}, sha256:{v.digest[:12]}, published to [bold]testing[/]")


@handle_errors
def build(definition: DefArg,
          force: Annotated[bool, typer.Option("--force", help="rebuild even if the inputs did not change")] = False,
          publish: Annotated[bool, typer.Option("--publish", help="then publish it to the server's testing "
                                                "channel (--server, IMAGECI_SERVER or `imageci login`)")]
          = False,
          arch: Annotated[list[str] | None, typer.Option("--arch", metavar="ARCH", help="only this one of the "
                                                         "definition's architectures (repeatable)")] = None) -> None:
    """Build an image from its definition and publish it to the testing channel (a definition listing
    `architectures` makes one product per architecture, NAME-ARCH)."""
    from imageci.app.session import Session
    from imageci.store.models import label

    session = Session.open()
    if publish:
        _server(session)  # before building: no server, no build
    results = _build(session, definition, force, set(arch) if arch else None)
    if publish:
        for result in results:
            _push(session, label(result.version))


def _server(session: Session) -> ApiClient:
    from imageci.cli.sources import remote_client
    from imageci.errors import UsageError

    client = remote_client(session.settings)
    if client is None:
        raise UsageError("no server to publish to: --server URL, IMAGECI_SERVER or `imageci login URL`")
    return client


def _push(session: Session, ref: str) -> None:
    from imageci.app import publishing

    client = _server(session)
    with console.status(f"publishing {ref} to {client.remote.url}…"):
        done = publishing.push(session, ref, client)
    if done.created:
        console.print(f"[green]published[/] {done.image} ({done.digest[:19]}) to {client.remote.url}, namespace "
                      f"{done.namespace}, channel [bold]testing[/]", highlight=False)
    else:
        console.print(f"already published: {done.image} ({done.digest[:19]}) on {client.remote.url} "
                      f"({done.state})", highlight=False)


@handle_errors
def publish(ref: RefArg) -> None:
    """Publish a version of this home to a server (--server, IMAGECI_SERVER or `imageci login`): its
    artifacts are uploaded (only those the server lacks) and checked, then it appears on the server's
    testing channel in one step. Publishing the same bytes again changes nothing."""
    from imageci.app.session import Session

    _push(Session.open(), ref)


@handle_errors
def import_(name: Annotated[str, typer.Argument(help="the product to import it as (image name)")],
            source: Annotated[str, typer.Argument(
                metavar="SOURCE", help="a rootfs tarball (.tar, .tar.gz, .tar.xz, .tar.zst), a qcow2 disk image, "
                "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or docker://REGISTRY/NAME:TAG")],
            suite: Annotated[Path | None, typer.Option("--suite", help="the test suite it carries (a run can "
                                                        "also name one with --suite)")] = None,
            arch: Annotated[str | None, typer.Option("--arch", help="the architecture to take from a "
                                                     "multi-platform image; a tarball's (default: this host's)")]
            = None,
            tls_verify: Annotated[bool, typer.Option("--tls-verify/--no-tls-verify", help="docker://: check the "
                                                     "registry's certificate (--no-tls-verify also allows plain "
                                                     "HTTP)")] = True,
            publish: Annotated[bool, typer.Option("--publish", help="then publish it to the server's testing "
                                                  "channel (--server, IMAGECI_SERVER or `imageci login`)")]
            = False) -> None:
    """Import an image built elsewhere as a new version on the testing channel: a root filesystem
    tarball, a qcow2 disk image (booted through its firmware on qemu), or an OCI image (layers
    flattened, whiteouts honoured; its env, entrypoint, cmd, user and labels kept for structure tests).
    Importing the same bytes again changes nothing."""
    from imageci.app import importing
    from imageci.app.session import Session
    from imageci.store.models import label

    session = Session.open()
    if publish:
        _server(session)  # before importing: no server, no import
    with console.status(f"importing {source}…") as status:
        result = importing.import_(session, name, source, architecture=arch, suite=suite, tls_verify=tls_verify,
                                   on_step=lambda step: status.update(f"importing {source}: {step}"))
    v = result.version
    layers = f", {result.layers} layer(s) flattened" if result.layers else ""
    if result.identical:
        console.print(f"[cyan]already imported[/]: {label(v)} has these bytes (sha256:{v.digest[:12]}, {v.state})",
                      highlight=False)
    else:
        console.print(f"[green]imported[/] {label(v)} from {result.source}{layers} in {result.seconds:.1f}s, "
                      f"sha256:{v.digest[:12]}, {v.architecture}, published to [bold]testing[/]", highlight=False)
    if publish:
        _push(session, label(v))


@handle_errors
def push(ref: RefArg,
         destination: Annotated[str, typer.Argument(
             metavar="DESTINATION", help="docker://REGISTRY/REPO[:TAG], oci:DIR[:TAG] or oci-archive:FILE[:TAG] "
             "(TAG: the version's serial when left out)")],
         tls_verify: Annotated[bool, typer.Option("--tls-verify/--no-tls-verify", help="docker://: check the "
                                                  "registry's certificate (--no-tls-verify also allows plain "
                                                  "HTTP)")] = True,
         authfile: Annotated[Path | None, typer.Option("--authfile", help="the registry credentials "
                                                       "(containers-auth.json; default: skopeo's, or "
                                                       "REGISTRY_AUTH_FILE)")] = None,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Push a version to an OCI registry or layout through skopeo, byte for byte: its one layer is the
    tested rootfs (the same digest when pulled), with OCI annotations saying what it is. Recorded in
    the version's events once the destination accepted it; a refusal exits 10 and records nothing."""
    from imageci.app import pushing
    from imageci.app.session import Session

    with console.status(f"pushing {ref} to {destination}…"):
        done = pushing.push(Session.open(), ref, destination, tls_verify=tls_verify, authfile=authfile)
    if as_json:
        print_json(done)
        return
    console.print(f"[green]pushed[/] {done.image} to {done.destination}: manifest {done.manifest_digest}, "
                  f"layer {done.layer_digest[:19]} (the tested rootfs)", highlight=False)
