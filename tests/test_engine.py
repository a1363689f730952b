"""Engine semantics with the real sandbox: verdicts, retries, cache, timeouts, parallelism."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageci.checks.script import ScriptCheck
from imageci.definitions.suite import load_suite
from imageci.engine.budget import Budget
from imageci.engine.results import RunReport
from imageci.engine.runner import Engine
from imageci.exitcodes import ExitCode
from imageci.store.models import Version
from imageci.testbeds.base import Cost
from imageci.testbeds.registry import make_backend
from imageci.verdicts import Verdict

from conftest import Env, FailsFirst, write_suite

pytestmark = pytest.mark.root
V = Verdict


def _engine(e: Env, jobs: int = 2) -> Engine:
    return Engine(e.catalog, e.store, {"sandbox": make_backend("sandbox", e.settings)}, jobs=jobs)


def _run(e: Env, version: Version, suite_dir: Path, **kw: object) -> RunReport:
    checks = [ScriptCheck(s) for s in load_suite(suite_dir).tests]
    return _engine(e).run(version, checks, ["sandbox"], **kw)  # type: ignore[arg-type]


def _by_id(report: RunReport) -> dict[str, tuple[Verdict, str]]:
    return {r.test_id: (r.verdict, r.reason) for r in report.results}


def test_verdicts_of_script_tests(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "suite", {
        "ok.sh": "#!/bin/sh\ngrep -q bookworm /etc/os-release\n",
        "bad.sh": "#!/bin/sh\necho 'expected 2 got 3' >&2\nexit 1\n",
        "na.sh": "#!/bin/sh\necho 'no GPU here'\nexit 77\n",
        "slow.sh": "#!/bin/sh\n# imageci-timeout: 1\nsleep 30\n",
        "needs-vm.sh": "#!/bin/sh\n# imageci-needs: isolation-machine\ntrue\n",
        "noexec.sh": "#!/bin/sh\ntrue\n",
    })
    (d / "noexec.sh").chmod(0o644)
    report = _run(e, version, d)
    got = _by_id(report)
    assert got["ok"] == (V.PASS, "")
    assert got["bad"] == (V.FAIL, "exit 1: expected 2 got 3")
    assert got["na"] == (V.SKIP, "no GPU here")
    assert got["slow"][0] == V.FAIL and "timed out after 1s" in got["slow"][1]
    assert got["needs-vm"] == (V.SKIP, "testbed sandbox lacks: isolation-machine")
    assert got["noexec"][0] == V.SKIP and "not executable" in got["noexec"][1]
    assert report.exit_code == ExitCode.FAILED
    # every attempt is in the catalog, with a log blob for the ones that ran
    attempts = {a.test_id: a for a in e.catalog.attempts(version.digest, run_id=report.run_id)}
    assert set(attempts) == set(got)
    log = e.store.read_bytes(attempts["bad"].log_digest)  # type: ignore[arg-type]
    assert b"expected 2 got 3" in log and b"exit 1" in log
    assert attempts["na"].exit_code == 77


def test_passed_checks_are_not_rerun_for_the_same_bytes(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "suite", {"once.sh": f"#!/bin/sh\n# unique {tmp_path.name}\ntrue\n"})
    first = _run(e, version, d)
    assert first.results[0].verdict == V.PASS and not first.results[0].cached
    second = _run(e, version, d)
    assert second.results[0].cached and second.results[0].attempts[0].run_id == first.run_id
    assert e.catalog.attempts(version.digest, ["once"], run_id=second.run_id) == []
    forced = _run(e, version, d, rerun_all=True)
    assert not forced.results[0].cached
    assert len(e.catalog.attempts(version.digest, ["once"], run_id=forced.run_id)) == 1
    (d / "once.sh").write_text("#!/bin/sh\n# changed\ntrue\n")  # new test content → runs again
    assert not _run(e, version, d).results[0].cached


def test_retries_rerun_only_what_never_passed(image_env: tuple[Env, Version]) -> None:
    e, version = image_env
    flaky, broken = FailsFirst(1, id="flaky"), FailsFirst(99, id="broken")
    ok = FailsFirst(0, id="ok")
    report = _engine(e).run(version, [flaky, broken, ok], ["sandbox"], retries=2)
    got = {r.test_id: r for r in report.results}
    assert got["flaky"].verdict == V.FLAKY and [a.verdict for a in got["flaky"].attempts] == ["fail", "pass"]
    assert got["broken"].verdict == V.FAIL and len(got["broken"].attempts) == 3
    assert got["ok"].verdict == V.PASS and ok.calls == 1  # passed: never re-run
    assert report.exit_code == ExitCode.FAILED
    no_retry = _engine(e).run(version, [FailsFirst(1, id="flaky2")], ["sandbox"])
    assert no_retry.results[0].verdict == V.FAIL and no_retry.exit_code == ExitCode.FAILED


def test_known_flaky_failure_does_not_fail_the_run(image_env: tuple[Env, Version]) -> None:
    e, version = image_env
    report = _engine(e).run(version, [FailsFirst(99, id="known", flaky=True)], ["sandbox"])
    assert report.results[0].verdict == V.FLAKY and report.exit_code == ExitCode.OK


def test_a_broken_testbed_is_an_error_not_a_failure(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    engine = _engine(e)
    (tmp_path / "not-a-dir").write_text("")
    engine.backends["sandbox"].workroot = tmp_path / "not-a-dir" / "sandboxes"  # type: ignore[attr-defined]
    report = engine.run(version, [FailsFirst(0, id="victim")], ["sandbox"])
    assert report.results[0].verdict == V.ERROR
    assert "testbed error" in report.results[0].reason
    assert report.exit_code == ExitCode.ERROR


def test_tests_run_in_parallel(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "suite", {f"t{i}.sh": f"#!/bin/sh\n# {tmp_path.name}\nsleep 1\n" for i in range(4)})
    checks = [ScriptCheck(s) for s in load_suite(d).tests]
    report = _engine(e, jobs=4).run(version, checks, ["sandbox"])
    spans = sorted((r.attempts[0].started_at, r.attempts[0].ended_at) for r in report.results)
    # at least two attempts overlapped in time
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))
    assert all(r.verdict == V.PASS for r in report.results)


def _overlapped(report: RunReport) -> bool:
    spans = sorted((r.attempts[0].started_at, r.attempts[0].ended_at) for r in report.results)
    return any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))


def test_resource_budget_limits_concurrency(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    """Scheduling follows the memory budget, not only -j: two 600 MB testbeds
    do not fit in 1000 MB, so they run one after the other."""
    e, version = image_env
    d = write_suite(tmp_path / "suite", {f"t{i}.sh": f"#!/bin/sh\n# {tmp_path.name}\nsleep 1\n" for i in range(3)})
    checks = [ScriptCheck(s) for s in load_suite(d).tests]
    backend = make_backend("sandbox", e.settings)
    backend.cost = Cost(memory_mb=600, cpus=0.1)  # type: ignore[misc]
    tight = Engine(e.catalog, e.store, {"sandbox": backend}, jobs=4, budget=Budget(Cost(1000, 8)))
    assert not _overlapped(tight.run(version, checks, ["sandbox"], rerun_all=True))
    roomy = Engine(e.catalog, e.store, {"sandbox": backend}, jobs=4, budget=Budget(Cost(4000, 8)))
    assert _overlapped(roomy.run(version, checks, ["sandbox"], rerun_all=True))
    huge = Budget(Cost(100, 8))  # a testbed bigger than the whole budget still runs, alone
    report = Engine(e.catalog, e.store, {"sandbox": backend}, jobs=4, budget=huge).run(
        version, checks[:1], ["sandbox"], rerun_all=True)
    assert report.results[0].verdict == V.PASS


def test_fresh_per_suite_reuses_testbeds_except_for_destructive_tests(image_env: tuple[Env, Version],
                                                                      tmp_path: Path) -> None:
    e, version = image_env
    tag = tmp_path.name
    d = write_suite(tmp_path / "suite", {
        "a-write.sh": f"#!/bin/sh\n# {tag}\necho a > /root/shared\n",
        "b-sees.sh": f"#!/bin/sh\n# {tag}\ngrep -qx a /root/shared\n",
        # (not /etc: the testbed's own /etc/hosts is a mount point there, as in a container)
        "c-breaks.sh": f"#!/bin/sh\n# imageci-destructive: true\n# {tag}\ntest ! -e /root/shared && rm -rf /usr\n",
        "d-after.sh": f"#!/bin/sh\n# {tag}\ntest -d /usr/bin && grep -qx a /root/shared\n",
    })
    checks = [ScriptCheck(s) for s in load_suite(d).tests]
    engine = Engine(e.catalog, e.store, {"sandbox": make_backend("sandbox", e.settings)}, jobs=1, fresh="suite")
    report = engine.run(version, checks, ["sandbox"], rerun_all=True)
    assert {r.test_id: r.verdict for r in report.results} == {
        "a-write": V.PASS, "b-sees": V.PASS, "c-breaks": V.PASS, "d-after": V.PASS}, _by_id(report)
    assert engine._live == set()  # kept testbeds are closed when the run ends
    per_test = _run(e, version, d, rerun_all=True)  # the default: a fresh testbed per test
    assert _by_id(per_test)["b-sees"][0] == V.FAIL


def test_a_pass_is_reused_only_for_the_same_test_not_another_with_the_same_bytes(image_env: tuple[Env, Version],
                                                                                 tmp_path: Path) -> None:
    e, version = image_env
    body = f"#!/bin/sh\n# {tmp_path.name}\ntrue\n"
    d = write_suite(tmp_path / "suite", {"first.sh": body, "second.sh": body, "off.sh": body})
    (d / "off.sh").chmod(0o644)
    checks = [ScriptCheck(s) for s in load_suite(d).tests]
    by_id = {c.id: c for c in checks}
    _engine(e).run(version, [by_id["first"]], ["sandbox"])
    report = _engine(e).run(version, [by_id["second"], by_id["off"]], ["sandbox"])
    got = {r.test_id: r for r in report.results}
    assert not got["second"].cached and got["second"].verdict == V.PASS  # ran, under its own name
    assert got["off"].verdict == V.SKIP and "not executable" in got["off"].reason
    assert {a.test_id for a in e.catalog.attempts(version.digest, ["second"])} == {"second"}


def test_plan_decides_without_running_or_recording_and_execute_carries_it_out(image_env: tuple[Env, Version],
                                                                             tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "s", {"ok.sh": f"#!/bin/sh\n# {tmp_path.name}\ntrue\n",
                                     "vm-only.sh": "#!/bin/sh\n# imageci-needs: isolation-machine\ntrue\n"})
    checks = [ScriptCheck(s) for s in load_suite(d).tests]
    engine = _engine(e)
    image = engine.image_handle(version)
    runs_before = len(e.catalog.runs(version.digest))
    first = engine.plan(image, checks, ["sandbox"])
    assert len(e.catalog.runs(version.digest)) == runs_before  # planning records nothing
    assert [(i.result.test_id, i.runs, i.decided.verdict if i.decided else None) for i in first.items] == [
        ("ok", True, None), ("vm-only", False, V.SKIP)]
    report = engine.execute(version, first)
    assert {r.test_id: r.verdict for r in report.results} == {"ok": V.PASS, "vm-only": V.SKIP}
    again = engine.plan(image, checks, ["sandbox"])
    assert again.items[0].cached is not None and not again.items[0].runs  # the pass is reused next time
    assert engine.plan(image, checks, ["sandbox"], rerun_all=True).items[0].runs


def test_a_sandbox_run_loads_no_other_backend(tmp_path: Path) -> None:
    """Each backend's module is imported when one of its kind is made: the sandbox's run path never loads the
    VMs' (nor dnspython, nor LXD's or podman's)."""
    import subprocess
    import sys

    probe = ("import sys\nfrom imageci.app import testing\nfrom imageci.config import Settings\n"
             "from imageci.testbeds.registry import make_backend\n"
             f"make_backend('sandbox', Settings(home=__import__('pathlib').Path({str(tmp_path)!r}), db_url='', "
             "jobs=1, build_cache=None))\n"
             "print(*sorted(m for m in sys.modules if m.startswith(('imageci.testbeds.vm', 'imageci.testbeds.lxd', "
             "'imageci.testbeds.podman', 'dns'))))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", done.stdout
