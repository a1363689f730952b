"""Notifications: when a promotion is blocked or a test starts failing, a JSON webhook (HMAC-signed) and an
e-mail through a configured SMTP server tell the people who look after the image.

The webhook is a POST of the notification as JSON with ``X-Imageci-Event``, ``X-Imageci-Delivery`` (a
unique id) and, with ``IMAGECI_WEBHOOK_SECRET``, ``X-Imageci-Signature: sha256=<hex>``: the HMAC-SHA256 of
the body with the secret (compare it in constant time before trusting the body). A delivery is tried three
times (a 4xx other than 408/429 is final); a notification that cannot be delivered is a warning, never a
failed run."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel

from imageci.app.session import Session
from imageci.config import Settings
from imageci.engine.results import RunReport
from imageci.policy.reference import Change
from imageci.store.models import Attempt, State, Version, label
from imageci.store.states import utcnow
from imageci.verdicts import Verdict

log = logging.getLogger("imageci.app")
Event = Literal["promotion-blocked", "new-failure"]
TRIES = 3


class Notification(BaseModel):
    event: Event
    image: str  # NAME@SERIAL
    product: str
    digest: str  # sha256:…
    summary: str  # one line
    details: list[str] = []
    run: int | None = None
    at: datetime
    changes: dict[str, str] = {}  # "TEST [TESTBED]" → its change against stable (regression, always-failed, new)


def body_of(note: Notification) -> bytes:
    return json.dumps(note.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Imageci-Signature`` value: ``sha256=`` and the HMAC-SHA256 of ``body`` with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook(settings: Settings, note: Notification) -> str | None:
    import httpx

    assert settings.webhook_url is not None
    body = body_of(note)
    headers = {"Content-Type": "application/json", "User-Agent": "imageci", "X-Imageci-Event": note.event,
               "X-Imageci-Delivery": str(uuid.uuid4())}
    if settings.webhook_secret:
        headers["X-Imageci-Signature"] = signature(settings.webhook_secret, body)
    problem = ""
    for attempt in range(TRIES):
        if attempt:
            time.sleep(attempt)
        try:
            answer = httpx.post(settings.webhook_url, content=body, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        if answer.is_success:
            return None
        problem = f"HTTP {answer.status_code}"
        if 400 <= answer.status_code < 500 and answer.status_code not in (408, 429):
            break
    return f"webhook {urlsplit(settings.webhook_url).netloc}: {problem}"


def _mail(settings: Settings, note: Notification) -> str | None:
    assert settings.smtp_url is not None and settings.mail_to
    url = urlsplit(settings.smtp_url)
    msg = EmailMessage()
    msg["Subject"] = f"[imageci] {note.event.replace('-', ' ')}: {note.image}"
    msg["From"] = settings.mail_from or "imageci@localhost"
    msg["To"] = ", ".join(settings.mail_to)
    msg["X-Imageci-Event"] = note.event
    msg.set_content("\n".join([note.summary, "", *note.details, "", f"image: {note.image} ({note.digest})",
                               *([f"run: {note.run}"] if note.run is not None else []),
                               f"at: {note.at.isoformat(timespec='seconds')}"]) + "\n")
    try:
        with smtplib.SMTP(url.hostname or "localhost", url.port or 25, timeout=30) as smtp:
            if url.scheme == "smtp+starttls":
                smtp.starttls()
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        return f"mail via {url.hostname}:{url.port or 25}: {type(exc).__name__}: {exc}"
    return None


def notify(settings: Settings, event: Event, image: str, product: str, digest: str, summary: str,
           details: Sequence[str] = (), run: int | None = None, changes: dict[str, str] | None = None) -> list[str]:
    """Send one notification wherever the settings say; the problems of deliveries that failed (also logged)."""
    if settings.webhook_url is None and not (settings.smtp_url and settings.mail_to):
        return []
    note = Notification(event=event, image=image, product=product, digest=digest, summary=summary,
                        details=list(details), run=run, at=utcnow(), changes=changes or {})
    problems = []
    if settings.webhook_url is not None:
        problems.append(_webhook(settings, note))
    if settings.smtp_url and settings.mail_to:
        problems.append(_mail(settings, note))
    failed = [p for p in problems if p is not None]
    for p in failed:
        log.warning("notification %s of %s not delivered: %s", event, image, p)
    return failed


def promotion_blocked(settings: Settings, version: Version, explanation: str) -> None:
    """A version's promotion was refused: its gate does not hold."""
    lines = explanation.splitlines()
    notify(settings, "promotion-blocked", label(version), version.product.name, f"sha256:{version.digest}",
           f"{label(version)} was not promoted: {lines[0] if lines else 'its gate does not hold'}",
           [ln.strip() for ln in lines[1:]])


def new_failures(session: Session, report: RunReport, found: dict[tuple[str, str], str] | None = None) -> None:
    """Tests of the run that failed and passed on the product's previous version (on the same testbed), or on
    its stable version (a ``regression``): a new failure, worth telling someone. Each line says its change
    against stable (the results' ``change``, set before this is called), and what bisecting it ``found``."""
    version = report.version
    failed = [r for r in report.results if r.verdict in (Verdict.FAIL, Verdict.ERROR) and not r.waived]
    if not failed:
        return
    older = sorted((v for v in session.catalog.versions(version.product.name) if v.serial < version.serial
                    and v.state != State.DELETED), key=lambda v: v.serial, reverse=True)
    ids = sorted({r.test_id for r in failed})
    before: dict[tuple[str, str], list[Attempt]] = {}
    for v in older:
        attempts = session.catalog.attempts(v.digest, ids)
        if attempts:
            for a in attempts:
                before.setdefault((a.test_id, a.testbed), []).append(a)
            break
    new = [r for r in failed if r.change == Change.REGRESSION
           or ((latest := before.get((r.test_id, r.testbed))) and latest[-1].verdict == Verdict.PASS)]
    if not new:
        return
    notify(session.settings, "new-failure", label(version), version.product.name, f"sha256:{version.digest}",
           f"{len(new)} test(s) that passed on the version before (or on stable) now fail on {label(version)}",
           [f"{r.test_id} on {r.testbed}: {r.verdict}" + (f" ({r.reason})" if r.reason else "")
            + (f" [{r.change}: {r.change_why}]" if r.change else "")
            + (f"; {found[(r.test_id, r.testbed)]}" if found and (r.test_id, r.testbed) in found else "") for r in new],
           run=report.run_id, changes={f"{r.test_id} [{r.testbed}]": r.change for r in new if r.change})
