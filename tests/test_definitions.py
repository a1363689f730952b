from __future__ import annotations

from pathlib import Path

import pytest

from imageci.build.inputs import MirrorState, input_hash
from imageci.definitions.image import load_definition
from imageci.errors import SourceError

from conftest import EXAMPLE, Env

GOOD = """\
name: demo
suite: bookworm
packages: [tzdata]
tests:
  suite: suite
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "suite").mkdir(exist_ok=True)
    p = tmp_path / "image.yaml"
    p.write_text(text)
    return p


def test_example_definition_loads() -> None:
    loaded = load_definition(EXAMPLE / "image.yaml")
    d = loaded.definition
    assert d.name == "debian-bookworm-minimal"
    assert d.suite == "bookworm" and d.variant == "minbase"
    assert loaded.suite_dir() == (EXAMPLE / "suite").resolve()
    assert d.tests is not None and d.tests.gate.testbeds == ["sandbox"]


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("name: demo\nsuite: [bookworm\n", 3, "malformed YAML"),
    ("name: demo\nsuite: bookworm\ncolour: red\n", 3, "colour: unknown field"),
    ("name: demo\nsuite: bookworm\nkeep: many\n", 3, "keep: Input should be a valid integer"),
    ("name: demo\nsuite: bookworm\npackages:\n  - tzdata\n  - Bad_Name\n", 5, "not a Debian package name"),
    ("name: demo\nsuite: bookworm\nname: other\n", 3, "duplicate key 'name'"),
    ("name: Demo!\nsuite: bookworm\n", 1, "name: String should match pattern"),
    ("suite: bookworm\n", 1, "name: required field missing"),
    ("name: demo\nsuite: bookworm\ncustomize:\n  - run: \"true\"\n  - write: etc/x\n    content: hi\n", 5,
     "must be an absolute path"),
    ("name: demo\nsuite: bookworm\ncustomize:\n  - copy: /x\n", 4, "one of the keys 'run' or 'write'"),
    ("name: demo\nsuite: bookworm\ntests:\n  suite: nowhere\n", 4, "no such directory"),
    ("- just\n- a list\n", 1, "expected a mapping"),
    ("name: demo\nsuite: bookworm\ncustomize:\n  - run: true\n", 4, "customize.0.run: Input should be a valid string"),
])
def test_bad_definition_names_file_and_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SourceError) as exc:
        load_definition(path)
    assert exc.value.line == line, str(exc.value)
    assert str(exc.value).startswith(f"{path}:{line}: ")
    assert needle in str(exc.value)


def test_cli_bad_definition_exits_2_with_location(tmp_path: Path, env: Env) -> None:
    path = _write(tmp_path, "name: demo\nsuite: bookworm\nvariant: tiny\n")
    res = env.cli("build", str(path))
    assert res.returncode == 2
    assert f"{path}:3: variant:" in res.stderr.replace("\n", "")


def test_input_hash_tracks_image_inputs_only(tmp_path: Path) -> None:
    mirror = MirrorState("http://deb.debian.org/debian", "bookworm", "Sat, 11 Jul 2026 10:16:37 UTC", 0)
    base = load_definition(_write(tmp_path, GOOD)).definition
    h = input_hash(base, mirror)
    assert h == input_hash(base, mirror)
    # The gate, description and retention do not change the bytes: same hash.
    assert input_hash(base.model_copy(update={"description": "x", "keep": 9}), mirror) == h
    # Packages, customize steps and the mirror's state do.
    assert input_hash(base.model_copy(update={"packages": ["tzdata", "less"]}), mirror) != h
    newer = MirrorState(mirror.url, mirror.suite, "Sun, 12 Jul 2026 10:16:37 UTC", 1)
    assert input_hash(base, newer) != h
