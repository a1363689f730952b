"""Notifications: a new failure and a blocked promotion reach a local HTTP receiver as signed JSON (retried
after a server error) and a local SMTP server (aiosmtpd) as mail; a receiver that cannot be reached is a
warning, never a changed exit code."""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from clikit import run_cli

from imageci.app.notify import signature

from conftest import Env, free_port, write_suite
from test_consumers import _greeter_image, _label

pytestmark = pytest.mark.root
SECRET = "s3cret-hook-key"


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.fail_next = 0
        self.url = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if r.fail_next:
                r.fail_next -= 1
                self.send_response(503)
                self.end_headers()
                return
            r.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    r.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/imageci"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield r
    server.shutdown()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def _cli(env: Env, extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(args, {**env.env(), **extra})


def _verified(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    expected = signature(SECRET, body)
    assert hmac.compare_digest(headers["x-imageci-signature"], expected)
    assert headers["content-type"] == "application/json"
    return json.loads(body)  # type: ignore[no-any-return]


def test_a_new_failure_and_a_blocked_promotion_are_notified(env: Env, tmp_path: Path, receiver: Receiver,
                                                            mailbox: tuple[Mailbox, int]) -> None:
    box, port = mailbox
    hooks = {"IMAGECI_WEBHOOK_URL": receiver.url, "IMAGECI_WEBHOOK_SECRET": SECRET,
             "IMAGECI_SMTP_URL": f"smtp://127.0.0.1:{port}", "IMAGECI_MAIL_FROM": "imageci@ci.example.org",
             "IMAGECI_MAIL_TO": "images@example.org,oncall@example.org"}
    suite = write_suite(tmp_path / "suite", {"greets": "#!/bin/sh\n[ \"$(/usr/bin/greet you)\" = 'hello you' ]\n",
                                             "sh-works": "#!/bin/sh\ntrue\n"})
    assert env.cli("import", "img", str(_greeter_image(tmp_path / "v1.tar", "1.4-1", "hello")), "--suite",
                   str(suite)).returncode == 0
    first = _cli(env, hooks, "test", _label(env, 1))
    assert first.returncode == 0 and receiver.got == [] and box.messages == []  # nothing new failed
    assert env.cli("promote", _label(env, 1)).returncode == 0
    assert env.cli("import", "img", str(_greeter_image(tmp_path / "v2.tar", "2.0-1", "Hello,")), "--suite",
                   str(suite)).returncode == 0

    receiver.fail_next = 1  # the first delivery meets a 503: tried again
    ran = _cli(env, hooks, "test", _label(env, 2))
    assert ran.returncode == 1, ran.stderr
    [(headers, body)] = receiver.got
    note = _verified(headers, body)
    assert headers["x-imageci-event"] == "new-failure" and len(headers["x-imageci-delivery"]) == 36
    assert (note["event"], note["image"], note["product"]) == ("new-failure", _label(env, 2), "img")
    told = f"[regression: passed on {_label(env, 1)}: broken by this version]"  # against the stable version
    assert note["details"] == [f"greets on sandbox: fail (exit 1) {told}"] and isinstance(note["run"], int)
    assert note["changes"] == {"greets [sandbox]": "regression"}
    [mail] = box.messages
    assert mail["Subject"] == f"[imageci] new failure: {_label(env, 2)}"
    assert mail["To"] == "images@example.org, oncall@example.org" and mail["From"] == "imageci@ci.example.org"
    assert "greets on sandbox: fail (exit 1)" in mail.get_payload()

    refused = _cli(env, hooks, "promote", _label(env, 2))
    assert refused.returncode == 5
    headers, body = receiver.got[1]
    note = _verified(headers, body)
    assert note["event"] == "promotion-blocked" and note["summary"].startswith(f"{_label(env, 2)} was not promoted: "
                                                                              "gate does not hold")
    assert any(line.startswith("greets on sandbox [regression]: latest attempt: fail") for line in note["details"])
    assert box.messages[1]["Subject"] == f"[imageci] promotion blocked: {_label(env, 2)}"

    # a tampered body does not verify
    assert not hmac.compare_digest(signature(SECRET, body + b" "), headers["x-imageci-signature"])

    # nobody listening: a warning, the same exit code, nothing else changes
    gone = {**hooks, "IMAGECI_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/x", "IMAGECI_SMTP_URL":
            f"smtp://127.0.0.1:{free_port()}"}
    again = _cli(env, gone, "test", _label(env, 2), "--rerun-all")
    assert again.returncode == 1
    assert "notification new-failure of" in again.stderr and "not delivered" in again.stderr
    assert os.environ.get("IMAGECI_WEBHOOK_URL") is None


def test_bad_notification_settings_are_refused_by_name(env: Env) -> None:
    bad = _cli(env, {"IMAGECI_WEBHOOK_URL": "ftp://example.org/x"}, "images")
    assert bad.returncode == 2 and "IMAGECI_WEBHOOK_URL must be an http:// or https:// URL" in bad.stderr
    secret = _cli(env, {"IMAGECI_SMTP_URL": "mail.example.org:25"}, "images")
    assert secret.returncode == 2 and "IMAGECI_SMTP_URL must be" in secret.stderr
    assert "mail.example.org" not in secret.stderr  # it may carry a password: never echoed
