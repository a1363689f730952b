"""Talking to an imageci server (``imageci serve``) from anywhere: where it is,
the token to use, and a client whose calls return the application layer's own
rows, so the remote CLI prints exactly what the local one does.

Where the server is, first found wins: ``--server URL`` (with ``IMAGECI_TOKEN``
or the login file's token for that URL), ``IMAGECI_SERVER`` + ``IMAGECI_TOKEN``
(read into ``Settings``),
the login file written by ``imageci login`` (``$XDG_CONFIG_HOME/imageci/login.json``,
mode 0600). None of them: the CLI works on the local home.

HTTP statuses come back as the errors, and so the exit codes, the local CLI
has: 400 → 2, 404 → 2, 401/403 → 9, 409 → 5, 503 → 8; an unreachable server
or a 5xx → 3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, TypeAdapter

from imageci.app.operations import BODY, Operation
from imageci.config import Settings
from imageci.errors import ServerUnavailable, UsageError
from imageci.server.statuses import error_of

if TYPE_CHECKING:
    import httpx

    from imageci.app.publishing import Published, PublishRequest
    from imageci.app.recording import AttemptIn, AttemptRecorded, RunStart, RunStarted
    from imageci.store.blobs import BlobWriter

API = "/api/v1"
M = TypeVar("M")
Ans = TypeVar("Ans")


@dataclass(frozen=True)
class Remote:
    url: str  # http(s)://host[:port], no trailing slash
    token: str | None


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "imageci"


def login_file(env: Mapping[str, str] | None = None) -> Path:
    return config_dir(env) / "login.json"


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise UsageError(f"a server is an http:// or https:// URL (got {url!r})")
    return url.rstrip("/")


def _saved(env: Mapping[str, str]) -> dict[str, str]:
    path = login_file(env)
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a login file imageci wrote ({exc}); remove it and log in again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str):
        raise UsageError(f"{path}: not a login file imageci wrote; remove it and log in again")
    return {k: v for k, v in doc.items() if isinstance(v, str)}


def find_remote(server: str | None, settings: Settings, env: Mapping[str, str] | None = None) -> Remote | None:
    """The server this invocation talks to (None: work locally): ``server`` (--server), else
    ``settings.server``, else the login file's; the token is ``settings.token`` or the login file's
    for that URL."""
    saved = _saved(os.environ if env is None else env)
    url = server or settings.server or saved.get("url")
    if not url:
        return None
    url = check_url(url)
    token = settings.token or (saved.get("token") if saved.get("url") == url else None)
    return Remote(url, token or None)


def save_login(remote: Remote, env: Mapping[str, str] | None = None) -> Path:
    """Write the login file (0600, in a 0700 directory) and return its path."""
    path = login_file(env)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": remote.url, "token": remote.token or ""}, fh)
    os.replace(tmp, path)
    return path


def forget_login(env: Mapping[str, str] | None = None) -> bool:
    path = login_file(env)
    if path.exists():
        path.unlink()
        return True
    return False


class ApiClient:
    """Calls of the API, each returning the application layer's row types."""

    def __init__(self, remote: Remote, timeout: float = 60) -> None:
        import httpx

        self.remote = remote
        headers = {"Authorization": f"Bearer {remote.token}"} if remote.token else {}
        self.http = httpx.Client(base_url=remote.url, headers=headers, timeout=timeout)

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """The server's answer to one request under /api/v1; an error status as the app layer's error."""
        import httpx

        try:
            response = self.http.request(method, API + path, **kw)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"cannot reach the imageci server {self.remote.url}: {exc}") from None
        if response.status_code in (502, 504):  # a proxy in front of a server that is away (503: ours, exit 8)
            raise ServerUnavailable(f"the imageci server {self.remote.url} is unavailable "
                                    f"({response.status_code} {response.reason_phrase})")
        if response.status_code >= 400:
            try:
                message = str(response.json()["error"])
            except (ValueError, KeyError, TypeError):
                message = response.text[:500] or response.reason_phrase
            raise error_of(response.status_code, f"{message} (server {self.remote.url})" if response.status_code >= 500
                           else message, retry="retry-after" in response.headers)
        return response

    def _call(self, method: str, path: str, as_type: Any, **kw: Any) -> Any:
        return TypeAdapter(as_type).validate_json(self._request(method, path, **kw).content)

    @staticmethod
    def ref(ref: str) -> str:
        return quote(ref, safe=":@")

    def call(self, op: Operation[Any, Ans], req: BaseModel) -> Ans:
        """Ask the server for operation ``op`` with request ``req``: its answer, read back as its type."""
        values = req.model_dump(mode="json", exclude_none=True)
        path = op.path.format(**{f: quote(str(values.pop(f)), safe=":@") for f in op.path_fields})
        body = values.pop(BODY, None) if op.has_body else None
        kw: dict[str, Any] = {"params": values} if values else {}
        if op.has_body:
            kw["json"] = body
        return self._call(op.method, path, op.answer, **kw)  # type: ignore[no-any-return]

    def post(self, path: str, as_type: type[M] | Any, body: BaseModel | dict[str, Any]) -> Any:
        payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
        return self._call("POST", path, as_type, json=payload)

    def post_file(self, path: str, as_type: type[M] | Any, file: Path, **params: Any) -> Any:
        """POST a file's bytes, streamed, with these query parameters."""
        try:
            size = file.stat().st_size
            fh = file.open("rb")
        except OSError as exc:
            raise UsageError(f"{file}: cannot read it ({exc.strerror})") from None
        with fh:
            return self._call("POST", path, as_type, content=iter(lambda: fh.read(1 << 20), b""),
                              params={k: v for k, v in params.items() if v is not None},
                              headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})

    def get_bytes(self, path: str, **params: Any) -> bytes:
        """A body as it comes (a log), for a GET with these query parameters."""
        return self._request("GET", path, params={k: v for k, v in params.items() if v is not None}).content

    def blob_size(self, digest: str) -> int | None:
        """The size of the server's blob ``digest`` (None: it lacks it)."""
        import httpx

        try:
            r = self.http.head(f"{API}/blobs/sha256:{digest.removeprefix('sha256:')}")
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"cannot reach the imageci server {self.remote.url}: {exc}") from None
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise error_of(r.status_code, f"blob sha256:{digest}: HTTP {r.status_code}")
        return int(r.headers.get("content-length", "-1"))

    def put_blob(self, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """Upload one blob, streamed (Content-Length announced; the server checks size and sha256)."""
        self._call("PUT", f"/blobs/sha256:{digest.removeprefix('sha256:')}", dict,
                   content=chunks, headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})

    def publish(self, req: PublishRequest) -> Published:
        from imageci.app.publishing import Published

        return self.post("/versions", Published, req)  # type: ignore[no-any-return]

    def readiness(self) -> tuple[bool, str]:
        """Whether the server is ready (``/readyz``), and what it says."""
        import httpx

        try:
            r = self.http.get("/readyz")
            who = self.http.get(f"{API}/whoami")
        except httpx.HTTPError as exc:
            return False, f"cannot reach it: {exc}"
        body = r.text[:300]
        if r.status_code != 200:
            return False, body
        if who.status_code != 200:
            return False, f"ready, but the token is refused: HTTP {who.status_code}"
        me = who.json()
        return True, f"ready; acting as {me.get('name')} (namespace {me.get('namespace')}, scopes " \
                     f"{','.join(me.get('scopes') or []) or 'none'})"

    def download(self, ref: str, filename: str, into: BlobWriter) -> None:
        """Stream one artifact into ``into`` (which checks its size and sha256 on commit)."""
        import httpx

        try:
            # a presigned object store URL it may redirect to is followed (without our Authorization header)
            with self.http.stream("GET", f"{API}/images/{self.ref(ref)}/artifacts/{quote(filename)}",
                                  follow_redirects=True) as r:
                if r.status_code >= 400:
                    r.read()
                    raise error_of(r.status_code, f"{ref} {filename}: HTTP {r.status_code} {r.text[:300]}")
                for chunk in r.iter_bytes(1 << 20):
                    into.write(chunk)
            into.commit()
        except httpx.HTTPError as exc:
            into.abort()
            raise ServerUnavailable(f"download of {filename} from {self.remote.url} failed: {exc}") from None
        except BaseException:
            into.abort()
            raise

    def consumer_snapshot(self, name: str, into: BlobWriter) -> None:
        """Stream a consumer's snapshot into ``into`` (which checks its sha256 on commit)."""
        import httpx

        try:
            with self.http.stream("GET", f"{API}/consumers/{quote(name)}/snapshot") as r:
                if r.status_code >= 400:
                    r.read()
                    raise error_of(r.status_code, f"consumer {name}'s snapshot: HTTP {r.status_code} {r.text[:300]}")
                for chunk in r.iter_bytes(1 << 20):
                    into.write(chunk)
            into.commit()
        except httpx.HTTPError as exc:
            into.abort()
            raise ServerUnavailable(f"download of consumer {name}'s snapshot from {self.remote.url} failed: "
                                    f"{exc}") from None
        except BaseException:
            into.abort()
            raise

    def start_run(self, ref: str, body: RunStart, key: str) -> RunStarted:
        from imageci.app.recording import RunStarted

        return self._call("POST", f"/images/{self.ref(ref)}/runs", RunStarted,  # type: ignore[no-any-return]
                          json=body.model_dump(mode="json"), headers={"Idempotency-Key": key})

    def record(self, run: int, body: AttemptIn, key: str) -> AttemptRecorded:
        from imageci.app.recording import AttemptRecorded

        return self._call("POST", f"/runs/{run}/attempts", AttemptRecorded,  # type: ignore[no-any-return]
                          json=body.model_dump(mode="json"), headers={"Idempotency-Key": key})

    def live_read(self, run: int, key: str, offset: int) -> bytes:
        return self._request("GET", f"/runs/{run}/live/{quote(key)}", params={"offset": offset}).content

    def close(self) -> None:
        self.http.close()
