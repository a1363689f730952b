"""The command line makes only the command its words name (Typer would make all sixty before parsing): each
command so made is the command of the whole tree, and words that name none still get the whole tree's help and
suggestions."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import typer

from imageci.cli.main import app, command_word, named_only, valued_options
from imageci.cli.main import main as main_callback

from conftest import REPO

IMAGECI = [sys.executable, "-m", "imageci.cli"]


def _described(command: Any) -> Any:
    """What a user meets of a click command or group: its name, parameters, help, and its commands'."""
    params = [(p.name, tuple(p.opts), p.param_type_name, p.required, p.multiple) for p in command.params]
    subs = {n: _described(c) for n, c in getattr(command, "commands", {}).items()}
    return command.name, params, command.help, subs


def test_a_command_made_alone_is_the_command_of_the_whole_tree() -> None:
    whole = typer.main.get_command(app)
    names = sorted(whole.commands)  # type: ignore[attr-defined]
    assert len(names) >= 40
    for name in names:
        for words in ([name, "--help"], ["--server", "http://example.invalid", name], ["--server=u", name, "x"]):
            alone = typer.main.get_command(named_only(app, words))
            assert list(alone.commands) == [name], words  # type: ignore[attr-defined]
            assert _described(alone.commands[name]) == _described(whole.commands[name])  # type: ignore[attr-defined]
    assert named_only(app, ["images"]) is not app and len(app.registered_commands) > 1  # the tree is untouched


def test_words_that_name_no_command_get_the_whole_tree() -> None:
    assert valued_options(main_callback) == {"--server"}
    for words in ([], ["--help"], ["--help", "images"], ["--version"], ["imagse"], ["--server", "images"],
                  ["--", "images"]):
        assert named_only(app, words) is app, words
    assert command_word(["--server", "u", "--version", "gate", "--help"], {"--server"}) == "gate"


def test_the_process_answers_as_the_whole_tree_would() -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*IMAGECI, *args], capture_output=True, text=True, timeout=60, cwd=REPO)

    typo = cli("imagse")
    assert typo.returncode == 2 and "No such command" in typo.stderr and "images" in typo.stderr, typo.stderr
    listed = cli("--help")
    assert listed.returncode == 0 and "promote" in listed.stdout and "known-failures" in listed.stdout
    group = cli("known-failures", "--help")
    assert group.returncode == 0 and "add" in group.stdout, group.stdout
    one = cli("--server", "http://127.0.0.1:9", "images", "--help")
    assert one.returncode == 0 and "Usage: imageci images" in one.stdout, one.stdout + one.stderr


GC_PROBE = """
import gc, os, sys, time, weakref
from imageci.cli.start import collect_after_start
gc.collect()
frozen = gc.get_freeze_count()
collect_after_start(0.3)
print("off", not gc.isenabled())
class Node:
    pass
node = Node()
node.me = node  # a cycle made while the collector is off
gone = weakref.ref(node)
del node
pid = os.fork()
if pid == 0:
    os._exit(0 if gc.isenabled() else 1)  # a process forked meanwhile collects
print("fork", os.waitpid(pid, 0)[1] == 0)
time.sleep(1.0)
print("on", gc.isenabled(), "frozen", gc.get_freeze_count() > frozen, "freed", gone() is None)
"""


def test_the_collector_waits_for_the_command_s_first_second() -> None:
    """A command's imports are not scanned again and again by the collector (imageci.cli.start): it is off for
    the first second, then one collection frees the cycles made meanwhile, what is alive is frozen, and it is on
    again — for a long command, a server or a worker, and at once in a process forked meanwhile."""
    done = subprocess.run([sys.executable, "-c", GC_PROBE], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.split() == ["off", "True", "fork", "True", "on", "True", "frozen", "True", "freed", "True"], \
        done.stdout + done.stderr
