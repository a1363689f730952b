"""The feeds as the server serves them. A channel's LXD/Incus feed has the
base URL ``/lxd/NAMESPACE/CHANNEL`` (anonymous: public products; or with an
``Authorization`` header) or ``/lxd/NAMESPACE/CHANNEL/TOKEN`` for clients
that send no header, as LXD does not for a simplestreams remote: the URL
itself is then the credential (the access log never shows it). Under the base:
``streams/v1/index.json``, ``streams/v1/images.json`` and the files,
``images/NAME/SERIAL/FILE``, with ``Range`` and ``ETag`` like every artifact."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from imageci.app import feeds
from imageci.app.access import Principal
from imageci.app.session import Session
from imageci.errors import UnknownReferenceError
from imageci.formats import simplestreams
from imageci.server.deps import BlobResponse, SessionDep, acting_as, principal

router = APIRouter(tags=["feeds"])

Namespace = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="the products' namespace")]
Channel = Annotated[str, Path(pattern=r"^[a-z]{1,32}$", description="testing or stable")]
Token = Annotated[str, Path(pattern=r"^ici_[A-Za-z0-9_-]{1,128}$", description="a token, as the URL's credential")]
Document = Annotated[str, Path(pattern=r"^(index|images)\.json$")]
Segment = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")]


async def _path_token(request: Request, s: SessionDep, token: Token) -> Principal:
    return await acting_as(request, s, token)


HeaderCaller = Annotated[Principal, Depends(principal)]
PathCaller = Annotated[Principal, Depends(_path_token)]


def _stream(s: Session, caller: Principal, namespace: str, channel: str, document: str) -> dict[str, Any]:
    feed = feeds.lxd_feed(s, namespace, channel, by=caller)
    if document == "index.json":
        return simplestreams.index(feed)
    return simplestreams.images(feed)


def _file(s: Session, caller: Principal, namespace: str, channel: str, name: str, serial: str,
          filename: str) -> BlobResponse:
    item, path = feeds.lxd_file(s, namespace, channel, name, serial, filename, by=caller)
    if not path.is_file():
        raise UnknownReferenceError(f"the blob of images/{name}/{serial}/{filename} is missing from the store")
    return BlobResponse(path, filename=filename, media_type="application/octet-stream",
                        headers={"ETag": f'"{item.sha256}"', "Cache-Control": "private, max-age=31536000, immutable"})


@router.get("/lxd/{namespace}/{channel}/streams/v1/{document}")
def stream(namespace: Namespace, channel: Channel, document: Document, s: SessionDep,
           caller: HeaderCaller) -> dict[str, Any]:
    """The simplestreams index or products of ``namespace``'s ``channel`` (for ``lxc remote add``)."""
    return _stream(s, caller, namespace, channel, document)


@router.get("/lxd/{namespace}/{channel}/images/{name}/{serial}/{filename}", response_class=BlobResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a Range"}})
def image_file(namespace: Namespace, channel: Channel, name: Segment, serial: Segment, filename: Segment,
               s: SessionDep, caller: HeaderCaller) -> BlobResponse:
    """A file the feed lists: metadata tarball or squashfs."""
    return _file(s, caller, namespace, channel, name, serial, filename)


@router.get("/lxd/{namespace}/{channel}/{token}/streams/v1/{document}")
def token_stream(namespace: Namespace, channel: Channel, document: Document, s: SessionDep,
                 caller: PathCaller) -> dict[str, Any]:
    """As ``/lxd/{namespace}/{channel}/streams/v1/…``, as the token in the URL may see it."""
    return _stream(s, caller, namespace, channel, document)


@router.get("/lxd/{namespace}/{channel}/{token}/images/{name}/{serial}/{filename}", response_class=BlobResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a Range"}})
def token_image_file(namespace: Namespace, channel: Channel, name: Segment, serial: Segment, filename: Segment,
                     s: SessionDep, caller: PathCaller) -> BlobResponse:
    """As ``/lxd/{namespace}/{channel}/images/…``, as the token in the URL may see it."""
    return _file(s, caller, namespace, channel, name, serial, filename)
