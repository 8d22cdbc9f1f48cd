"""The command line: help and version, `list` formats, `kill` signal spellings, `spec`, logging."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from minirun import __version__
from tests.conftest import MINIRUN, ROOTFS, Runtime, alive, poll

VERBS = ["create", "delete", "kill", "list", "run", "spec", "start", "state"]
CREATE_FLAGS = ["--bundle", "--pid-file", "--console-socket", "--no-pivot", "--no-new-keyring",
                "--preserve-fds"]
VERB_FLAGS: dict[str, list[str]] = {
    "create": CREATE_FLAGS,
    "run": [*CREATE_FLAGS, "--detach", "--keep", "--no-subreaper", "--name"],
    "delete": ["--force"],
    "kill": ["--all"],
    "list": ["--format", "--quiet"],
    "spec": ["--bundle", "--rootless"],
    "start": ["--help"],
    "state": ["--help"],
}
# Installs handlers (a pid-1 shell ignores signals it has no handler for), records each signal it
# gets in /mnt/signals, and runs until SIGKILLed.
TRAPPING = ("trap 'echo TERM >> /mnt/signals' TERM; trap 'echo USR1 >> /mnt/signals' USR1; "
            "trap 'echo HUP >> /mnt/signals' HUP; echo ready > /mnt/ready; "
            "while :; do sleep 0.05; done")




def shell_config(rt: Runtime, script: str, outdir: Path) -> dict[str, Any]:
    config = copy.deepcopy(rt.config)
    config["process"]["args"] = ["/bin/sh", "-c", script]
    config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(outdir),
                             "options": ["rbind", "rw"]})
    return config






def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def start_detached(rt: Runtime, script: str, outdir: Path, cid: str) -> int:
    """`run -d` of `script`; the init's pid once the script has written /mnt/ready."""
    bundle = rt.bundle(shell_config(rt, script, outdir))
    result = rt.detached("run", "-d", "--bundle", str(bundle), cid)
    assert result.returncode == 0, result.stderr
    poll(lambda: (outdir / "ready").exists(), f"container {cid} to be ready")
    pid: int = rt.state(cid)["pid"]
    return pid


def pids_in_pid_namespace_of(pid: int) -> list[int]:
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return []
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") == ns and alive(int(entry)):
                found.append(int(entry))
        except OSError:
            continue
    return found


# --- help, version, unknown verbs ------------------------------------------------------------------


def test_group_help_lists_every_verb(runtime: Runtime) -> None:
    result = runtime.cmd("--help")
    assert result.returncode == 0, result.stderr
    for verb in VERBS:
        assert re.search(rf"^\s+{verb}\b", result.stdout, re.MULTILINE), verb
    for flag in ("--root", "--log", "--log-format", "--debug", "--version"):
        assert flag in result.stdout


@pytest.mark.parametrize("verb", VERBS)
def test_verb_help_lists_its_flags(runtime: Runtime, host_unchanged: None, verb: str) -> None:
    result = runtime.cmd(verb, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: minirun {verb} ")
    for flag in VERB_FLAGS[verb]:
        assert flag in result.stdout, flag


def test_version_prints_the_version(runtime: Runtime) -> None:
    result = runtime.cmd("--version")
    assert result.returncode == 0, result.stderr
    assert "minirun" in result.stdout and __version__ in result.stdout


def test_unknown_verb_fails(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.cmd("frobnicate", "x")
    assert result.returncode != 0
    assert "frobnicate" in result.stderr
    assert result.stdout == ""


def test_unknown_flag_fails(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.cmd("delete", "--no-such-flag", "x")
    assert result.returncode != 0
    assert "--no-such-flag" in result.stderr


# --- list ------------------------------------------------------------------------------------------


def test_list_shows_containers_as_table_json_and_ids(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    empty = runtime.cmd("list")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert runtime.cmd("list", "--format", "json").json() == []
    assert runtime.cmd("list", "-q").stdout == ""

    bundle = runtime.bundle(shell_config(runtime, "while :; do sleep 0.05; done", tmp_path))
    for cid in ("list-a", "list-b"):
        assert runtime.detached("create", "--bundle", str(bundle), cid).returncode == 0
    assert runtime.cmd("start", "list-b").returncode == 0
    states = {cid: runtime.state(cid) for cid in ("list-a", "list-b")}

    table = runtime.cmd("list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert [row.split() for row in rows] == [
        [cid, str(s["pid"]), s["status"], str(bundle), s["created"], "root"] for cid, s in states.items()]
    assert [s["status"] for s in states.values()] == ["created", "running"]

    as_json = runtime.cmd("list", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert as_json.json() == list(states.values())

    quiet = runtime.cmd("list", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "list-a\nlist-b\n"

    for cid in ("list-a", "list-b"):
        assert runtime.cmd("delete", "--force", cid).returncode == 0
    assert runtime.cmd("list", "-q").stdout == ""


def test_list_of_a_missing_state_root_is_empty(runtime: Runtime, tmp_path: Path) -> None:
    root = tmp_path / "never-made"
    result = runtime.cmd("list", "--format", "json", global_args=("--root", str(root)))
    assert result.returncode == 0, result.stderr
    assert result.json() == []
    assert not root.exists(), "list must not create the state root"


# --- kill ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_args, recorded", [
    ((), "TERM"), (("TERM",), "TERM"), (("SIGTERM",), "TERM"), (("15",), "TERM"),
    (("USR1",), "USR1"), (("sigusr1",), "USR1"), (("SIGHUP",), "HUP"), (("1",), "HUP"),
], ids=["default", "TERM", "SIGTERM", "15", "USR1", "sigusr1", "SIGHUP", "1"])
def test_kill_delivers_the_named_signal(runtime: Runtime, host_unchanged: None, tmp_path: Path,
                                        signal_args: tuple[str, ...], recorded: str) -> None:
    pid = start_detached(runtime, TRAPPING, tmp_path, "sig")
    result = runtime.cmd("kill", "sig", *signal_args)
    assert result.returncode == 0, result.stderr
    signals = tmp_path / "signals"
    poll(lambda: signals.exists() and signals.read_text() != "", "the container to record a signal")
    assert signals.read_text() == f"{recorded}\n"
    assert runtime.state("sig")["status"] == "running", "a handled signal must not stop the container"
    assert runtime.cmd("delete", "--force", "sig").returncode == 0
    assert not alive(pid)


@pytest.mark.parametrize("signal_name", ["KILL", "SIGKILL", "9"])
def test_kill_with_sigkill_stops_the_container(
        runtime: Runtime, host_unchanged: None, tmp_path: Path, signal_name: str) -> None:
    pid = start_detached(runtime, TRAPPING, tmp_path, "victim")
    result = runtime.cmd("kill", "victim", signal_name)
    assert result.returncode == 0, result.stderr
    poll(lambda: runtime.state("victim")["status"] == "stopped", "the container to stop")
    assert not alive(pid)
    assert not (tmp_path / "signals").exists(), "the trapped signals must not have been sent"
    assert runtime.cmd("delete", "victim").returncode == 0


@pytest.mark.parametrize("signal_name", ["NOSUCHSIG", "SIGNOPE", "999"])
def test_kill_with_an_unknown_signal_fails_and_sends_nothing(
        runtime: Runtime, host_unchanged: None, tmp_path: Path, signal_name: str) -> None:
    pid = start_detached(runtime, TRAPPING, tmp_path, "unsignalled")
    result = runtime.cmd("kill", "unsignalled", signal_name)
    assert result.returncode != 0
    assert "signal" in one_line(result.stderr)
    assert runtime.state("unsignalled")["status"] == "running"
    assert alive(pid)
    assert runtime.cmd("delete", "--force", "unsignalled").returncode == 0


def test_kill_all_signals_every_process_of_the_container(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    # The init has no TERM handler, so as pid 1 it ignores TERM: only --all reaches its children,
    # and once they die its `wait` returns and it exits.
    script = "sleep 1000 & sleep 1000 & echo ready > /mnt/ready; wait; echo reaped > /mnt/reaped"
    pid = start_detached(runtime, script, tmp_path, "family")
    poll(lambda: len(pids_in_pid_namespace_of(pid)) == 3, "the init and its two children")
    members = pids_in_pid_namespace_of(pid)

    result = runtime.cmd("kill", "--all", "family", "TERM")
    assert result.returncode == 0, result.stderr
    poll(lambda: runtime.state("family")["status"] == "stopped", "the container to stop")
    assert (tmp_path / "reaped").read_text() == "reaped\n"
    assert not any(alive(p) for p in members)
    assert runtime.cmd("delete", "family").returncode == 0


# --- spec ------------------------------------------------------------------------------------------


def test_spec_writes_a_config_that_run_accepts(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    result = runtime.cmd("spec", "--bundle", str(tmp_path))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["process"]["args"] == ["sh"]
    assert config["root"]["path"] == "rootfs"

    config["root"]["path"] = str(ROOTFS)
    (tmp_path / "config.json").write_text(json.dumps(config))
    # The default process is an interactive-less `sh`: it reads its commands from stdin.
    ran = runtime.cmd("run", "--bundle", str(tmp_path), "from-spec",
                      input="echo hello from $(hostname); exit 5\n")
    assert ran.returncode == 5, ran.stderr
    assert ran.stdout == "hello from minirun\n"
    assert runtime.cmd("list", "-q").stdout == ""


def test_spec_in_the_current_directory_by_default(tmp_path: Path) -> None:
    proc = subprocess.run([str(MINIRUN), "spec"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "config.json").read_text())["ociVersion"]


def test_spec_refuses_to_overwrite(runtime: Runtime, tmp_path: Path) -> None:
    existing = tmp_path / "config.json"
    existing.write_text("mine\n")
    result = runtime.cmd("spec", "--bundle", str(tmp_path))
    assert result.returncode != 0
    message = one_line(result.stderr)
    assert "config.json" in message and "exists" in message
    assert existing.read_text() == "mine\n"


# --- logging ---------------------------------------------------------------------------------------


def test_json_log_ends_with_the_error(runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    log = tmp_path / "minirun.log"
    result = runtime.cmd("state", "not-there", global_args=("--log", str(log), "--log-format", "json"))
    assert result.returncode != 0
    message = one_line(result.stderr)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries
    for entry in entries:
        assert {"level", "msg", "time"} <= entry.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", entry["time"])
    assert entries[-1]["level"] == "error"
    assert entries[-1]["msg"] == message
    assert "not-there" in entries[-1]["msg"]


def test_json_log_of_a_failed_create_ends_with_the_childs_error(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    config = copy.deepcopy(runtime.config)
    config["process"]["args"] = ["nosuchcmd"]
    log = tmp_path / "minirun.log"
    result = runtime.cmd("--log", str(log), "--log-format", "json", "create", "--bundle",
                         str(runtime.bundle(config)), "nocmd")
    assert result.returncode != 0
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["level"] == "error"
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in last["msg"]
    assert last["msg"] == one_line(result.stderr)


def test_text_log_is_logrus_like(runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    log = tmp_path / "minirun.log"
    result = runtime.cmd("delete", "not-there", global_args=("--log", str(log), "--log-format", "text"))
    assert result.returncode != 0
    lines = log.read_text().splitlines()
    assert lines
    for line in lines:
        assert re.fullmatch(r'time="[^"]+" level=(debug|info|warning|error) msg=".*"', line), line
    assert lines[-1].startswith('time="')
    assert " level=error " in lines[-1]
    assert "not-there" in lines[-1]


def test_log_appends_across_commands(runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    log = tmp_path / "minirun.log"
    for cid in ("first-missing", "second-missing"):
        runtime.cmd("state", cid, global_args=("--log", str(log), "--log-format", "json"))
    errors = [json.loads(line)["msg"] for line in log.read_text().splitlines()
              if json.loads(line)["level"] == "error"]
    assert len(errors) == 2
    assert "first-missing" in errors[0] and "second-missing" in errors[1]


def test_debug_is_accepted(runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    log = tmp_path / "minirun.log"
    result = runtime.cmd("--debug", "--log", str(log), "--log-format", "json", "list", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    probe = runtime.cmd("run", "--bundle", str(runtime.bundle()), "debugged", global_args=("--debug",))
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["pid"] == 1


@pytest.mark.parametrize("argv, mentioned", [
    (("state",), "ID"), (("kill",), "ID"), (("frobnicate", "x"), "frobnicate"),
    (("list", "--format", "yaml"), "yaml"),
], ids=["state-without-id", "kill-without-id", "unknown-verb", "bad-choice"])
def test_json_log_records_usage_errors(runtime: Runtime, host_unchanged: None, tmp_path: Path,
                                       argv: tuple[str, ...], mentioned: str) -> None:
    # Container engines read the last error line of the log to tell why a call failed.
    log = tmp_path / "minirun.log"
    result = runtime.cmd(*argv, global_args=("--log", str(log), "--log-format", "json"))
    assert result.returncode != 0
    assert mentioned in result.stderr
    assert log.exists(), "the usage error was not logged"
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["level"] == "error"
    assert mentioned in last["msg"]


def test_every_verb_in_the_command_table_has_working_help(runtime: Runtime) -> None:
    from minirun.cli.table import VERBS as TABLE

    for name, verb in TABLE.items():
        result = runtime.cmd(name, "--help")
        assert result.returncode == 0, (name, result.stderr)
        for opt in verb.options:
            if not opt.hidden:
                assert any(n in result.stdout for n in opt.names), (name, opt.names)


def test_features_prints_the_features_structure(runtime: Runtime) -> None:
    from minirun.features import features

    result = runtime.cmd("features")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == features()
