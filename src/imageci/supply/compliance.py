"""Compliance of an image's root file system with an XCCDF benchmark, evaluated offline by
OpenSCAP (``oscap-chroot ROOT xccdf eval``: OVAL probes read the tree; nothing in it runs).

imageci ships its own content for Debian 12 (``content/imageci-debian12-xccdf.xml`` and its OVAL
checks): Debian's ssg-debian 0.1.65 has content for Debian 10 and 11 only, and on a bookworm tree
every one of its rules comes out ``notapplicable``. Any other XCCDF file or SCAP source data stream
(with a profile) can be evaluated the same way."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from pydantic import BaseModel

from imageci.errors import ImageciError, UsageError

CONTENT = Path(__file__).resolve().parent / "content"
BUILTIN = CONTENT / "imageci-debian12-xccdf.xml"
BUILTIN_PROFILE = "xccdf_dev.imageci_profile_baseline"
XCCDF = "{http://checklists.nist.gov/xccdf/1.2}"
COUNTED = ("pass", "fail", "error", "unknown")  # results that are a verdict on the image
TIMEOUT = 900


class ComplianceError(ImageciError):
    """OpenSCAP could not evaluate the content (not installed, bad content, a probe that failed)."""


class RuleResult(BaseModel):
    id: str
    title: str
    severity: str
    result: str  # pass | fail | notapplicable | notchecked | notselected | error | unknown | informational | fixed


class ComplianceResult(BaseModel):
    benchmark: str  # the XCCDF benchmark's id
    profile: str
    content_sha256: str  # of the content file evaluated (the gate uses results of its own content only)
    score: float
    maximum: float
    rules: list[RuleResult]

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if r.result in ("fail", "error", "unknown")]

    @property
    def applicable(self) -> int:
        return sum(r.result in COUNTED for r in self.rules)


def content_sha256(content: Path) -> str:
    """The digest of a content file and the OVAL files next to it (a change in either is another content)."""
    h = hashlib.sha256()
    for path in sorted([content, *content.parent.glob("*oval*.xml")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _text(element: ET.Element | None) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""


def parse_results(path: Path, content_digest: str) -> ComplianceResult:
    """The score and per-rule results of an XCCDF results file (``oscap xccdf eval --results``)."""
    root = ET.parse(path).getroot()
    test = root.find(f".//{XCCDF}TestResult")
    if test is None:
        raise ComplianceError(f"{path}: OpenSCAP wrote no TestResult")
    rules = {r.get("id", ""): r for r in root.iter(f"{XCCDF}Rule")}
    score = test.find(f"{XCCDF}score")
    profile = test.find(f"{XCCDF}profile")
    found = []
    for rr in test.findall(f"{XCCDF}rule-result"):
        if _text(rr.find(f"{XCCDF}result")) == "notselected":  # not in the profile: not part of the result
            continue
        rid = rr.get("idref", "")
        rule = rules.get(rid)
        found.append(RuleResult(id=rid, title=_text(rule.find(f"{XCCDF}title")) if rule is not None else rid,
                                severity=rr.get("severity", "unknown"), result=_text(rr.find(f"{XCCDF}result"))))
    return ComplianceResult(benchmark=root.get("id", ""), profile=profile.get("idref", "") if profile is not None
                            else "", content_sha256=content_digest,
                            score=float(score.text or 0) if score is not None else 0.0,
                            maximum=float(score.get("maximum", "100")) if score is not None else 100.0, rules=found)


def evaluate(root: Path, content: Path = BUILTIN, profile: str | None = BUILTIN_PROFILE) -> ComplianceResult:
    """Evaluate ``content`` (an XCCDF file or a data stream) with ``profile`` against the tree at
    ``root``. OpenSCAP's exit 2 (some rule failed) is a result, not an error."""
    if shutil.which("oscap-chroot") is None:
        raise ComplianceError("oscap-chroot is not installed (apt-get install openscap-utils)")
    if not content.is_file():
        raise UsageError(f"{content}: no such content file")
    with tempfile.TemporaryDirectory(prefix="imageci-oscap-") as tmp:
        results = Path(tmp) / "results.xml"
        argv = ["oscap-chroot", str(root), "xccdf", "eval", *(["--profile", profile] if profile else []),
                "--results", str(results), str(content)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise ComplianceError(f"OpenSCAP did not finish in {TIMEOUT} s") from None
        if done.returncode not in (0, 2) or not results.is_file():
            raise ComplianceError(f"OpenSCAP could not evaluate {content.name}"
                                  f"{f' (profile {profile})' if profile else ''}: "
                                  f"{(done.stderr or done.stdout).strip()[-600:]}")
        return parse_results(results, content_sha256(content))
