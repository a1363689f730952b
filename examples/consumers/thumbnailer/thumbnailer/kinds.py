"""Which kind of picture some bytes are. Uses the standard library's imghdr (deprecated in Python
3.11, removed in 3.13): exactly the kind of code a runtime bump breaks."""

import imghdr


def kind_of(data: bytes) -> str:
    kind = imghdr.what(None, h=data)
    if kind is None:
        raise ValueError("not a picture")
    return kind


def thumbnail_name(name: str, data: bytes) -> str:
    stem = name.rsplit(".", 1)[0]
    return f"{stem}.thumb.{kind_of(data)}"
