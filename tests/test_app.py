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

from imageci.app import building, gating, queries, upkeep
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

from conftest import BUILD_CACHE, EXAMPLE, Env, build_example, make_env, write_suite

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
    built = building.build(session, definition)
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
    first = building.build(session, definition).version
    (definition.parent / "suite" / "extra.sh").write_text("#!/bin/sh\ntrue\n")
    (definition.parent / "suite" / "extra.sh").chmod(0o755)
    definition.write_text(definition.read_text().replace("tests: all", "tests: [os-release]"))
    again = building.build(session, definition)
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
    built = building.build(session, EXAMPLE / "image.yaml")  # build
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

    assert queries.flaky(session, None, timedelta(days=1)) == []  # flaky
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
    assert outcome.exit_code == ExitCode.OK and outcome.promotion is not None
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
