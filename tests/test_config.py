"""Settings: every IMAGECI_* variable is read in one place, validated, and documented."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from imageci.config import VARIABLES, Settings
from imageci.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


def test_every_variable_is_read_into_settings(tmp_path: Path) -> None:
    env = {"IMAGECI_HOME": str(tmp_path / "h"), "IMAGECI_DB_URL": "sqlite:///x.db", "IMAGECI_JOBS": "3",
           "IMAGECI_BUILD_CACHE": str(tmp_path / "bc"), "IMAGECI_ACTOR": "ci-bot", "IMAGECI_HOSTS": "/etc/h.yaml",
           "IMAGECI_QEMU_ACCEL": "tcg", "IMAGECI_WARM_VMS": "0", "IMAGECI_TCG_MULTIPLIER": "2.5",
           "IMAGECI_MEMORY_BUDGET_MB": "2048", "IMAGECI_CPU_BUDGET": "1.5", "IMAGECI_SERVER": "https://ci.example",
           "IMAGECI_MAX_UPLOAD": "8G",
           "IMAGECI_TOKEN": "ici_secret", "IMAGECI_EXECUTOR": "celery",
           "IMAGECI_BROKER_URL": "redis://:pw@127.0.0.1:6379/1", "IMAGECI_VISIBILITY_TIMEOUT": "7200",
           "IMAGECI_WEBHOOK_URL": "http://127.0.0.1:9/hook", "IMAGECI_WEBHOOK_SECRET": "hooksecret",
           "IMAGECI_SMTP_URL": "smtp://u:mailpw@127.0.0.1:2525", "IMAGECI_MAIL_FROM": "ci@example.org",
           "IMAGECI_MAIL_TO": "a@example.org, b@example.org", "IMAGECI_GIT_HOSTS": "git.example.org,127.0.0.1:9",
           "IMAGECI_CACHE_BUDGET": "5G", "IMAGECI_STORE_URL": "s3://images/prod", "IMAGECI_STORE_PRESIGN": "300"}
    assert set(env) == set(VARIABLES)
    s = Settings.load(env=env)
    assert (s.home, s.db_url, s.jobs, s.build_cache, s.actor, s.hosts) == (
        (tmp_path / "h").resolve(), "sqlite:///x.db", 3, tmp_path / "bc", "ci-bot", Path("/etc/h.yaml"))
    assert (s.qemu_accel, s.warm_vms, s.tcg_multiplier, s.memory_budget_mb, s.cpu_budget) == (
        "tcg", 0, 2.5, 2048, 1.5)
    assert (s.server, s.token) == ("https://ci.example", "ici_secret") and "ici_secret" not in repr(s)
    assert s.max_upload == 8 << 30
    assert (s.store_url, s.store_presign) == ("s3://images/prod", 300)
    assert (s.executor, s.broker_url, s.visibility_timeout) == ("celery", "redis://:pw@127.0.0.1:6379/1", 7200)
    assert "pw@" not in repr(s)
    assert (s.webhook_url, s.webhook_secret, s.smtp_url, s.mail_from, s.mail_to) == (
        "http://127.0.0.1:9/hook", "hooksecret", "smtp://u:mailpw@127.0.0.1:2525", "ci@example.org",
        ("a@example.org", "b@example.org"))
    assert "hooksecret" not in repr(s) and "mailpw" not in repr(s)
    assert s.git_hosts == "git.example.org,127.0.0.1:9" and s.cache_budget == 5 << 30
    d = Settings.load(env={"IMAGECI_HOME": str(tmp_path / "d")})
    assert (d.qemu_accel, d.warm_vms, d.tcg_multiplier, d.memory_budget_mb, d.actor) == ("auto", 1, 3.0, None, None)
    assert d.hosts == d.home / "hosts.yaml" and d.jobs == (os.cpu_count() or 1) and d.max_upload == 32 << 30
    assert (d.executor, d.broker_url, d.visibility_timeout) == ("local", None, 3600)


@pytest.mark.parametrize(("name", "value"), [
    ("IMAGECI_JOBS", "0"), ("IMAGECI_JOBS", "many"), ("IMAGECI_WARM_VMS", "-1"), ("IMAGECI_QEMU_ACCEL", "xen"),
    ("IMAGECI_TCG_MULTIPLIER", "0"), ("IMAGECI_MEMORY_BUDGET_MB", "lots"), ("IMAGECI_CPU_BUDGET", "-2"),
    ("IMAGECI_SERVER", "ci.example.org"), ("IMAGECI_MAX_UPLOAD", "huge"), ("IMAGECI_EXECUTOR", "k8s"),
    ("IMAGECI_VISIBILITY_TIMEOUT", "5")])
def test_a_malformed_variable_is_a_usage_error_that_names_it(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"{name} must be .*{re.escape(repr(value))}"):
        Settings.load(env={"IMAGECI_HOME": str(tmp_path), name: value})
    res = subprocess.run([sys.executable, "-m", "imageci.cli", "images"], capture_output=True, text=True,
                         env={**os.environ, "IMAGECI_HOME": str(tmp_path), name: value})
    assert res.returncode == 2 and name in res.stderr and "Traceback" not in res.stderr


def test_a_malformed_broker_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="IMAGECI_BROKER_URL must be a redis://") as caught:
        Settings.load(env={"IMAGECI_HOME": str(tmp_path), "IMAGECI_BROKER_URL": "amqp://u:hunter2@mq/"})
    assert "hunter2" not in str(caught.value)


def test_every_variable_is_documented_in_the_manual() -> None:
    readme = (REPO / "docs" / "configuration.md").read_text()
    missing = [v for v in VARIABLES if f"`{v}`" not in readme]
    assert not missing, f"docs/configuration.md lacks {missing}"
    code = "\n".join(p.read_text() for p in (REPO / "src" / "imageci").rglob("*.py"))
    inside = {"IMAGECI_TEST", "IMAGECI_TESTBED", "IMAGECI_EXEC_SOCKET", "IMAGECI_CONSUMER"}  # set in testbeds
    read = set(re.findall(r"\b(IMAGECI_[A-Z_]+)\b", code)) - inside - {"IMAGECI_REF"}
    manual = "\n".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    assert all(f"`{v}`" in manual for v in inside - {"IMAGECI_EXEC_SOCKET"})
    assert "`IMAGECI_REF`" in manual  # a variable of the pipelines `imageci ci gitlab` writes
    assert read <= set(VARIABLES), f"variables outside Settings: {read - set(VARIABLES)}"


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    for bad in ("0", "-2"):
        res = subprocess.run([sys.executable, "-m", "imageci.cli", "test", "any-image", "-j", bad],
                             capture_output=True, text=True, env={**os.environ, "IMAGECI_HOME": str(tmp_path)})
        assert res.returncode == 2 and "-j" in res.stderr


def _images(env: dict[str, str], *wrap: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*wrap, sys.executable, "-m", "imageci.cli", "images"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize(("name", "value"), [
    ("IMAGECI_DB_URL", "nonsense"), ("IMAGECI_DB_URL", "postgresql://u:hunter2@[bad/db"),
    ("IMAGECI_DB_URL", "postgresql://u:hunter2@db:port/x"), ("IMAGECI_BROKER_URL", "redis://:hunter2@mq:99999/0"),
    ("IMAGECI_BROKER_URL", "redis://"), ("IMAGECI_SERVER", "http://"), ("IMAGECI_WEBHOOK_URL", "https://[::1/x"),
    ("IMAGECI_SMTP_URL", "smtp://u:hunter2@mail:twenty-five")])
def test_an_unusable_url_is_one_line_naming_it_without_its_secret(tmp_path: Path, name: str, value: str) -> None:
    res = _images({"IMAGECI_HOME": str(tmp_path / "home"), name: value})
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"error: {name} must be") and len(res.stderr.strip().splitlines()) == 1
    assert "hunter2" not in res.stderr


@pytest.mark.root  # a read-only bind mount
def test_an_unusable_home_is_one_line_naming_it(tmp_path: Path) -> None:
    """A home under a regular file, on a read-only file system, not writable; a catalog file under a
    regular file: each a usage error (exit 2) that names the setting, never a traceback or 'damaged'."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "ro").mkdir()
    cases = {"under a file": ({"IMAGECI_HOME": str(tmp_path / "file" / "home")}, (), "Not a directory"),
             "db under a file": ({"IMAGECI_HOME": str(tmp_path / "h"),
                                  "IMAGECI_DB_URL": f"sqlite:///{tmp_path / 'file' / 'catalog.db'}"}, (),
                                 "is not a directory")}
    for what, (env, wrap, said) in cases.items():
        res = _images(env, *wrap)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (what, res.stderr)
        assert said in res.stderr and len(res.stderr.strip().splitlines()) == 1, (what, res.stderr)
        assert ("IMAGECI_DB_URL" if "db" in what else "IMAGECI_HOME") in res.stderr
    for home in (tmp_path / "ro" / "home", tmp_path / "ro"):  # made there, or there and not writable
        ro = shlex.quote(str(tmp_path / "ro"))
        script = (f"mount --bind -o ro {ro} {ro} && "
                  f"IMAGECI_HOME={shlex.quote(str(home))} exec {sys.executable} -m imageci.cli images")
        res = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert f"IMAGECI_HOME {home} cannot be used" in res.stderr
        assert "Read-only file system" in res.stderr or "not writable" in res.stderr
