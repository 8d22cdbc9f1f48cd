"""User namespaces: linux.uidMappings/gidMappings, joining one by path, id-mapped bind mounts.

The container's root is host id 100000 (65536 ids mapped). What is checked is observed: the maps and
ids inside through the probe, the owners of files on the host, the owner of the other namespaces.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Runtime, poll

BASE = 100000
WIDE = [{"containerID": 0, "hostID": BASE, "size": 65536}]
NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1), <linux/nsfs.h>


def userns_config(runtime: Runtime, uids: Any = WIDE, gids: Any = WIDE) -> dict[str, Any]:
    cfg = copy.deepcopy(runtime.config)
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = copy.deepcopy(uids)
    cfg["linux"]["gidMappings"] = copy.deepcopy(gids)
    return cfg


def with_args(cfg: dict[str, Any], *args: str) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    cfg["process"]["args"] = list(args)
    return cfg


def bind(cfg: dict[str, Any], source: Path, destination: str, mapped: Any = None) -> dict[str, Any]:
    mount: dict[str, Any] = {"destination": destination, "type": "bind", "source": str(source),
                             "options": ["rbind", "rw"]}
    if mapped is not None:
        mount["uidMappings"] = copy.deepcopy(mapped)
        mount["gidMappings"] = copy.deepcopy(mapped)
    cfg["mounts"].append(mount)
    return cfg


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A host directory anyone may write to: the container's root is an unprivileged host user."""
    d = tmp_path / "minirun-userns"
    d.mkdir()
    d.chmod(0o777)
    return d


def start_detached(runtime: Runtime, cfg: dict[str, Any], cid: str) -> int:
    result = runtime.detached("run", "-d", "--bundle", str(runtime.bundle(cfg)), cid)
    assert result.returncode == 0, result.stderr
    runtime.wait_status(cid, "running")
    return int(runtime.state(cid)["pid"])


def test_the_maps_and_root_inside(runtime: Runtime, host_unchanged: None) -> None:
    cfg = userns_config(runtime, gids=[{"containerID": 0, "hostID": 200000, "size": 1000},
                                       {"containerID": 1000, "hostID": 300000, "size": 10}])
    uid_map = runtime.probe("read", "/proc/self/uid_map", config=cfg)["data"]
    gid_map = runtime.probe("read", "/proc/self/gid_map", config=cfg)["data"]
    assert [line.split() for line in uid_map.splitlines()] == [["0", "100000", "65536"]]
    assert [line.split() for line in gid_map.splitlines()] == [["0", "200000", "1000"], ["1000", "300000", "10"]]
    facts = runtime.probe("facts", config=cfg)
    assert (facts["uid"], facts["gid"], facts["euid"], facts["egid"]) == (0, 0, 0, 0)
    assert facts["ns"]["user"] != os.readlink("/proc/self/ns/user")
    # setgroups stays allowed: root wrote the gid map, no "deny" was needed.
    assert runtime.probe("read", "/proc/self/setgroups", config=cfg)["data"].strip() == "allow"


def test_a_non_root_process_user_is_mapped_and_can_open_the_exec_fifo(runtime: Runtime,
                                                                      host_unchanged: None) -> None:
    cfg = userns_config(runtime)
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5]}
    facts = runtime.probe("facts", config=cfg)  # `run` is create + start: the fifo was opened as 1000
    assert (facts["uid"], facts["gid"]) == (1000, 1000)
    assert 5 in facts["groups"]


def test_a_file_the_container_creates_is_owned_by_the_mapped_host_ids(runtime: Runtime, host_unchanged: None,
                                                                     scratch: Path) -> None:
    cfg = bind(userns_config(runtime), scratch, "/mnt")
    assert runtime.probe("write", "/mnt/root-file", "r", config=cfg)["ok"] is True
    st = os.stat(scratch / "root-file")
    assert (st.st_uid, st.st_gid) == (BASE, BASE)
    cfg["process"]["user"] = {"uid": 1000, "gid": 1001}
    assert runtime.probe("write", "/mnt/user-file", "u", config=cfg)["ok"] is True
    st = os.stat(scratch / "user-file")
    assert (st.st_uid, st.st_gid) == (BASE + 1000, BASE + 1001)


def test_host_files_show_as_unmapped_inside(runtime: Runtime, host_unchanged: None, scratch: Path) -> None:
    (scratch / "hosts").write_text("x")  # owned by host root, which the container does not map
    cfg = bind(userns_config(runtime), scratch, "/mnt")
    st = runtime.probe("stat", "/mnt/hosts", config=cfg)
    assert (st["uid"], st["gid"]) == (65534, 65534)
    assert runtime.probe("write", "/mnt/hosts", "y", config=cfg)["ok"] is False  # root inside is not root here
    assert (scratch / "hosts").read_text() == "x"


def test_proc_sysfs_tmpfs_devpts_mqueue_and_devices_work(runtime: Runtime, host_unchanged: None) -> None:
    script = (
        "set -e; grep -q '^Uid:.0.0.0.0' /proc/self/status; test -e /proc/1/status; "
        "ls /sys/class/net | grep -qx lo; "
        "echo x > /dev/shm/f; test \"$(cat /dev/shm/f)\" = x; stat -c %u /dev/shm/f | grep -qx 0; "
        "test -c /dev/pts/ptmx; test -d /dev/mqueue; "
        "echo discard > /dev/null; head -c 4 /dev/urandom | wc -c | grep -qx 4; "
        "awk '$5 == \"/proc\" || $5 == \"/sys\" || $5 == \"/dev\" || $5 == \"/dev/pts\" || "
        "$5 == \"/dev/mqueue\" || $5 == \"/dev/shm\" {print $5, $(NF-2)}' /proc/self/mountinfo | sort"
    )
    result = runtime.run(with_args(userns_config(runtime), "/bin/sh", "-c", script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:6] == ["/dev tmpfs", "/dev/mqueue mqueue", "/dev/pts devpts",
                                             "/dev/shm tmpfs", "/proc proc", "/sys sysfs"]


def test_the_other_namespaces_are_owned_by_the_new_user_namespace(runtime: Runtime) -> None:
    pid = start_detached(runtime, with_args(userns_config(runtime), "/usr/bin/probe", "hold", "60"), "minirun-owner")
    user_ino = os.stat(f"/proc/{pid}/ns/user").st_ino
    assert user_ino != os.stat("/proc/self/ns/user").st_ino
    for name in ("net", "mnt", "pid", "ipc", "uts", "cgroup"):
        fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY)
        try:
            owner = fcntl.ioctl(fd, NS_GET_USERNS)
            try:
                assert os.fstat(owner).st_ino == user_ino, name
            finally:
                os.close(owner)
        finally:
            os.close(fd)
    assert runtime.cmd("kill", "minirun-owner", "KILL").returncode == 0
    runtime.wait_status("minirun-owner", "stopped")
    assert runtime.cmd("delete", "minirun-owner").returncode == 0
    poll(lambda: not os.path.exists(f"/proc/{pid}"), "the container's init to be gone")


def test_joining_the_user_namespace_of_another_container_by_path(runtime: Runtime, host_unchanged: None) -> None:
    holder = start_detached(runtime, with_args(userns_config(runtime), "/usr/bin/probe", "hold", "60"),
                            "minirun-holder")
    cfg = copy.deepcopy(runtime.config)
    cfg["linux"]["namespaces"].append({"type": "user", "path": f"/proc/{holder}/ns/user"})
    facts = runtime.probe("facts", config=cfg)
    assert facts["ns"]["user"] == os.readlink(f"/proc/{holder}/ns/user")
    assert facts["uid"] == 0
    uid_map = runtime.probe("read", "/proc/self/uid_map", config=cfg)["data"]
    assert uid_map.split() == ["0", "100000", "65536"]
    # Its new network namespace belongs to the joined user namespace: sysfs could be mounted.
    assert runtime.probe("stat", "/sys/class/net/lo", config=cfg)["ok"] is True
    assert runtime.cmd("delete", "--force", "minirun-holder").returncode == 0


def test_state_kill_and_delete_of_a_container_with_a_user_namespace(runtime: Runtime, host_unchanged: None) -> None:
    pid = start_detached(runtime, with_args(userns_config(runtime), "/usr/bin/probe", "hold", "60"), "minirun-life")
    state = runtime.state("minirun-life")
    assert (state["status"], state["pid"]) == ("running", pid)
    with open(f"/proc/{pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert uids == [str(BASE)] * 4  # as the host sees the container's root
    assert runtime.cmd("kill", "minirun-life", "KILL").returncode == 0  # the probe as pid 1 ignores TERM
    runtime.wait_status("minirun-life", "stopped")
    assert runtime.cmd("delete", "minirun-life").returncode == 0


# --- id-mapped bind mounts ---------------------------------------------------------------------------


def owned_files(scratch: Path) -> Path:
    src = scratch / "src"
    src.mkdir()
    for name, owner in (("by-root", 0), ("by-1000", 1000)):
        (src / name).write_text(name)
        os.chown(src / name, owner, owner + 1)
    return src


def test_an_id_mapped_bind_mount_shows_host_files_with_mapped_owners(runtime: Runtime, host_unchanged: None,
                                                                    scratch: Path) -> None:
    src = owned_files(scratch)
    # Mount points that exist in the rootfs: the container's root may not create any in it.
    cfg = bind(bind(userns_config(runtime), src, "/mnt", mapped=WIDE), src, "/run")
    cfg = with_args(cfg, "/bin/sh", "-c", "stat -c '%n %u %g' /mnt/* /run/* && touch /mnt/new")
    result = runtime.run(cfg)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "/mnt/by-1000 1000 1001", "/mnt/by-root 0 1", "/run/by-1000 65534 65534", "/run/by-root 65534 65534"]
    # Written through the mapped mount by the container's root: host root's on disk, both maps undone.
    st = os.stat(src / "new")
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_an_id_mapped_bind_mount_without_a_user_namespace(runtime: Runtime, host_unchanged: None,
                                                         scratch: Path) -> None:
    src = owned_files(scratch)
    cfg = bind(copy.deepcopy(runtime.config), src, "/mnt", mapped=[{"containerID": 0, "hostID": 5000, "size": 10000}])
    assert runtime.probe("stat", "/mnt/by-1000", config=cfg)["uid"] == 6000
    assert runtime.probe("stat", "/mnt/by-root", config=cfg)["gid"] == 5001


def test_an_id_mapped_mount_the_filesystem_cannot_take_fails_cleanly(runtime: Runtime, host_unchanged: None) -> None:
    cfg = userns_config(runtime)
    cfg["mounts"].append({"destination": "/mnt", "type": "bind", "source": "/proc/sys", "options": ["bind"],
                          "uidMappings": WIDE, "gidMappings": WIDE})
    result = runtime.run(cfg, cid="minirun-idmap-proc")
    assert result.returncode != 0
    assert "mounts[7].uidMappings: id-mapped mounts are not supported by proc on this kernel" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- refused configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["linux"]["uidMappings"].append({"containerID": 10, "hostID": 1, "size": 5}),
     "linux.uidMappings[1]: overlaps linux.uidMappings[0] (container ids)"),
    (lambda c: c["linux"].pop("gidMappings"), "linux.namespaces[6].type: a new user namespace needs linux.gidMappings"),
    (lambda c: c["process"].update(user={"uid": 70000, "gid": 0}), "process.user.uid: 70000 is not mapped"),
    (lambda c: c["linux"]["namespaces"].pop(), "linux.uidMappings: needs a new user namespace"),
])
def test_refused_configs_leave_nothing_behind(runtime: Runtime, host_unchanged: None, change: Any,
                                              message: str) -> None:
    cfg = userns_config(runtime)
    change(cfg)
    result = runtime.run(cfg, cid="minirun-refused")
    assert result.returncode != 0
    assert result.stderr.strip() == f"config.json: {message}" or message in result.stderr, result.stderr
    assert not (runtime.root / "minirun-refused").exists()


def test_default_spec_still_has_no_user_namespace(runtime: Runtime) -> None:
    result = runtime.cmd("spec", "--bundle", str(runtime.bundles))
    assert result.returncode == 0, result.stderr
    config = json.loads((runtime.bundles / "config.json").read_text())
    assert "user" not in [ns["type"] for ns in config["linux"]["namespaces"]]
    assert "uidMappings" not in config["linux"]
