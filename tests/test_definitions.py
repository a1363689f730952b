from __future__ import annotations

from pathlib import Path

import pytest

from imageci.build.inputs import MirrorState, image_inputs, input_hash
from imageci.definitions.image import Retention, load_definition
from imageci.errors import SourceError, UsageError

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
    ("name: demo\nsuite: bookworm\narchitecture: amd64\narchitectures: [arm64]\n", 1, "not both"),
    ("name: demo\nsuite: bookworm\narchitectures: [arm64, arm64]\n", 1, "lists an architecture twice"),
    ("name: demo\nsuite: bookworm\narchitectures: []\n", 3, "architectures: List should have at least 1 item"),
    ("name: demo\nsuite: bookworm\narchitectures: [Arm64]\n", 3, "architectures.0: String should match"),
    (f"name: {'x' * 60}\nsuite: bookworm\narchitectures: [arm64]\n", 1, "is too long"),
    ("name: demo\nsuite: bookworm\npackages:\n  - tzdata\n  - foo [amd64 !arm64]\n", 5, "not both"),
    ("name: demo\nsuite: bookworm\npackages:\n  - foo [amd64\n", 4, "not a Debian package name"),
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
    assert input_hash(base.model_copy(update={"schedule": "0 4 * * *",
                                              "retention": Retention(testing_days=3, keep_days=9)}), mirror) == h
    # Packages, customize steps and the mirror's state do.
    assert input_hash(base.model_copy(update={"packages": ["tzdata", "less"]}), mirror) != h
    newer = MirrorState(mirror.url, mirror.suite, "Sun, 12 Jul 2026 10:16:37 UTC", 1)
    assert input_hash(base, newer) != h


MULTI = """\
name: demo
suite: bookworm
architectures: [amd64, arm64]
packages:
  - tzdata
  - linux-image-amd64 [amd64]
  - linux-image-arm64 [arm64]
  - grub-pc [!arm64 !riscv64]
"""


def test_architectures_make_one_product_each_with_its_packages(tmp_path: Path) -> None:
    d = load_definition(_write(tmp_path, MULTI)).definition
    assert d.multiarch and [v.name for v in d.per_architecture()] == ["demo-amd64", "demo-arm64"]
    amd64, arm64 = d.per_architecture()
    assert (amd64.architecture, amd64.packages) == ("amd64", ["tzdata", "linux-image-amd64", "grub-pc"])
    assert (arm64.architecture, arm64.packages) == ("arm64", ["tzdata", "linux-image-arm64"])
    assert [v.name for v in d.per_architecture({"arm64"})] == ["demo-arm64"]
    with pytest.raises(UsageError, match="demo is not built for riscv64"):
        d.per_architecture({"riscv64"})
    mirror = MirrorState("http://deb.debian.org/debian", "bookworm", "Sat, 11 Jul 2026 10:16:37 UTC", 0)
    assert input_hash(amd64, mirror) != input_hash(arm64, mirror)
    # A single-architecture definition is one product with its own name; its input hash is the one it
    # had before `architectures` existed (no rebuild after an upgrade).
    single = load_definition(_write(tmp_path, GOOD)).definition
    assert not single.multiarch and [v.name for v in single.per_architecture()] == ["demo"]
    assert "architectures" not in image_inputs(single.per_architecture()[0])
    assert input_hash(single.per_architecture()[0], mirror) == input_hash(single, mirror)
