"""What the dashboard shows, as the application layer computes it (no browser,
no root): the products × channels overview, a version's test matrix, a test's
history with its first bad version, the comparison of two versions, a log a
page at a time, a run's progress and the reproducer made from its record."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from imageci.app import history, logpages, matrix, overview, runview
from imageci.app.access import ANONYMOUS, Principal, Scope
from imageci.app.compare import compare
from imageci.app.session import Session
from imageci.config import Settings
from imageci.errors import UnknownReferenceError
from imageci.store.catalog import Catalog, NewArtifact
from imageci.store.models import Attempt, State
from imageci.store.states import utcnow
from imageci.web import ansi

TEAM_A = Principal(name="alice", namespace="team-a", scopes=frozenset({Scope.READ}))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Session, Catalog]]:
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'home' / 'catalog.db'}", jobs=1,
                        build_cache=None)
    settings.ensure()
    catalog = Catalog.open(settings.db_url)
    session = Session.open(settings)
    yield session, catalog
    session.close()
    catalog.close()


def _version(catalog: Catalog, name: str, digest: str, info: dict[str, object] | None = None) -> str:
    v = catalog.register_version(name, digest * 64, [NewArtifact("rootfs", "rootfs.tar", digest * 64, 10)],
                                 input_hash=None, definition=None, build_info=info or {}, actor="seed")
    return f"{name}@{v.serial}"


def _run(catalog: Catalog, ref: str, results: dict[tuple[str, str], list[str]], *, log: str | None = None,
         seconds: float = 1.0, finish: bool = True) -> int:
    v = catalog.resolve(ref)
    run = catalog.start_run(v.digest, v.id, {"tests": sorted({t for t, _ in results}),
                                              "testbeds": sorted({b for _, b in results}), "retries": 1})
    for (test, bed), verdicts in results.items():
        for n, verdict in enumerate(verdicts, 1):
            now = utcnow()
            catalog.record_attempt(Attempt(run_id=run, image_digest=v.digest, test_id=test, test_digest="t",
                                           testbed=bed, attempt=n, started_at=now - timedelta(seconds=seconds),
                                           ended_at=now, exit_code=0 if verdict == "pass" else 1, verdict=verdict,
                                           reason="" if verdict == "pass" else f"{test} broke", log_digest=log))
    if finish:
        catalog.finish_run(run, 0)
    return run


def test_the_matrix_shows_the_newest_run_of_each_pair_with_retries_aggregated(home: tuple[Session, Catalog]) -> None:
    s, cat = home
    ref = _version(cat, "img", "a")
    _run(cat, ref, {("boot", "sandbox"): ["fail"], ("boot", "qemu"): ["pass"], ("net", "sandbox"): ["pass"]})
    _run(cat, ref, {("boot", "sandbox"): ["fail", "pass"], ("net", "sandbox"): ["error"]})
    m = matrix.matrix(s, ref, expected=[("dns", "qemu")])
    assert [c.testbed for c in m.columns] == ["qemu", "sandbox"]
    cells = {(r.test, c.testbed): cell for r in m.rows for c, cell in zip(m.columns, r.cells, strict=True)}
    assert cells[("boot", "sandbox")].verdict == "flaky"  # the newest run: failed, then passed
    assert (cells[("boot", "sandbox")].attempts, cells[("boot", "sandbox")].runs) == (3, 2)
    assert cells[("boot", "qemu")].verdict == "pass" and cells[("net", "sandbox")].verdict == "error"
    assert cells[("net", "sandbox")].reason == "net broke"
    assert cells[("dns", "qemu")].verdict is None and cells[("net", "qemu")].verdict is None  # never ran
    assert m.counts == {"pass": 1, "fail": 0, "error": 1, "skip": 0, "flaky": 1, "not run": 3}
    assert [a.attempt for a in matrix.cell(s, ref, "boot", "sandbox").attempts] == [1, 1, 2]


def test_history_finds_the_first_bad_version_and_the_last_good_one(home: tuple[Session, Catalog]) -> None:
    s, cat = home
    refs = [_version(cat, "img", d) for d in "abcde"]
    for ref, verdict in zip(refs, ["pass", "fail", "pass", "fail", "error"], strict=True):
        _run(cat, ref, {("boot", "sandbox"): [verdict], ("boot", "qemu"): ["pass"]}, seconds=2.0)
    h = history.history(s, "img", "boot")
    assert [p.verdict for p in h.points] == ["pass", "fail", "pass", "fail", "error"]  # the worst testbed
    assert (h.first_bad, h.last_good) == (refs[3], refs[2])  # the current failure began at d
    assert h.points[0].pass_rate == 1.0 and h.points[1].pass_rate == 0.5 and h.points[0].duration == 2.0
    _run(cat, refs[4], {("boot", "sandbox"): ["pass"]})  # e passes now
    assert history.history(s, "img", "boot").first_bad is None
    with pytest.raises(UnknownReferenceError):
        history.history(s, "img", "nosuch")
    with pytest.raises(UnknownReferenceError):
        history.history(s, "nosuch", "boot")


def test_compare_names_the_verdicts_and_build_inputs_that_changed(home: tuple[Session, Catalog]) -> None:
    s, cat = home
    a = _version(cat, "img", "a", {"mirror": {"date": "2026-11-01"}, "builder": "x"})
    b = _version(cat, "img", "b", {"mirror": {"date": "2026-11-20"}, "builder": "x"})
    _run(cat, a, {("boot", "sandbox"): ["pass"], ("net", "sandbox"): ["pass"]})
    _run(cat, b, {("boot", "sandbox"): ["pass"], ("net", "sandbox"): ["fail"], ("new", "sandbox"): ["pass"]})
    c = compare(s, a, b)
    assert [(x.test, x.before, x.after) for x in c.changed] == [("net", "pass", "fail"), ("new", None, "pass")]
    assert c.same == 1
    assert [(x.key, x.before, x.after) for x in c.build] == [("mirror.date", "2026-11-01", "2026-11-20")]


def test_logs_are_read_a_line_aligned_page_at_a_time(home: tuple[Session, Catalog]) -> None:
    s, cat = home
    text = "".join(f"line {i}\n" for i in range(1, 3001)).encode()  # 28,893 bytes
    blob = s.store.put_bytes(text)
    ref = _version(cat, "img", "a")
    _run(cat, ref, {("big", "sandbox"): ["fail"]}, log=blob.digest)
    tail = logpages.log_page(s, ref, "big", page=4096)
    assert tail.end == tail.size == len(text) and tail.text.startswith("line ") and tail.text.endswith("line 3000\n")
    assert len(tail.text) <= 4096 and tail.next is None and tail.previous is not None
    first = logpages.log_page(s, ref, "big", offset=0, page=4096)
    assert first.text.startswith("line 1\n") and first.text.endswith("\n") and first.next == first.end
    pages, at = [], 0
    while True:  # following "later" from the start reads every byte once
        page = logpages.log_page(s, ref, "big", offset=at, page=4096)
        pages.append(page.text)
        if page.next is None:
            break
        at = page.next
    assert "".join(pages).encode() == text
    s.store.path(blob.digest).unlink()
    missing = logpages.log_page(s, ref, "big")
    assert missing.missing is not None and "missing from the store" in missing.missing and missing.text == ""


def test_the_overview_shows_each_channel_for_whoever_may_see_it(home: tuple[Session, Catalog]) -> None:
    s, cat = home
    a1, a2 = _version(cat, "alpha", "a"), _version(cat, "alpha", "b")
    _version(cat, "beta", "c")
    cat.transition(cat.resolve(a1).id, State.STABLE, actor="seed")
    cat.set_product("alpha", namespace="team-a")
    cat.set_product("beta", namespace="team-b", public=True)
    cards = {c.name: c for c in overview.overview(s)}
    alpha = {c.channel: c for c in cards["alpha"].channels}
    assert (alpha["testing"].image, alpha["stable"].image) == (a2, a1)
    assert alpha["testing"].gate == "none"  # no definition, no suite: no gate
    assert alpha["stable"].gate == "promoted"  # judged when it was promoted
    assert [c.name for c in overview.overview(s, viewer=TEAM_A)] == ["alpha", "beta"]
    assert [c.name for c in overview.overview(s, viewer=ANONYMOUS)] == ["beta"]  # public only


def test_a_run_s_progress_and_its_reproducer(home: tuple[Session, Catalog]) -> None:
    s, cat = home
    ref = _version(cat, "img", "a")
    run = _run(cat, ref, {("boot", "sandbox"): ["pass"], ("net", "sandbox"): ["fail"]}, finish=False)
    view = runview.run_view(s, run)
    assert (view.status, view.planned, view.done) == ("running", 2, 2)
    assert view.counts["pass"] == 1 and view.counts["fail"] == 1
    script = runview.reproducer(s, run, "https://ci.example")
    assert f'--server https://ci.example test {ref} --testbed sandbox --retries 1 "$@"' in script
    with pytest.raises(UnknownReferenceError):
        runview.run_view(s, run, viewer=ANONYMOUS)  # a private product's run is unknown to others


def test_terminal_colours_become_spans_and_the_rest_is_dropped() -> None:
    html = ansi.to_html("\x1b[1;31mred\x1b[0m <b>\x1b]0;title\x07\x1b[2Kok\x1b[92m!\x1b[39m\x07")
    assert str(html) == '<span class="fg-1 b">red</span> &lt;b&gt;ok<span class="fg-10">!</span>'
    assert ansi.plain("\x1b[31mred\x1b[0m") == "red"
