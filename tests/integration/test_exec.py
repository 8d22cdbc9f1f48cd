"""`minirun exec`: a new process in a running container, observed from inside with the probe."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import MINIRUN, Runtime, alive, poll


@pytest.fixture
def box(runtime: Runtime) -> Iterator[dict[str, Any]]:
    """A running container (a shell sleeping in a loop) and its init's facts, seen from inside."""
    config = runtime.shell_config("exec /usr/bin/probe hold 600")
    config["process"]["env"].append("FROM_CONFIG=1")
    bundle = runtime.bundle(config)
    result = runtime.detached("run", "-d", "--bundle", str(bundle), "box")
    assert result.returncode == 0, result.stderr
    pid = int(runtime.state("box")["pid"])
    yield {"id": "box", "pid": pid}
    runtime.cmd("delete", "--force", "box")


def exec_probe(runtime: Runtime, *args: str, flags: tuple[str, ...] = (), **kw: Any) -> Any:
    result = runtime.cmd("exec", *flags, "box", "/usr/bin/probe", *args, **kw)
    assert result.returncode == 0, result.stderr
    return result.json()


def ns_of(pid: int) -> dict[str, str]:
    return {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in ("mnt", "uts", "ipc", "net", "pid", "cgroup")}


def test_exec_joins_every_namespace_and_the_cgroup(runtime: Runtime, box: dict[str, Any]) -> None:
    facts = exec_probe(runtime, "facts")
    init = ns_of(box["pid"])
    assert {k: v for k, v in facts["ns"].items() if k in init} == init
    # In the cgroup namespace, the same cgroup as the init (its pid 1).
    assert facts["cgroup"] == runtime.cmd("exec", "box", "/bin/cat", "/proc/1/cgroup").stdout.splitlines()
    assert facts["pid"] > 1 and facts["hostname"] == "minirun"


def test_exec_takes_the_container_process_env_user_and_cwd(runtime: Runtime, box: dict[str, Any]) -> None:
    facts = exec_probe(runtime, "facts")
    assert "FROM_CONFIG=1" in facts["env"] and facts["cwd"] == "/" and facts["uid"] == 0
    assert facts["fds"].keys() == {"0", "1", "2"}  # no host fd reaches the process


def test_exec_flags_are_observed_inside(runtime: Runtime, box: dict[str, Any]) -> None:
    flags = ("-e", "FROM_CONFIG=2", "--env", "NEW=x", "--cwd", "/etc", "-u", "1000:1001",
             "--additional-gids", "7", "--cap", "CAP_NET_RAW", "--no-new-privs")
    facts = exec_probe(runtime, "facts", flags=flags)
    assert "FROM_CONFIG=2" in facts["env"] and "FROM_CONFIG=1" not in facts["env"] and "NEW=x" in facts["env"]
    assert (facts["uid"], facts["gid"], facts["groups"]) == (1000, 1001, [7])
    assert facts["cwd"] == "/etc"
    assert int(facts["caps"]["effective"], 16) & (1 << 13)  # CAP_NET_RAW, kept through ambient
    assert facts["no_new_privs"] == 1


def test_exec_process_file(runtime: Runtime, box: dict[str, Any], tmp_path: Any) -> None:
    process = {"args": ["/usr/bin/probe", "facts"], "cwd": "/", "env": ["ONLY=this"], "user": {"uid": 5, "gid": 6}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    facts = exec_probe(runtime, flags=("--process", str(tmp_path / "process.json")))
    assert facts["env"][:1] == ["ONLY=this"] and (facts["uid"], facts["gid"]) == (5, 6)


def test_exec_returns_the_exit_status(runtime: Runtime, box: dict[str, Any]) -> None:
    assert runtime.cmd("exec", "box", "sh", "-c", "exit 9").returncode == 9
    assert runtime.cmd("exec", "box", "sh", "-c", "kill -USR1 $$").returncode == 128 + signal.SIGUSR1


def test_missing_and_non_executable_programs_keep_the_container_running(
        runtime: Runtime, box: dict[str, Any]) -> None:
    missing = runtime.cmd("exec", "box", "no-such-program")
    assert missing.returncode == 127
    assert 'exec: "no-such-program": executable file not found in $PATH' in missing.stderr
    denied = runtime.cmd("exec", "box", "/etc/passwd")
    assert denied.returncode == 126 and "permission denied" in denied.stderr
    assert runtime.status("box") == "running" and alive(box["pid"])


def test_cwd_cannot_leave_the_container_root(runtime: Runtime, box: dict[str, Any]) -> None:
    facts = exec_probe(runtime, "facts", flags=("--cwd", "/../../../.."))
    assert facts["cwd"] == "/"
    assert runtime.cmd("exec", "box", "/bin/ls", "/work").returncode != 0  # the host's tree is not there


def test_exec_detached_writes_the_pid_file(runtime: Runtime, box: dict[str, Any], tmp_path: Any) -> None:
    pid_file = tmp_path / "exec.pid"
    result = runtime.detached("exec", "-d", "--pid-file", str(pid_file), "box", "/usr/bin/probe", "hold", "600")
    assert result.returncode == 0, result.stderr
    pid = int(pid_file.read_text())
    assert alive(pid) and os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{box['pid']}/ns/pid")
    with open(f"/proc/{pid}/cgroup") as f, open(f"/proc/{box['pid']}/cgroup") as g:
        assert f.read() == g.read()
    assert pid in json.loads(runtime.cmd("ps", "--format", "json", "box").stdout)


def test_preserve_fds_passes_fds_and_sets_listen_fds(runtime: Runtime, box: dict[str, Any]) -> None:
    proc = runtime.with_pipe_as_fd3("exec", "--preserve-fds", "1", "box", "/usr/bin/probe", "facts")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert sorted(facts["fds"]) == ["0", "1", "2", "3"] and facts["fds"]["3"].startswith("pipe:")
    assert "LISTEN_FDS=1" in facts["env"] and f"LISTEN_PID={facts['pid']}" in facts["env"]


def test_exec_into_paused_or_stopped_containers_fails_clearly(runtime: Runtime, box: dict[str, Any]) -> None:
    assert runtime.cmd("pause", "box").returncode == 0
    paused = runtime.cmd("exec", "box", "true")
    assert paused.returncode != 0 and "paused" in paused.stderr
    detached = runtime.detached("exec", "-d", "--ignore-paused", "box", "/usr/bin/probe", "hold", "600")
    assert detached.returncode == 0, detached.stderr
    assert runtime.cmd("resume", "box").returncode == 0
    poll(lambda: len(json.loads(runtime.cmd("ps", "--format", "json", "box").stdout)) == 2, "the exec'd process")
    assert runtime.cmd("kill", "box", "KILL").returncode == 0
    runtime.wait_status("box", "stopped")
    stopped = runtime.cmd("exec", "box", "true")
    assert stopped.returncode != 0 and "stopped" in stopped.stderr and len(stopped.stderr.splitlines()) == 1


def test_exec_forwards_signals(runtime: Runtime, box: dict[str, Any]) -> None:
    proc = subprocess.Popen([str(MINIRUN), "--root", str(runtime.root), "exec", "box", "sh", "-c",
                             "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 42
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unknown_container_and_bad_flags_are_refused(runtime: Runtime, box: dict[str, Any]) -> None:
    for args, words in ((("nope", "true"), "nope"), (("-u", "root", "box", "true"), "--user"),
                        (("-e", "NOEQUALS", "box", "true"), "--env"),
                        (("--cap", "CAP_NOPE", "box", "true"), "CAP_NOPE"),
                        (("-d", "-t", "box", "true"), "console-socket")):
        result = runtime.cmd("exec", *args)
        assert result.returncode != 0 and words in result.stderr and len(result.stderr.splitlines()) == 1, result
    assert runtime.status("box") == "running"


@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_exec_is_bound_by_the_container_seccomp_filter_and_personality(
        runtime: Runtime, no_new_privileges: bool) -> None:
    config = runtime.shell_config("exec /usr/bin/probe hold 600")
    config["process"]["noNewPrivileges"] = no_new_privileges
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV}]}
    config["linux"]["personality"] = {"domain": "LINUX32"}
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    result = runtime.detached("run", "-d", "--bundle", str(runtime.bundle(config)), "filtered")
    assert result.returncode == 0, result.stderr
    answer = runtime.cmd("exec", "filtered", "/usr/bin/probe", "syscall-errno", "mkdir")
    assert answer.returncode == 0, answer.stderr
    assert answer.json()["errno"] == errno.EXDEV
    assert runtime.cmd("exec", "filtered", "uname", "-m").stdout.strip() == "i686"


def test_exec_joins_the_user_namespace(runtime: Runtime) -> None:
    config = runtime.shell_config("exec /usr/bin/probe hold 600")
    config["linux"]["namespaces"].append({"type": "user"})
    for key in ("uidMappings", "gidMappings"):
        config["linux"][key] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    result = runtime.detached("run", "-d", "--bundle", str(runtime.bundle(config)), "mapped")
    assert result.returncode == 0, result.stderr
    answer = runtime.cmd("exec", "-u", "1000", "mapped", "/usr/bin/probe", "read", "/proc/self/uid_map")
    assert answer.returncode == 0, answer.stderr
    assert answer.json()["data"].split() == ["0", "100000", "65536"]
    pid_file = runtime.bundles / "exec.pid"
    detached = runtime.detached("exec", "-d", "-u", "1000", "--pid-file", str(pid_file), "mapped",
                                "/usr/bin/probe", "hold", "60")
    assert detached.returncode == 0, detached.stderr
    with open(f"/proc/{int(pid_file.read_text())}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert uids == ["101000"] * 4  # container uid 1000, seen from the host
