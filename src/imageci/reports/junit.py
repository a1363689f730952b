"""JUnit XML: one <testsuite> per testbed, one <testcase> per test."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from imageci.checks.findings import decoded
from imageci.engine.results import RunReport, TestResult
from imageci.fs import write_file_atomically
from imageci.verdicts import Verdict

LogFn = Callable[[TestResult], str]
EXCERPT = 4000


def _clean(text: str) -> str:
    # XML 1.0 forbids most control characters.
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)


def _told(props: ET.Element, r: TestResult) -> None:
    """A test's change against the stable version, its known-failure label and what the machine complained of
    in its latest attempt's window, as its suite's properties (``imageci.change:TEST``, ``imageci.known:TEST``,
    ``imageci.findings:TEST``: one ``KIND: TEXT`` per line): a test case holds no properties in the format the CI
    systems validate."""
    if r.change:
        ET.SubElement(props, "property", name=f"imageci.change:{r.test_id}",
                      value=_clean(f"{r.change}: {r.change_why}"))
    known = next((a.known for a in reversed(r.attempts) if a.known), None)
    if known:
        ET.SubElement(props, "property", name=f"imageci.known:{r.test_id}", value=_clean(known))
    last = r.attempts[-1] if r.attempts else None
    if last is not None and last.findings:
        said = "\n".join(f"{f.kind}: {f.text}" for f in decoded(last.findings))
        ET.SubElement(props, "property", name=f"imageci.findings:{r.test_id}", value=_clean(said))


def junit_xml(report: RunReport, log_text: LogFn) -> bytes:
    image = f"{report.version.product.name}@{report.version.serial}"
    root = ET.Element("testsuites", name=f"imageci {image}")
    by_bed: dict[str, list[TestResult]] = {}
    for r in report.results:
        by_bed.setdefault(r.testbed, []).append(r)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for bed, results in by_bed.items():
        counts = {
            "tests": len(results),
            "failures": sum(r.verdict == Verdict.FAIL for r in results),
            "errors": sum(r.verdict == Verdict.ERROR for r in results),
            "skipped": sum(r.verdict == Verdict.SKIP for r in results),
        }
        for k in totals:
            totals[k] += counts[k]
        suite = ET.SubElement(root, "testsuite", name=f"{image} [{bed}]",
                              timestamp=report.started_at.strftime("%Y-%m-%dT%H:%M:%S"),
                              time=f"{sum(r.duration for r in results):.3f}",
                              attrib={k: str(v) for k, v in counts.items()})
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="image.digest", value=f"sha256:{report.version.digest}")
        ET.SubElement(props, "property", name="testbed", value=bed)
        ET.SubElement(props, "property", name="run.id", value=str(report.run_id))
        for r in results:
            case = ET.SubElement(suite, "testcase", name=r.test_id, classname=f"{report.version.product.name}.{bed}",
                                 time=f"{r.duration:.3f}")
            _told(props, r)
            excerpt = _clean(log_text(r)[-EXCERPT:])
            if r.verdict == Verdict.FAIL:
                ET.SubElement(case, "failure", message=_clean(r.reason or "failed"), type="fail").text = excerpt
            elif r.verdict == Verdict.ERROR:
                ET.SubElement(case, "error", message=_clean(r.reason or "error"), type="error").text = excerpt
            elif r.verdict == Verdict.SKIP:
                ET.SubElement(case, "skipped", message=_clean(r.reason or "skipped"))
            if r.verdict == Verdict.FLAKY or r.cached:
                passed = any(a.verdict == Verdict.PASS for a in r.attempts)
                note = (f"cached: passed before in run {r.attempts[0].run_id}" if r.cached
                        else f"flaky: passed after {len(r.attempts)} attempt(s); {r.reason}" if passed
                        else f"failed, not counted: {r.reason}")
                ET.SubElement(case, "system-out").text = _clean(note + "\n" + excerpt)
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def write_junit(report: RunReport, path: Path, log_text: LogFn) -> None:
    write_file_atomically(path, junit_xml(report, log_text))
