"""The command-line table, parsed by the click-free fast path and by click, must agree."""

from __future__ import annotations

import signal

import pytest

from minirun.cli import fastparse
from minirun.cli.table import GLOBAL_OPTIONS, VERBS
from minirun.container import parse_signal
from minirun.errors import UsageError


def test_containerd_style_create() -> None:
    parsed = fastparse.parse(["--root", "/run/x", "--log", "/l.json", "--log-format", "json", "create",
                              "--bundle", "/b", "--pid-file", "/p", "c1"])
    assert parsed is not None
    assert parsed.globals["root"] == "/run/x" and parsed.globals["log_format"] == "json"
    assert parsed.verb == "create"
    assert parsed.options["bundle"] == "/b" and parsed.options["pid_file"] == "/p"
    assert parsed.options["container_id"] == "c1"


def test_equals_form_and_interspersed_options() -> None:
    parsed = fastparse.parse(["run", "c1", "--bundle=/b", "-d", "--keep"])
    assert parsed is not None
    assert parsed.options["target"] == "c1" and parsed.options["bundle"] == "/b"
    assert parsed.options["detach"] is True and parsed.options["keep"] is True


def test_kill_defaults_to_term() -> None:
    parsed = fastparse.parse(["kill", "--all", "c1"])
    assert parsed is not None and parsed.options == {"all": True, "container_id": "c1", "signal": "TERM"}


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["run", "-h"], ["--version"], ["bogus"], ["start"], ["start", "a", "b"],
    ["start", "--bogus", "a"], ["--log-format", "xml", "state", "a"], ["create", "--preserve-fds", "x", "a"],
    ["create", "--bundle"], ["--root"],
])
def test_anything_unsure_falls_back_to_click(argv: list[str]) -> None:
    assert fastparse.parse(argv) is None


def test_click_tree_knows_every_verb_and_option() -> None:
    from minirun.cli.clicktree import _group

    group = _group()
    assert set(group.commands) == set(VERBS)
    assert {p.name for p in group.params} >= {o.dest for o in GLOBAL_OPTIONS}
    for name, verb in VERBS.items():
        params = {p.name for p in group.commands[name].params}
        assert params == {o.dest for o in verb.options} | {a.dest for a in verb.args}, name


@pytest.mark.parametrize(("text", "number"), [
    ("TERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL), ("kill", signal.SIGKILL), ("9", 9), ("usr1", 10),
    ("SIGRTMIN", signal.SIGRTMIN), ("34", 34),
])
def test_signal_names_and_numbers(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["NOPE", "0", "999", "-9", ""])
def test_bad_signals(text: str) -> None:
    with pytest.raises(UsageError):
        parse_signal(text)


def test_repeatable_options_collect_and_options_stop_at_the_command_line() -> None:
    parsed = fastparse.parse(["exec", "-e", "A=1", "--env", "B=2", "-d", "box", "sh", "-c", "echo -e x"])
    assert parsed is not None
    assert parsed.options["env"] == ["A=1", "B=2"] and parsed.options["detach"] is True
    assert parsed.options["container_id"] == "box" and parsed.options["args"] == ["sh", "-c", "echo -e x"]
    assert parsed.options["cap"] == []
