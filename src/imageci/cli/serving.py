"""The commands of a server and its access: `serve`, `login`/`logout`, `token create|list|revoke`,
`product`, `products`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from imageci.cli.context import console, err_console, handle_errors, print_json

app = typer.Typer()  # the commands are added to the main app by register()


def register(main: typer.Typer) -> None:
    for info in app.registered_commands:
        main.registered_commands.append(info)
    for group in app.registered_groups:
        main.registered_groups.append(group)


@app.command()
@handle_errors
def login(server: Annotated[str, typer.Argument(help="the server's URL, e.g. https://ci.example.org")],
          token: Annotated[str | None, typer.Option("--token", help="the token (default: read from stdin or "
                                                    "asked for, not echoed)")] = None) -> None:
    """Remember a server and its token (checked against the server first) for later commands."""
    from imageci.app.operations import NoArgs
    from imageci.app.tokens import whoami
    from imageci.client.remote import ApiClient, Remote, check_url, save_login

    if token is None:
        token = typer.prompt("token", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline().strip()
    remote = Remote(check_url(server), token or None)
    client = ApiClient(remote)
    who = client.call(whoami, NoArgs())
    if who.anonymous:
        from imageci.errors import UsageError

        raise UsageError("no token given: `imageci login URL --token TOKEN`, or the token on stdin")
    path = save_login(remote)
    console.print(f"logged in to {remote.url} as {who.name} (namespace {who.namespace}, scopes "
                  f"{', '.join(who.scopes)}); saved in {path}", highlight=False)


@app.command()
@handle_errors
def logout() -> None:
    """Forget the server and token `imageci login` saved."""
    from imageci.client.remote import forget_login, login_file

    console.print(f"removed {login_file()}" if forget_login() else "not logged in", highlight=False)


@app.command()
@handle_errors
def serve(listen: Annotated[str, typer.Option("--listen", metavar="HOST:PORT", help="address to serve on")]
          = "127.0.0.1:8080",
          workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="server processes sharing the "
                                               "address (default 1; about one per core)")] = 1,
          tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="serve HTTPS with this PEM certificate "
                                                        "(chain) — LXD reads simplestreams only over HTTPS")] = None,
          tls_key: Annotated[Path | None, typer.Option("--tls-key", help="the certificate's PEM private key")]
          = None) -> None:
    """Serve the HTTP API (under /api/v1; OpenAPI at /openapi.json) and the channels' LXD feeds (under
    /lxd) over this home's catalog and store, until Ctrl-C / SIGTERM (requests in flight finish first)."""
    from imageci.api.app import serve as run_server
    from imageci.config import Settings
    from imageci.errors import UsageError

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen must be HOST:PORT (got {listen!r})")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    for given in (tls_cert, tls_key):
        if given is not None and not given.is_file():
            raise UsageError(f"{given}: no such file")
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    settings = Settings.load()
    settings.ensure()
    scheme = "https" if tls else "http"
    err_console.print(f"imageci API on {scheme}://{host}:{port}/api/v1 (OpenAPI: /openapi.json); LXD feeds: "
                      f"{scheme}://{host}:{port}/lxd/NAMESPACE/CHANNEL", highlight=False)
    if workers > 1 and "IMAGECI_HOME" not in os.environ:
        os.environ["IMAGECI_HOME"] = str(settings.home)  # the workers load their settings from it
    run_server(settings, host.strip("[]"), int(port), workers, tls=tls)


@app.command()
@handle_errors
def dashboard(listen: Annotated[str, typer.Option("--listen", metavar="HOST:PORT", help="a loopback address to "
                                                  "serve on (port 0: any free port)")] = "127.0.0.1:8090") -> None:
    """Serve the web dashboard of this home, read-only and without a token, on loopback only, until Ctrl-C.
    Prints its URL. (A team's dashboard is part of `imageci serve`, with the API's tokens.)"""
    import ipaddress
    import socket

    from imageci.api.app import serve as run_server
    from imageci.config import Settings
    from imageci.errors import UsageError

    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen must be HOST:PORT (got {listen!r})")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"--listen {listen}: the local dashboard serves loopback only (127.0.0.1, ::1); "
                         "a team's dashboard is `imageci serve`, with tokens")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1" if host == "localhost" else host, int(port)))
    except OSError as exc:
        sock.close()
        raise UsageError(f"--listen {listen}: cannot listen there: {exc.strerror} (try another port, or 0)") from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    settings = Settings.load()
    settings.ensure()
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"imageci dashboard of {settings.home} (read-only): http://{shown}:{bound}/", flush=True)
    run_server(settings, host, bound, local_dashboard=True, sock=sock)


token_app = typer.Typer(help="API tokens: create (shown once), list, revoke; on this home, or on the server "
                        "(an admin token of the namespace).",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
@handle_errors
def token_create(name: Annotated[str, typer.Option("--name", help="who or what uses it: the audit actor")],
                 namespace: Annotated[str, typer.Option("--namespace", help="the namespace it acts in")],
                 scope: Annotated[str, typer.Option("--scope", help="comma-separated: read, publish, test, "
                                                    "promote, admin")] = "read",
                 channel: Annotated[str | None, typer.Option("--channel", help="a follower's read token: only "
                                                             "this channel's versions")] = None,
                 expires: Annotated[str | None, typer.Option("--expires", help="lifetime, e.g. 90d (default: "
                                                             "until revoked)")] = None) -> None:
    """Create a token and print its secret (once: only its hash is kept)."""
    from imageci.app.tokens import TokenArgs, TokenRequest
    from imageci.app.tokens import token_create as op
    from imageci.cli.sources import source
    from imageci.definitions.durations import duration_arg

    if expires:
        duration_arg(expires)
    made = source().call(op, TokenArgs(body=TokenRequest(name=name, namespace=namespace, scopes=scope,
                                                                   channel=channel, expires=expires)))
    sys.stdout.write(made.secret + "\n")
    t = made.token
    until = f", expires {t.expires.isoformat(timespec='seconds')}" if t.expires else ""
    err_console.print(f"token {t.name!r} of namespace {t.namespace!r}: {', '.join(t.scopes)}"
                      f"{f', channel {t.channel}' if t.channel else ''}{until}. Store the secret now: it is "
                      "not kept.", highlight=False)


@token_app.command("list")
@handle_errors
def token_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every token: namespace, scopes, channel, expiry, revocation (never secrets)."""
    from imageci.app.operations import NoArgs
    from imageci.app.tokens import token_list as op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(op, NoArgs())
    if as_json:
        print_json(rows)
        return
    write_columns(("name", "namespace", "scopes", "channel", "created", "expires", "revoked"),
                  ((t.name, t.namespace, ",".join(t.scopes), t.channel or "-",
                    t.created.isoformat(timespec="seconds"),
                    t.expires.isoformat(timespec="seconds") if t.expires else "-",
                    t.revoked.isoformat(timespec="seconds") if t.revoked else "-") for t in rows))


@token_app.command("revoke")
@handle_errors
def token_revoke(name: Annotated[str, typer.Argument(help="the token's name")]) -> None:
    """Revoke a token: every later request with it is refused (HTTP 401)."""
    from imageci.app.tokens import TokenName
    from imageci.app.tokens import token_revoke as op
    from imageci.cli.sources import source

    t = source().call(op, TokenName(name=name))
    console.print(f"token {t.name!r} revoked", highlight=False)


@app.command()
@handle_errors
def product(name: Annotated[str, typer.Argument(help="the product (image name)")],
            namespace: Annotated[str | None, typer.Option("--namespace", help="move it to this namespace")] = None,
            public: Annotated[bool | None, typer.Option("--public/--private", help="readable without a token, or "
                                                        "only by its namespace's tokens")] = None) -> None:
    """Show a product, or set its namespace and visibility (an admin of both namespaces)."""
    from imageci.app.products import ProductArgs, ProductChange, product_change
    from imageci.cli.sources import source

    row = source().call(product_change, ProductArgs(name=name, body=ProductChange(namespace=namespace,
                                                                                  public=public)))
    console.print(f"{row.name}: namespace {row.namespace!r}, {'public' if row.public else 'private'}, "
                  f"{row.versions} version(s)", highlight=False)


@app.command()
@handle_errors
def products(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The products you may see: namespace, public or private, number of versions."""
    from imageci.app.operations import NoArgs
    from imageci.app.products import product_list
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(product_list, NoArgs())
    if as_json:
        print_json(rows)
        return
    write_columns(("name", "namespace", "visibility", "versions"),
                  ((r.name, r.namespace, "public" if r.public else "private", str(r.versions)) for r in rows))
