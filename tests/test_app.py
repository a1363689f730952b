"""The application layer driven directly, one test per command the CLI offers:
the same operations the API, dashboard and workers will call."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from imageci.app import building, flakiness, gating, queries, upkeep
from imageci.app.pipeline import pipeline
from imageci.app.planning import TestPlan, TestRequest, plan_tests
from imageci.app.session import Session
from imageci.app.testing import run_tests
from imageci.app.versions import config_of, suite_dir_of
from imageci.errors import GateRefused, UsageError
from imageci.exitcodes import ExitCode
from imageci.store.blobs import BlobStore
from imageci.store.models import OCI_CONFIG, SUITE, State
from imageci.store.snapshots import DamagedSnapshotError, pack_tree, unpack_tree

from conftest import BUILD_CACHE, EXAMPLE, Env, build_example, make_env, tiny_rootfs, write_suite

NAME = "debian-bookworm-minimal"
needs_root = pytest.mark.root


@pytest.fixture
def session(env: Env) -> Iterator[Session]:
    s = Session.open(env.settings)
    yield s
    s.close()


def _moved_example(tmp_path: Path) -> Path:
    """A copy of the example definition and suite that the test removes after building."""
    copy = tmp_path / "elsewhere"
    shutil.copytree(EXAMPLE, copy)
    return copy / "image.yaml"


# ---- what a version carries --------------------------------------------------------------------


def test_suite_snapshot_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    suite = write_suite(tmp_path / "s", {"a.sh": "#!/bin/sh\ntrue\n"}, "fresh: suite\n")
    (suite / "data").mkdir()
    (suite / "data" / "x.txt").write_text("x")
    (suite / "link").symlink_to("data/x.txt")
    first = pack_tree(suite, store)
    os.utime(suite / "a.sh", (0, 12345))  # times and owners are not content
    assert pack_tree(suite, store).digest == first.digest
    out = unpack_tree(store, first.digest, tmp_path / "cache")
    assert (out / "a.sh").read_text() == "#!/bin/sh\ntrue\n" and os.access(out / "a.sh", os.X_OK)
    assert (out / "link").read_text() == "x" and (out / "suite.yaml").read_text() == "fresh: suite\n"
    (suite / "a.sh").write_text("#!/bin/sh\nfalse\n")
    assert pack_tree(suite, store).digest != first.digest


def test_a_suite_with_a_symlink_out_of_it_is_refused(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "s", {"a.sh": "#!/bin/sh\ntrue\n"})
    (suite / "escape").symlink_to("/etc/passwd")
    with pytest.raises(UsageError, match="symlink out of the suite"):
        pack_tree(suite, BlobStore(tmp_path / "store"))


@pytest.mark.parametrize("member", ["../evil", "/abs", "a/../../evil", "sym", "dev"])
def test_a_hostile_snapshot_is_refused_and_nothing_lands_outside(tmp_path: Path, member: str) -> None:
    store = BlobStore(tmp_path / "store")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("sym" if member == "sym" else member)
        if member == "sym":
            info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
        elif member == "dev":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    digest = store.put_bytes(buf.getvalue()).digest
    with pytest.raises(DamagedSnapshotError):
        unpack_tree(store, digest, tmp_path / "cache" / "suites")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "cache" / "evil").exists()
    assert list((tmp_path / "cache" / "suites").iterdir()) == []  # no half-extracted snapshot left
    garbage = store.put_bytes(b"not a tar at all" * 100).digest
    with pytest.raises(DamagedSnapshotError, match="not a readable tar"):
        unpack_tree(store, garbage, tmp_path / "cache" / "suites")


@needs_root
def test_build_records_definition_suite_and_config_so_runs_need_no_build_files(
        env: Env, session: Session, tmp_path: Path) -> None:
    build_example(env)  # fills the shared build cache
    definition = _moved_example(tmp_path)
    [built] = building.build(session, definition)
    kinds = {a.kind for a in built.version.artifacts}
    assert {"rootfs", SUITE, OCI_CONFIG} <= kinds
    shutil.rmtree(definition.parent)  # the machine that built it no longer has the files
    version = session.catalog.resolve(NAME)
    assert (suite_dir_of(session, version) / "os-release.sh").is_file()
    assert dict(config_of(session, version).labels)["io.imageci.digest"] == version.digest
    plan = plan_tests(session, TestRequest(ref=NAME))
    assert "os-release" in [c.id for c in plan.checks] and plan.testbeds == ["sandbox"]
    assert gating.gate(session, version) is not None  # the gate comes from the stored definition


@needs_root
def test_rebuilding_unchanged_inputs_records_the_new_suite_and_gate(env: Env, session: Session,
                                                                    tmp_path: Path) -> None:
    build_example(env)
    definition = _moved_example(tmp_path)
    [first_built] = building.build(session, definition)
    first = first_built.version
    (definition.parent / "suite" / "extra.sh").write_text("#!/bin/sh\ntrue\n")
    (definition.parent / "suite" / "extra.sh").chmod(0o755)
    definition.write_text(definition.read_text().replace("tests: all", "tests: [os-release]"))
    [again] = building.build(session, definition)
    assert again.skipped and again.version.id == first.id  # same bytes, no rebuild
    plan = plan_tests(session, TestRequest(ref=NAME))
    assert "extra" in [c.id for c in plan.checks]
    version = session.catalog.resolve(NAME)
    result = gating.gate(session, version)
    assert result is not None and [t for t, _, _ in result.missing] == ["os-release"]


# ---- every command, through the layer -----------------------------------------------------------


@needs_root
def test_every_command_through_the_layer(env: Env, session: Session, tmp_path: Path) -> None:
    build_example(env)
    [built] = building.build(session, EXAMPLE / "image.yaml")  # build
    assert built.skipped or built.from_cache or built.identical or built.version.state == State.TESTING
    rows = queries.images(session)  # images
    assert [(r.name, r.state, r.channels) for r in rows] == [(NAME, "testing", ["testing"])]
    with pytest.raises(UsageError, match="did you mean"):
        queries.images(session, "debian-bookworm-minimul")

    one = run_tests(session, TestRequest(ref=NAME, tests=["os-release"]))  # run
    assert one.exit_code == ExitCode.OK and [r.test_id for r in one.report.results] == ["os-release"]
    assert one.reproducer.is_file()
    with pytest.raises(GateRefused):  # promote: one test is not the whole gate
        gating.promote(session, NAME)

    planned: list[TestPlan] = []
    whole = run_tests(session, TestRequest(ref=NAME, jobs=2), on_plan=planned.append)  # test
    assert whole.exit_code == ExitCode.OK and planned and len(planned[0].checks) == len(whole.report.results)
    res = queries.results(session, NAME, ["os-release"])  # results
    assert res.image.startswith(NAME + "@") and {a.verdict for a in res.attempts} == {"pass"}
    assert [r.status for r in res.runs] == ["finished"]  # the second run reused its pass: no new attempt
    assert [r.status for r in queries.results(session, NAME).runs] == ["finished", "finished"]
    with pytest.raises(UsageError, match="no results for nope"):
        queries.results(session, NAME, ["nope"])

    status = gating.gate(session, session.catalog.resolve(NAME))
    assert status is not None and status.holds
    promoted = gating.promote(session, NAME)  # promote
    assert promoted.version.state == State.STABLE and not promoted.forced
    trail = [e.event for e in queries.events(session, f"{NAME}:stable")]  # events
    assert trail[:2] == ["- → created", "created → testing"] and trail[-1] == "testing → stable"
    assert any(e.startswith("run ") and e.endswith(" finished") for e in trail)

    assert flakiness.flaky(session, None, timedelta(days=1)) == []  # flaky
    assert gating.prune(session, older_than=timedelta(0), dry_run=True) == []  # prune: stable is never pruned
    checked = upkeep.verify(session)  # verify
    assert checked.ok and checked.blobs > 0
    assert upkeep.gc(session).removed == []  # gc: nothing dead to collect
    assert any(f.area == "sandbox" and f.ok for f in upkeep.doctor(session))  # doctor


@needs_root
def test_pipeline_takes_the_test_options_and_records_its_suite(tmp_path: Path) -> None:
    e = make_env(tmp_path / "home")
    build_example(e)
    s = Session.open(e.settings)
    suite = write_suite(tmp_path / "mine", {"ok.sh": "#!/bin/sh\ntest -f /etc/os-release\n"})
    tap = tmp_path / "out.tap"
    outcome = pipeline(s, EXAMPLE / "image.yaml", TestRequest(ref="", suite=suite, testbeds=["sandbox"],
                                                              fresh="suite", tap=tap))
    assert outcome.exit_code == ExitCode.OK and outcome.promoted
    assert [r.test_id for r in outcome.run.report.results] == ["ok"] and outcome.run.plan.fresh == "suite"
    assert "ok 1 - ok" in tap.read_text()
    stored = suite_dir_of(s, s.catalog.resolve(f"{NAME}:stable"))
    assert sorted(p.name for p in stored.iterdir()) == ["ok.sh"]  # the gate judged the suite it ran

    failing = write_suite(tmp_path / "bad", {"no.sh": "#!/bin/sh\nexit 1\n"})
    refused = pipeline(s, EXAMPLE / "image.yaml", TestRequest(ref="", suite=failing), force_build=False)
    assert refused.already_stable and refused.exit_code == ExitCode.OK  # same bytes: already stable
    s.close()
    e.catalog.close()
    assert BUILD_CACHE.is_dir()


def _imported_with_suite(session: Session, tmp_path: Path) -> tuple[str, str, str]:
    """An imported version whose suite has one test, ``probe``: its ref, image digest and test digest."""
    from imageci.app import importing
    from imageci.checks.suite import suite_checks
    from imageci.definitions.suite import load_suite

    tiny_rootfs(tmp_path / "rootfs.tar")
    suite = write_suite(tmp_path / "suite", {"probe": "#!/bin/sh\nexit 77\n"})
    done = importing.import_(session, "raced", str(tmp_path / "rootfs.tar"), suite=suite)
    [probe] = suite_checks(load_suite(suite))
    return f"raced@{done.version.serial}", done.version.digest, probe.digest


def _attempt(session: Session, run: int, digest: str, test_digest: str, verdict: str, exit_code: int) -> int:
    from imageci.store.models import Attempt, utcnow

    now = utcnow()
    return session.catalog.record_attempt(Attempt(
        run_id=run, image_digest=digest, test_id="probe", test_digest=test_digest, testbed="sandbox", attempt=1,
        started_at=now, ended_at=now, exit_code=exit_code, verdict=verdict, reason="")).id


@pytest.mark.parametrize("arriving, promoted", [("fail", False), ("pass", True)])
def test_a_promotion_is_judged_on_the_results_there_when_it_commits(
        session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arriving: str, promoted: bool) -> None:
    """The gate holds on a self-reported skip (exit 77); a run records another attempt while the gate is
    being evaluated. The promotion notices, judges again on what is there now, and only then decides."""
    ref, digest, test_digest = _imported_with_suite(session, tmp_path)
    version = session.catalog.resolve(ref)
    run = session.catalog.start_run(digest, version.id, {})
    _attempt(session, run, digest, test_digest, "skip", 77)
    assert gating.gate_status(session, ref).holds
    judged: list[bool] = []
    arrived: list[int] = []
    real_gate = gating.gate

    def gate_then_a_result_arrives(*args: object, **kw: object) -> object:
        result = real_gate(*args, **kw)  # type: ignore[arg-type]
        judged.append(bool(result and result.holds))
        if not arrived:
            arrived.append(_attempt(session, run, digest, test_digest, arriving, 0 if arriving == "pass" else 1))
        return result

    monkeypatch.setattr(gating, "gate", gate_then_a_result_arrives)
    if promoted:
        done = gating.promote(session, ref)
        assert done.version.state == State.STABLE
        reason = queries.events(session, ref)[-1].reason
        assert reason.endswith(f"(evidence up to attempt {arrived[0]})"), reason
    else:
        with pytest.raises(GateRefused, match="latest attempt: fail"):
            gating.promote(session, ref)
        assert session.catalog.resolve(ref).state == State.TESTING
    assert judged == [True, promoted]  # held on the old evidence; judged again on the new


def test_two_promotions_at_once_promote_once(session: Session, tmp_path: Path) -> None:
    from imageci.store.catalog import TransitionError

    ref, _digest, _test_digest = _imported_with_suite(session, tmp_path)
    version = session.catalog.resolve(ref)
    session.catalog.promote_on(version.id, None, actor="first", reason="gate held")
    with pytest.raises(TransitionError, match="is stable"):
        session.catalog.promote_on(version.id, None, actor="second", reason="gate held")
    events = [e for e in queries.events(session, ref) if e.event.endswith("→ stable")]
    assert [e.actor for e in events] == ["first"]


def test_architectures_promoted_together_or_not_at_all(session: Session, tmp_path: Path) -> None:
    """`promote_on(also=…)` is one transaction: when one architecture's evidence changed, no
    architecture moves."""
    from imageci.app import importing
    from imageci.store.catalog import EvidenceChanged

    versions = []
    for arch in ("amd64", "arm64"):
        tiny_rootfs(tmp_path / f"{arch}.tar", f"etc-{arch}")
        done = importing.import_(session, f"pair-{arch}", str(tmp_path / f"{arch}.tar"), architecture=arch)
        versions.append(done.version)
    amd64, arm64 = versions
    stale = session.catalog.evidence(arm64)
    run = session.catalog.start_run(arm64.digest, arm64.id, {})
    _attempt(session, run, arm64.digest, "0" * 64, "pass", 0)  # arrives after the gate read
    with pytest.raises(EvidenceChanged, match="pair-arm64"):
        session.catalog.promote_on(amd64.id, session.catalog.evidence(amd64), reason="gate held",
                                   also=[(arm64.id, stale)])
    assert {session.catalog.resolve(f"pair-{a}:testing").state for a in ("amd64", "arm64")} == {"testing"}
    session.catalog.promote_on(amd64.id, session.catalog.evidence(amd64), reason="gate held",
                               also=[(arm64.id, session.catalog.evidence(arm64))])
    assert {session.catalog.resolve(f"pair-{a}:stable").state for a in ("amd64", "arm64")} == {"stable"}
