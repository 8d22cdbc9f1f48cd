"""The root filesystem: pivot_root (or MS_MOVE + chroot), root.readonly, a relative root.path,
linux.rootfsPropagation, maskedPaths and readonlyPaths, as the container observes them.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINIRUN, ROOTFS, Runtime, mountinfo_lines, processes_rooted_at
from tests.integration.test_mounts import (
    MountEntry,
    host_root_of,
    host_tmpfs,
    parse_mountinfo,
    rootfs_copy_in,
    scratch_dir,
    top_mount,
    tree,
    with_mounts,
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with scratch_dir("rootfs") as top:
        yield top


def with_root(config: dict[str, Any], path: str | Path, readonly: bool | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    cfg["root"]["path"] = str(path)
    if readonly is not None:
        cfg["root"]["readonly"] = readonly
    return cfg


def propagation_of(entry: MountEntry) -> set[str]:
    return {o.split(":")[0] for o in entry.optional}


def host_peer_group(path: Path) -> str:
    """The `shared:N` id of the host mount at `path`."""
    entry = top_mount(parse_mountinfo(mountinfo_lines()), str(path))
    groups = [o.split(":")[1] for o in entry.optional if o.startswith("shared:")]
    assert groups, f"{path} is not a shared mount on the host: {entry.optional}"
    return groups[0]


def config_mount_points(config: dict[str, Any]) -> list[str]:
    linux = config["linux"]
    points: list[str] = [m["destination"] for m in config["mounts"]]
    return points + list(linux["maskedPaths"]) + list(linux["readonlyPaths"])


# --- pivot_root -------------------------------------------------------------------------------------


def test_pivot_root_hides_the_host_filesystem(runtime: Runtime, host_unchanged: None) -> None:
    # What the host has and the rootfs has not must be out of reach.
    paths = [p for p in ("/work/main", "/root/.pyenv", "/usr/bin/python3", str(ROOTFS))
             if os.path.lexists(p) and not os.path.lexists(ROOTFS / p.lstrip("/"))]
    assert "/work/main" in paths
    for path in paths:
        answer = runtime.probe("stat", path)
        assert (answer["ok"], answer["errno"]) == (False, errno.ENOENT), path
    result = runtime.sh("ls -A /")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(os.listdir(ROOTFS))


def test_root_is_the_rootfs_directory(runtime: Runtime, host_unchanged: None) -> None:
    st, want = runtime.probe("stat", "/"), os.stat(ROOTFS)
    assert (st["ino"], st["dev_major"], st["dev_minor"]) == (want.st_ino, os.major(want.st_dev),
                                                             os.minor(want.st_dev))


def test_mountinfo_root_is_the_rootfs_and_the_old_root_is_gone(runtime: Runtime,
                                                                host_unchanged: None) -> None:
    entries = parse_mountinfo(runtime.probe("facts")["mountinfo"])
    roots = [e for e in entries if e.point == "/"]
    assert len(roots) == 1, roots
    assert roots[0].root == host_root_of(ROOTFS)
    # Every other mount is one the config asked for (or one inside it): none of the host's is left.
    wanted = config_mount_points(runtime.config)
    for e in entries:
        assert e.point == "/" or any(e.point == w or e.point.startswith(w + "/") for w in wanted), e
    assert all(e.parent_id == roots[0].mount_id for e in entries if e.point in ("/proc", "/dev", "/sys"))
    # The host's own mounts (those it has beyond what the config mounts) are not there.
    host_only = {e.point for e in parse_mountinfo(mountinfo_lines()) if e.point != "/"
                 and not any(e.point == w or e.point.startswith(w + "/") for w in wanted)}
    assert host_only
    assert not host_only & {e.point for e in entries}


def test_no_pivot_moves_the_rootfs_and_chroots(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["args"] = ["/usr/bin/probe", "facts"]
    result = runtime.run(cfg, "--no-pivot")
    assert result.returncode == 0, result.stderr
    entries = parse_mountinfo(result.json()["mountinfo"])
    roots = [e for e in entries if e.point == "/"]
    assert len(roots) == 1
    assert roots[0].root == host_root_of(ROOTFS)
    assert top_mount(entries, "/proc").fstype == "proc"
    cfg["process"]["args"] = ["/usr/bin/probe", "stat", "/"]
    st, want = runtime.run(cfg, "--no-pivot").json(), os.stat(ROOTFS)
    assert (st["ino"], st["dev_major"], st["dev_minor"]) == (want.st_ino, os.major(want.st_dev),
                                                             os.minor(want.st_dev))
    cfg["process"]["args"] = ["/usr/bin/probe", "stat", "/work/main"]
    answer = runtime.run(cfg, "--no-pivot").json()
    assert (answer["ok"], answer["errno"]) == (False, errno.ENOENT)


# --- root.readonly ----------------------------------------------------------------------------------


def test_readonly_root_refuses_writes(runtime: Runtime, host_unchanged: None) -> None:
    assert runtime.config["root"]["readonly"] is True
    entries = parse_mountinfo(runtime.probe("facts")["mountinfo"])
    assert "ro" in top_mount(entries, "/").options
    for path in ("/tmp/new-file", "/etc/passwd", "/new-file"):
        answer = runtime.probe("write", path, "x")
        assert (answer["ok"], answer["errno"]) == (False, errno.EROFS), path
    # The mounts on top of the root stay writable.
    assert runtime.probe("write", "/dev/shm/new-file", "x") == {"ok": True}


def test_writable_root_takes_writes(runtime: Runtime, host_unchanged: None, scratch: Path) -> None:
    with rootfs_copy_in(scratch) as root:
        cfg = with_root(runtime.config, root, readonly=False)
        entries = parse_mountinfo(runtime.probe("facts", config=cfg)["mountinfo"])
        assert "rw" in top_mount(entries, "/").options
        assert runtime.probe("write", "/tmp/new-file", "written inside", config=cfg) == {"ok": True}
        assert (root / "tmp" / "new-file").read_text() == "written inside"


# --- root.path --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "copy"])
def test_relative_root_path_is_taken_from_the_bundle(runtime: Runtime, host_unchanged: None,
                                                     kind: str) -> None:
    cfg = with_root(runtime.config, "rootfs")
    cfg["process"]["args"] = ["/usr/bin/probe", "stat", "/"]
    bundle = runtime.bundle(cfg)
    if kind == "symlink":
        (bundle / "rootfs").symlink_to(ROOTFS)
    else:
        subprocess.run(["cp", "-a", str(ROOTFS), str(bundle / "rootfs")], check=True)
    try:
        result = runtime.cmd("run", "--bundle", str(bundle), f"minirun-test-relroot-{kind}")
        assert result.returncode == 0, result.stderr
        st, want = result.json(), os.stat(bundle / "rootfs")
        assert (st["ino"], st["dev_major"], st["dev_minor"]) == (want.st_ino, os.major(want.st_dev),
                                                                 os.minor(want.st_dev))
    finally:
        assert processes_rooted_at(bundle / "rootfs") == []


def test_relative_root_path_resolved_from_the_bundle_not_the_cwd(runtime: Runtime, host_unchanged: None,
                                                                 scratch: Path) -> None:
    cfg = with_root(runtime.config, "nested/../rootfs")
    cfg["process"]["args"] = ["/usr/bin/probe", "stat", "/"]
    bundle = runtime.bundle(cfg)
    (bundle / "nested").mkdir()
    (bundle / "rootfs").symlink_to(ROOTFS)
    (scratch / "rootfs").mkdir()  # a decoy where a cwd-relative lookup would land
    argv = [str(MINIRUN), "--root", str(runtime.root), "run", "--bundle", str(bundle),
            "minirun-test-relroot-cwd"]
    proc = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["ino"] == os.stat(ROOTFS).st_ino


# --- linux.rootfsPropagation ------------------------------------------------------------------------


@pytest.mark.parametrize(("propagation", "expected"), [
    ("private", set()),
    ("rprivate", set()),
    ("shared", {"shared"}),
    ("rshared", {"shared"}),
    ("unbindable", {"unbindable"}),
    ("runbindable", {"unbindable"}),
    # On a host whose mounts are private, a slave has no master and shows as private.
    ("slave", set()),
    ("rslave", set()),
])
def test_rootfs_propagation_is_applied_to_root(runtime: Runtime, host_unchanged: None, propagation: str,
                                               expected: set[str]) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["linux"]["rootfsPropagation"] = propagation
    entries = parse_mountinfo(runtime.probe("facts", config=cfg)["mountinfo"])
    assert propagation_of(top_mount(entries, "/")) == expected


def test_shared_root_propagation_is_new_to_the_container(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["linux"]["rootfsPropagation"] = "shared"
    entries = parse_mountinfo(runtime.probe("facts", config=cfg)["mountinfo"])
    group = [o for o in top_mount(entries, "/").optional if o.startswith("shared:")]
    host_groups = {o for e in parse_mountinfo(mountinfo_lines()) for o in e.optional}
    assert group and not set(group) & host_groups


@pytest.mark.parametrize("propagation", ["slave", "rslave", None])
def test_slave_root_receives_mounts_from_a_shared_host_mount(runtime: Runtime, host_unchanged: None,
                                                             scratch: Path, propagation: str | None) -> None:
    # The rootfs is a directory in a shared host mount: a slave root has that mount's group as master.
    with host_tmpfs(scratch / "shared", "size=16m") as shared:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        with rootfs_copy_in(shared) as root:
            cfg = with_root(runtime.config, root)
            if propagation is not None:
                cfg["linux"]["rootfsPropagation"] = propagation
            entries = parse_mountinfo(runtime.probe("facts", config=cfg)["mountinfo"])
            assert top_mount(entries, "/").optional == (f"master:{host_peer_group(shared)}",)


@pytest.mark.parametrize("propagation", ["shared", "private", "slave", None])
def test_rootfs_that_is_a_shared_mount_point_works_and_leaks_nothing(runtime: Runtime, host_unchanged: None,
                                                                     scratch: Path,
                                                                     propagation: str | None) -> None:
    # The rootfs is itself a shared host mount (as an overlay made by an engine often is).
    (scratch / "rootfs").mkdir()
    with host_tmpfs(scratch / "rootfs", "size=16m") as root:
        subprocess.run(["mount", "--make-shared", str(root)], check=True)
        subprocess.run(["cp", "-a", f"{ROOTFS}/.", str(root)], check=True)
        before = mountinfo_lines()
        cfg = with_root(runtime.config, root)
        if propagation is not None:
            cfg["linux"]["rootfsPropagation"] = propagation
        result = runtime.run(cfg)
        assert mountinfo_lines() == before
        assert result.returncode == 0, result.stderr
        assert top_mount(parse_mountinfo(result.json()["mountinfo"]), "/").fstype == "tmpfs"
        assert processes_rooted_at(root) == []


# --- maskedPaths and readonlyPaths ------------------------------------------------------------------


def with_paths(config: dict[str, Any], masked: list[str] | None = None, readonly: list[str] | None = None
               ) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    if masked is not None:
        cfg["linux"]["maskedPaths"] = masked
    if readonly is not None:
        cfg["linux"]["readonlyPaths"] = readonly
    return cfg


def test_masked_directory_is_an_empty_read_only_tmpfs(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_paths(runtime.config, masked=["/etc"])
    entries = parse_mountinfo(runtime.probe("facts", config=cfg)["mountinfo"])
    etc = top_mount(entries, "/etc")
    assert etc.fstype == "tmpfs" and "ro" in etc.options
    result = runtime.sh("ls -A /etc | wc -l", cfg)
    assert result.stdout.strip() == "0", result.stderr
    answer = runtime.probe("write", "/etc/new-file", "x", config=cfg)
    assert (answer["ok"], answer["errno"]) == (False, errno.EROFS)
    # Unmasked, the same directory has the rootfs's files: the check above can fail.
    unmasked = runtime.sh("ls -A /etc | wc -l")
    assert int(unmasked.stdout) > 0


def test_masked_file_reads_empty(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_paths(runtime.config, masked=["/etc/passwd"])
    assert runtime.probe("read", "/etc/passwd", config=cfg) == {"ok": True, "data": ""}
    st = runtime.probe("stat", "/etc/passwd", config=cfg)
    assert (st["type"], st["rdev_major"], st["rdev_minor"]) == ("char", 1, 3)
    assert runtime.probe("read", "/etc/passwd")["data"] == (ROOTFS / "etc" / "passwd").read_text()


def test_default_masked_proc_files_read_empty(runtime: Runtime, host_unchanged: None) -> None:
    paths = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    assert "/proc/timer_list" in paths
    for path in paths:
        assert runtime.probe("read", path) == {"ok": True, "data": ""}, path
    # Unmasked, the file has content: the check above can fail.
    assert runtime.probe("read", "/proc/timer_list", config=with_paths(runtime.config, masked=[]))["data"]


def test_masked_path_that_does_not_exist_is_skipped(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_paths(runtime.config, masked=["/does/not/exist", "/etc/passwd"])
    assert runtime.probe("read", "/etc/passwd", config=cfg) == {"ok": True, "data": ""}
    assert runtime.probe("stat", "/does/not/exist", config=cfg)["errno"] == errno.ENOENT


def test_readonly_path_refuses_writes(runtime: Runtime, host_unchanged: None, scratch: Path) -> None:
    (scratch / "data.txt").write_text("original\n")
    before = tree(scratch)
    mount = {"destination": "/mnt", "type": "bind", "source": str(scratch), "options": ["rbind", "rw"]}
    writable = with_mounts(runtime.config, mount)
    protected = with_paths(writable, readonly=["/mnt"])
    entries = parse_mountinfo(runtime.probe("facts", config=protected)["mountinfo"])
    assert "ro" in top_mount(entries, "/mnt").options
    for path in ("/mnt/data.txt", "/mnt/new.txt"):
        answer = runtime.probe("write", path, "changed", config=protected)
        assert (answer["ok"], answer["errno"]) == (False, errno.EROFS), path
    assert tree(scratch) == before
    assert runtime.probe("write", "/mnt/data.txt", "changed", config=writable) == {"ok": True}
    assert (scratch / "data.txt").read_text() == "changed"


def test_default_readonly_proc_sys_refuses_writes(runtime: Runtime, host_unchanged: None) -> None:
    host_hostname = Path("/proc/sys/kernel/hostname").read_text()
    answer = runtime.probe("write", "/proc/sys/kernel/hostname", "changed")
    assert (answer["ok"], answer["errno"]) == (False, errno.EROFS)
    entries = parse_mountinfo(runtime.probe("facts")["mountinfo"])
    assert "ro" in top_mount(entries, "/proc/sys").options
    assert Path("/proc/sys/kernel/hostname").read_text() == host_hostname


def test_readonly_path_keeps_the_mounts_flags(runtime: Runtime, host_unchanged: None) -> None:
    mount = {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "noexec"]}
    cfg = with_paths(with_mounts(runtime.config, mount), readonly=["/mnt"])
    entries = parse_mountinfo(runtime.probe("facts", config=cfg)["mountinfo"])
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(top_mount(entries, "/mnt").options)


# --- maskedPaths against a hostile /dev/null --------------------------------------------------------


@pytest.mark.parametrize("dev", ["in-rootfs", "bound-from-host"])
def test_mask_uses_a_real_null_device_when_dev_null_is_a_symlink(runtime: Runtime, host_unchanged: None,
                                                                scratch: Path, dev: str) -> None:
    sensitive = scratch / "sensitive"
    sensitive.write_text("host secret\n")
    with rootfs_copy_in(scratch) as root:
        (root / "etc" / "secret").write_text("container secret\n")
        cfg = with_root(runtime.config, root)
        # No tmpfs on /dev: its null is whatever the rootfs (or the bound directory) holds.
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/dev"]
        if dev == "in-rootfs":
            # The devices are then made in the copy itself, over the planted link.
            (root / "dev" / "null").symlink_to(sensitive)
        else:
            # A /dev bound from the host gets no devices made: the link stays /dev/null in the container.
            (scratch / "fakedev").mkdir()
            (scratch / "fakedev" / "null").symlink_to(sensitive)
            fakedev = {"destination": "/dev", "type": "bind", "source": str(scratch / "fakedev"),
                       "options": ["rbind"]}
            cfg["mounts"].insert(0, fakedev)
        cfg = with_paths(cfg, masked=[*cfg["linux"]["maskedPaths"], "/etc/secret"])
        host_mounts = mountinfo_lines()
        script = ("cat /etc/secret; echo overwritten > /etc/secret; cat /etc/secret; "
                  "stat -c '%F %t:%T' /etc/secret")
        result = runtime.sh(script, cfg)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["character special file 1:3"]
        assert sensitive.read_text() == "host secret\n"
        assert mountinfo_lines() == host_mounts
        assert (root / "etc" / "secret").read_text() == "container secret\n"
        if dev == "in-rootfs":
            assert not (root / "dev" / "null").is_symlink()  # replaced by a device node, in the copy
        else:
            assert os.readlink(scratch / "fakedev" / "null") == str(sensitive)


def test_error_for_a_masked_path_names_the_field(runtime: Runtime, host_unchanged: None,
                                                 scratch: Path) -> None:
    with rootfs_copy_in(scratch) as root:
        (root / "etc" / "loop").symlink_to("loop")
        cfg = with_paths(with_root(runtime.config, root), masked=["/etc/loop"])
        result = runtime.run(cfg)
        assert result.returncode != 0
        assert re.search(r"linux\.maskedPaths\[0\]", result.stderr), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
