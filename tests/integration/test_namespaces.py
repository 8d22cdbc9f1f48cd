"""Namespaces: every namespace of the default config is new, and a namespace given by path is joined.

What is compared is observed: the probe's `ns` map (the readlinks of /proc/self/ns/* inside the container)
against the host's own /proc/self/ns/* and against a namespace held open on the host by `unshare`.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Runtime

# The spec's namespace type -> its name under /proc/PID/ns.
PROC_NAME = {"pid": "pid", "mount": "mnt", "uts": "uts", "ipc": "ipc", "network": "net", "cgroup": "cgroup"}
IFF_UP = 0x1
IPC_CREAT, IPC_EXCL, IPC_RMID = 0o1000, 0o2000, 0


def host_ns(name: str, pid: int | str = "self") -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


def without_namespace(config: dict[str, Any], ns_type: str) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != ns_type]
    if ns_type == "uts":
        cfg.pop("hostname", None)  # setting it needs a uts namespace
    return cfg


def with_namespace_path(config: dict[str, Any], ns_type: str, path: str) -> tuple[dict[str, Any], int]:
    """`config` with the `ns_type` namespace joined at `path`; also the entry's index in linux.namespaces."""
    cfg = copy.deepcopy(config)
    entries = cfg["linux"]["namespaces"]
    index = next(i for i, ns in enumerate(entries) if ns["type"] == ns_type)
    entries[index] = {"type": ns_type, "path": path}
    return cfg, index


@contextlib.contextmanager
def namespace_holder(*unshare_flags: str, hostname: str) -> Iterator[int]:
    """A process on the host in new namespaces (always a new uts one, where it sets `hostname`); its pid.

    No --fork: `unshare` unshares and then execs the shell in the same process, so the pid returned is
    the one holding the namespaces, and it is killed and reaped by that pid.
    """
    assert "--uts" in unshare_flags, "the holder sets a hostname: it must have its own uts namespace"
    proc = subprocess.Popen(
        ["unshare", *unshare_flags, "sh", "-c", f"hostname {hostname} && echo ready && exec sleep 600"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def link_flags(ip_link_line: str) -> list[str]:
    """The flags of an `ip -o link` line: `1: lo: <LOOPBACK,UP,LOWER_UP> mtu ...` -> [LOOPBACK, UP, ...]."""
    return ip_link_line.split("<", 1)[1].split(">", 1)[0].split(",")


def assert_failed_cleanly(runtime: Runtime, result: Any, field: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert field in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not runtime.root.exists() or list(runtime.root.iterdir()) == []


# --- new namespaces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ns_type", sorted(PROC_NAME))
def test_requested_namespace_differs_from_the_hosts(runtime: Runtime, host_unchanged: None,
                                                    ns_type: str) -> None:
    name = PROC_NAME[ns_type]
    facts = runtime.probe("facts")
    assert facts["ns"][name].startswith(f"{name}:[")
    assert facts["ns"][name] != host_ns(name)


@pytest.mark.parametrize("ns_type", ["pid", "uts", "ipc", "network", "cgroup"])
def test_namespace_left_out_of_the_config_is_the_hosts(runtime: Runtime, host_unchanged: None,
                                                       ns_type: str) -> None:
    name = PROC_NAME[ns_type]
    facts = runtime.probe("facts", config=without_namespace(runtime.config, ns_type))
    assert facts["ns"][name] == host_ns(name)


def test_pid_namespace_makes_the_process_pid_1(runtime: Runtime, host_unchanged: None) -> None:
    facts = runtime.probe("facts")
    assert facts["pid"] == 1
    assert facts["ppid"] == 0
    assert facts["ns"]["pid_for_children"] == facts["ns"]["pid"]


def test_pid_namespace_hides_host_processes(runtime: Runtime, host_unchanged: None) -> None:
    # The glob is expanded by the shell itself (pid 1): no other process exists in the namespace.
    result = runtime.sh("echo /proc/[0-9]*")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/proc/1"]


def test_uts_namespace_sets_hostname_and_domainname(runtime: Runtime, host_unchanged: None) -> None:
    host_name, host_uname = socket.gethostname(), os.uname()
    cfg = copy.deepcopy(runtime.config)
    cfg["hostname"] = "ns-test-host"
    cfg["domainname"] = "ns-test.example"
    facts = runtime.probe("facts", config=cfg)
    assert facts["hostname"] == "ns-test-host"
    assert facts["domainname"] == "ns-test.example"
    assert socket.gethostname() == host_name
    assert os.uname() == host_uname


def test_hostname_seen_by_the_shell_is_the_configured_one(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["hostname"] = "shell-sees-me"
    result = runtime.sh("hostname; cat /proc/sys/kernel/hostname", cfg)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["shell-sees-me", "shell-sees-me"]


def test_network_namespace_has_only_loopback(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.sh("ls /sys/class/net; echo --; tail -n +3 /proc/net/dev")
    assert result.returncode == 0, result.stderr
    sysfs, proc = result.stdout.split("--\n")
    assert sysfs.split() == ["lo"]
    assert [line.split(":")[0].strip() for line in proc.splitlines()] == ["lo"]


def test_network_namespace_brings_loopback_up(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.sh("cat /sys/class/net/lo/flags; ip -o link show lo")
    assert result.returncode == 0, result.stderr
    flags, link = result.stdout.splitlines()
    assert int(flags, 16) & IFF_UP
    assert "UP" in link_flags(link)


def test_ipc_namespace_hides_host_ipc_objects(runtime: Runtime, host_unchanged: None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x6D720000 | secrets.randbelow(0xFFFF)
    shmid = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), IPC_CREAT | IPC_EXCL | 0o600)
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    try:
        with open("/proc/sysvipc/shm") as f:
            host_rows = [line.split()[:2] for line in f.read().splitlines()[1:]]
        assert [str(key), str(shmid)] in host_rows  # the object really exists on the host
        result = runtime.sh("cat /proc/sysvipc/shm")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split()[:2] == ["key", "shmid"]
        assert lines[1:] == []
    finally:
        assert libc.shmctl(ctypes.c_int(shmid), IPC_RMID, None) == 0


def test_cgroup_namespace_roots_every_hierarchy_at_the_container(runtime: Runtime,
                                                                 host_unchanged: None) -> None:
    facts = runtime.probe("facts")
    assert facts["cgroup"], facts
    assert all(line.rsplit(":", 1)[1] == "/" for line in facts["cgroup"]), facts["cgroup"]


# --- joining by path --------------------------------------------------------------------------------


def test_joins_uts_namespace_by_path(runtime: Runtime, host_unchanged: None) -> None:
    host_name = socket.gethostname()
    with namespace_holder("--uts", hostname="joined-holder") as pid:
        cfg, _ = with_namespace_path(runtime.config, "uts", f"/proc/{pid}/ns/uts")
        cfg.pop("hostname")  # otherwise the container would rename the holder's namespace
        facts = runtime.probe("facts", config=cfg)
        assert facts["ns"]["uts"] == host_ns("uts", pid)
        assert facts["ns"]["uts"] != host_ns("uts")
        assert facts["hostname"] == "joined-holder"
    assert socket.gethostname() == host_name


@pytest.mark.parametrize("ns_type", ["ipc", "network"])
def test_joins_namespace_by_path(runtime: Runtime, host_unchanged: None, ns_type: str) -> None:
    name = PROC_NAME[ns_type]
    with namespace_holder("--uts", "--ipc", "--net", hostname="joined-holder") as pid:
        cfg, _ = with_namespace_path(runtime.config, ns_type, f"/proc/{pid}/ns/{name}")
        facts = runtime.probe("facts", config=cfg)
        assert facts["ns"][name] == host_ns(name, pid)
        assert facts["ns"][name] != host_ns(name)
        # The other namespaces are still new ones: the holder's uts is not used.
        assert facts["ns"]["uts"] != host_ns("uts", pid)
        assert facts["hostname"] == "minirun"


def test_joined_network_namespace_is_left_as_its_holder_made_it(runtime: Runtime,
                                                                 host_unchanged: None) -> None:
    with namespace_holder("--uts", "--net", hostname="joined-holder") as pid:
        holder = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link", "show", "lo"],
                                capture_output=True, text=True, check=True)
        assert "UP" not in link_flags(holder.stdout)  # a fresh namespace's `lo` is down
        cfg, _ = with_namespace_path(runtime.config, "network", f"/proc/{pid}/ns/net")
        # Bringing `lo` up is for new namespaces only: a joined one is not the container's to change.
        result = runtime.sh("cat /sys/class/net/lo/flags; ip -o link show lo", cfg)
        assert result.returncode == 0, result.stderr
        flags, link = result.stdout.splitlines()
        assert not int(flags, 16) & IFF_UP
        assert "UP" not in link_flags(link)
        holder = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-o", "link", "show", "lo"],
                                capture_output=True, text=True, check=True)
        assert "UP" not in link_flags(holder.stdout)


@pytest.mark.parametrize(("ns_type", "path"), [
    ("uts", "/proc/self/ns/net"),
    ("ipc", "/proc/self/ns/uts"),
    ("network", "/proc/self/ns/mnt"),
    ("mount", "/proc/self/ns/pid"),
])
def test_namespace_path_of_another_type_is_refused(runtime: Runtime, host_unchanged: None, ns_type: str,
                                                   path: str) -> None:
    cfg, index = with_namespace_path(runtime.config, ns_type, path)
    result = runtime.run(cfg)
    assert_failed_cleanly(runtime, result, f"linux.namespaces[{index}].path")
    assert "namespace" in result.stderr


@pytest.mark.parametrize("path", ["/nonexistent-minirun-test/ns/uts", "/proc/999999999/ns/uts"])
def test_namespace_path_that_does_not_exist_is_refused(runtime: Runtime, host_unchanged: None,
                                                      path: str) -> None:
    cfg, index = with_namespace_path(runtime.config, "uts", path)
    result = runtime.run(cfg)
    assert_failed_cleanly(runtime, result, f"linux.namespaces[{index}].path")
    assert path in result.stderr


def test_namespace_path_that_is_not_a_namespace_file_is_refused(runtime: Runtime,
                                                                 host_unchanged: None) -> None:
    cfg, index = with_namespace_path(runtime.config, "uts", "/etc/passwd")
    result = runtime.run(cfg)
    assert_failed_cleanly(runtime, result, f"linux.namespaces[{index}].path")
