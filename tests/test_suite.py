from __future__ import annotations

from pathlib import Path

import pytest

from imageci.definitions.suite import load_suite
from imageci.errors import SourceError

from conftest import EXAMPLE, write_suite


def test_example_suite_has_at_least_ten_checks() -> None:
    suite = load_suite(EXAMPLE / "suite")
    assert len(suite.tests) >= 10
    assert all(t.executable for t in suite.tests)
    names = {t.name for t in suite.tests}
    assert {"os-release", "apt-offline", "passwd-entries", "no-ssh-host-keys", "machine-id-empty",
            "locale", "tzdata"} <= names


def test_example_checks_of_the_pristine_image_declare_it() -> None:
    """A check of the image as built (machine-id, host keys: a booted systemd or sshd writes them) needs
    ``pristine``, so a booted testbed (LXD, qemu, podman with isolation-container) skips it instead of
    failing a good image, as the built-in hygiene checks do."""
    from imageci.capabilities import PRISTINE
    from imageci.checks.builtin import BUILTINS

    suite = load_suite(EXAMPLE / "suite")
    hygiene = [t for t in suite.tests if "hygiene" in t.tags]
    assert {t.name for t in hygiene} >= {"machine-id-empty", "no-ssh-host-keys"}
    assert [t.name for t in hygiene if PRISTINE not in t.needs] == []
    assert PRISTINE in BUILTINS["machine-id-uninitialized"].needs


def test_metadata_from_header_and_suite_yaml(tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {
        "a.sh": "#!/bin/sh\n# imageci-timeout: 7\n# imageci-tags: x, y\n# imageci-needs: root\n"
                "# imageci-flaky: true\ntrue\n",
        "b": "#!/bin/sh\ntrue\n",
    }, "defaults:\n  timeout: 20\ntests:\n  a:\n    timeout: 9\n")
    suite = load_suite(d)
    a, b = suite.tests
    assert (a.name, a.timeout, a.tags, a.needs, a.flaky) == ("a", 9, ("x", "y"), ("root",), True)
    assert (b.name, b.timeout, b.flaky) == ("b", 20, False)


def test_digest_changes_with_content_and_metadata(tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {"a.sh": "#!/bin/sh\ntrue\n"})
    first = load_suite(d).tests[0].digest
    assert load_suite(d).tests[0].digest == first
    (d / "a.sh").write_text("#!/bin/sh\nfalse\n")
    second = load_suite(d).tests[0].digest
    assert second != first
    (d / "suite.yaml").write_text("tests:\n  a:\n    timeout: 5\n")
    assert load_suite(d).tests[0].digest != second


def test_non_executable_test_is_listed_but_marked(tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {"a.sh": "#!/bin/sh\ntrue\n"})
    (d / "a.sh").chmod(0o644)
    assert load_suite(d).tests[0].executable is False


def test_unknown_header_key_is_file_line_error(tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {"a.sh": "#!/bin/sh\n# imageci-timout: 5\ntrue\n"})
    with pytest.raises(SourceError) as exc:
        load_suite(d)
    assert exc.value.line == 2 and "imageci-timout" in str(exc.value)


def test_suite_yaml_errors_have_lines(tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {"a.sh": "#!/bin/sh\ntrue\n"}, "tests:\n  a:\n    timeout: -1\n")
    with pytest.raises(SourceError) as exc:
        load_suite(d)
    assert exc.value.line == 3 and "tests.a.timeout" in str(exc.value)
    (d / "suite.yaml").write_text("tests:\n  a: {}\n  ghost: {}\n")
    with pytest.raises(SourceError) as exc:
        load_suite(d)
    assert exc.value.line == 3 and "ghost" in str(exc.value)


def test_select_unknown_test_suggests_close_names(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "s", {"os-release.sh": "#!/bin/sh\n", "locale": "#!/bin/sh\n"}))
    assert [t.name for t in suite.select(["locale"])] == ["locale"]
    with pytest.raises(SourceError, match="did you mean os-release"):
        suite.select(["os-relase"])


def test_builtins_are_named_in_suite_yaml_with_checked_options(tmp_path: Path) -> None:
    from imageci.checks.builtin import BuiltinCheck, builtin_checks

    d = write_suite(tmp_path / "s", {"a.sh": "#!/bin/sh\ntrue\n"},
                    "builtins:\n  - login-works\n  - name: journal-clean\n    priority: warning\n")
    suite = load_suite(d)
    checks = builtin_checks(suite)
    assert [(c.id, c.options) for c in checks] == [("login-works", {}), ("journal-clean", {"priority": "warning"})]
    assert checks[1].digest != BuiltinCheck("journal-clean", {"priority": "err"}).digest
    assert [c.id for c in builtin_checks(suite, ["journal-clean"])] == ["journal-clean"]
    assert suite.select(["a", "login-works"])[0].name == "a"  # built-in names are valid selections
    for bad, line, needle in (("builtins:\n  - login-works\n  - bogus\n", 3, "unknown built-in check 'bogus'"),
                              ("builtins:\n  - name: journal-clean\n    prio: err\n", 2, "no option 'prio'"),
                              ("builtins:\n  - name: journal-clean\n    priority: loud\n", 2, "priority must be")):
        (d / "suite.yaml").write_text(bad)
        with pytest.raises(SourceError) as exc:
            builtin_checks(load_suite(d))
        assert exc.value.line == line and needle in str(exc.value)


def test_needs_no_testbed_offers_are_warned_about_with_file_and_line(tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {
        "a.sh": "#!/bin/sh\n# imageci-needs: root, netwrok\ntrue\n",
        "b.sh": "#!/bin/sh\ntrue\n",
    }, "defaults:\n  needs: [arch:arm64]\ntests:\n  b:\n    needs: [isolation-vm]\n")
    warnings = load_suite(d).warnings
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"{d / 'a.sh'}:2: needs 'netwrok'") and "did you mean 'network'" in warnings[0]
    assert warnings[1].startswith(f"{d / 'suite.yaml'}:5: needs 'isolation-vm'")
    assert not load_suite(write_suite(tmp_path / "ok", {"c.sh": "#!/bin/sh\n# imageci-needs: kvm, gpu\n"})).warnings


def test_bad_hygiene_options_name_the_line(tmp_path: Path) -> None:
    from imageci.checks.suite import suite_checks

    d = write_suite(tmp_path / "s", {}, "builtins:\n  - no-core-files\n  - name: var-log-bounded\n    max-mb: lots\n")
    with pytest.raises(SourceError) as err:
        suite_checks(load_suite(d))
    assert err.value.line == 3 and "max-mb must be a number" in str(err.value)
    d = write_suite(tmp_path / "t", {}, "builtins:\n  - name: hygiene\n    allow: /x\n")
    with pytest.raises(SourceError) as err:
        suite_checks(load_suite(d))
    assert err.value.line == 2 and "takes no options" in str(err.value)
    d = write_suite(tmp_path / "u", {"no-core-files.sh": "#!/bin/sh\ntrue\n"}, "builtins:\n  - hygiene\n")
    with pytest.raises(SourceError) as err:
        suite_checks(load_suite(d))
    assert err.value.line == 2 and "'no-core-files', the name of a script test" in str(err.value)
