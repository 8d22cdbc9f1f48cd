"""Mounts: every type of the default config, the option table, binds, propagation, data, order, and
symlinked destinations that try to lead out of the rootfs.

Everything is checked in the container's own /proc/self/mountinfo (the probe's `mountinfo`) or by what
the container can and cannot do, and on the host afterwards. Mount points not already in the busybox
rootfs are only ever created inside a tmpfs mounted by the same container or in a copy of the rootfs.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOTFS, Runtime, mountinfo_lines, processes_rooted_at


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    parent_id: int
    dev: str
    root: str
    point: str
    options: tuple[str, ...]  # per-mount options
    optional: tuple[str, ...]  # shared:N, master:N, unbindable, ...
    fstype: str
    source: str
    super_options: tuple[str, ...]


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(lines: list[str]) -> list[MountEntry]:
    entries = []
    for line in lines:
        fields = line.split()
        sep = fields.index("-")
        entries.append(MountEntry(
            mount_id=int(fields[0]), parent_id=int(fields[1]), dev=fields[2], root=_unescape(fields[3]),
            point=_unescape(fields[4]), options=tuple(fields[5].split(",")), optional=tuple(fields[6:sep]),
            fstype=fields[sep + 1], source=_unescape(fields[sep + 2]),
            super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
        ))
    return entries


def mounts_at(entries: list[MountEntry], point: str) -> list[MountEntry]:
    return [e for e in entries if e.point == point]


def top_mount(entries: list[MountEntry], point: str) -> MountEntry:
    """The mount visible at `point`: the last one mounted there."""
    found = mounts_at(entries, point)
    assert found, f"nothing mounted on {point}: {[e.point for e in entries]}"
    return found[-1]


def container_mounts(runtime: Runtime, config: dict[str, Any] | None = None) -> list[MountEntry]:
    facts = runtime.probe("facts", config=config)
    return parse_mountinfo(facts["mountinfo"])


def with_mounts(config: dict[str, Any], *mounts: dict[str, Any], readonly_root: bool | None = None
                ) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    cfg["mounts"].extend(copy.deepcopy(list(mounts)))
    if readonly_root is not None:
        cfg["root"]["readonly"] = readonly_root
    return cfg


def tmpfs(destination: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": list(options)}


def bind(source: str | Path, destination: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source), "options": ["bind", *options]}


def host_mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    return [e.point for e in parse_mountinfo(mountinfo_lines()) if e.point == str(path)
            or e.point.startswith(prefix)]


def host_root_of(path: Path) -> str:
    """The `root` field a bind of the host's `path` shows: its path inside the filesystem holding it."""
    entries = parse_mountinfo(mountinfo_lines())
    text = str(path)
    holder = max((e for e in entries if text == e.point or text.startswith(e.point.rstrip("/") + "/")),
                 key=lambda e: len(e.point))
    return str(Path(holder.root) / os.path.relpath(path, holder.point))


def tree(path: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under `path` (not following links): mode, size and link target or file content."""
    out: dict[str, tuple[int, int, str]] = {}
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            if os.path.islink(p):
                what = "-> " + os.readlink(p)
            elif os.path.isfile(p):
                what = Path(p).read_text(errors="replace")
            else:
                what = ""
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, what)
    return out


@contextlib.contextmanager
def scratch_dir(tag: str) -> Iterator[Path]:
    """A host directory for one test, removed afterwards; never removed through a mount left in it."""
    top = Path(tempfile.mkdtemp(prefix=f"minirun-test-{tag}-"))
    try:
        yield top
    finally:
        leaked = host_mounts_under(top)
        assert leaked == [], f"mounts left on the host under {top}: {leaked}"
        shutil.rmtree(top)


@contextlib.contextmanager
def rootfs_copy_in(top: Path) -> Iterator[Path]:
    """A copy of the busybox rootfs at top/rootfs, that the test may change; checked for leftovers."""
    root = top / "rootfs"
    subprocess.run(["cp", "-a", str(ROOTFS), str(root)], check=True)
    try:
        yield root
    finally:
        assert processes_rooted_at(root) == []


@contextlib.contextmanager
def host_tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A tmpfs mounted on the host at `path` for the duration; unmounted (and checked gone) afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=1m", *options]), "minirun-test", str(path)],
                   check=True)
    try:
        yield path
    finally:
        # Everything at or under `path`, deepest and latest first: a runtime bug may have stacked more there.
        for _ in range(64):
            leftover = host_mounts_under(path)
            if not leftover:
                break
            subprocess.run(["umount", "--lazy", max(reversed(leftover), key=len)], check=True)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with scratch_dir("mounts") as top:
        yield top


# --- the default config's mounts --------------------------------------------------------------------


def test_proc_is_a_procfs_of_the_container(runtime: Runtime, host_unchanged: None) -> None:
    entries = container_mounts(runtime)
    proc = top_mount(entries, "/proc")
    assert (proc.fstype, proc.source) == ("proc", "proc")
    # It is the container's pid namespace's procfs: only the container's processes are in it.
    result = runtime.sh("echo /proc/[0-9]*")
    assert result.stdout.split() == ["/proc/1"]


def test_sysfs_is_read_only(runtime: Runtime, host_unchanged: None) -> None:
    sys_mount = top_mount(container_mounts(runtime), "/sys")
    assert sys_mount.fstype == "sysfs"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(sys_mount.options)
    # Creating a file: refused by the read-only mount before sysfs itself is asked (it would say EACCES).
    answer = runtime.probe("write", "/sys/minirun-test-file", "x")
    assert (answer["ok"], answer["errno"]) == (False, errno.EROFS)


def test_dev_is_a_tmpfs_with_the_size_and_mode_asked(runtime: Runtime, host_unchanged: None) -> None:
    dev = top_mount(container_mounts(runtime), "/dev")
    assert dev.fstype == "tmpfs"
    assert "nosuid" in dev.options
    assert "relatime" not in dev.options and "noatime" not in dev.options  # strictatime
    assert {"size=65536k", "mode=755"} <= set(dev.super_options)
    st = runtime.probe("stat", "/dev")
    assert (st["type"], st["mode"]) == ("dir", 0o755)


def test_dev_shm_is_a_world_writable_sticky_tmpfs(runtime: Runtime, host_unchanged: None) -> None:
    shm = top_mount(container_mounts(runtime), "/dev/shm")
    assert (shm.fstype, shm.source) == ("tmpfs", "shm")
    assert {"nosuid", "nodev", "noexec"} <= set(shm.options)
    assert "size=65536k" in shm.super_options
    assert runtime.probe("stat", "/dev/shm")["mode"] == 0o1777


def test_devpts_is_a_new_instance_with_ptmx_linked_into_it(runtime: Runtime, host_unchanged: None) -> None:
    pts = top_mount(container_mounts(runtime), "/dev/pts")
    assert pts.fstype == "devpts"
    assert {"nosuid", "noexec"} <= set(pts.options)
    assert {"gid=5", "mode=620", "ptmxmode=666"} <= set(pts.super_options)
    host_devpts = {e.dev for e in parse_mountinfo(mountinfo_lines()) if e.fstype == "devpts"}
    assert pts.dev not in host_devpts  # newinstance: not the host's devpts superblock
    result = runtime.sh("readlink /dev/ptmx; stat -c '%t:%T %a' /dev/pts/ptmx")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["pts/ptmx", "5:2 666"]
    # Opening /dev/ptmx allocates a pty in the container's own instance.
    assert runtime.probe("open", "/dev/ptmx", "rw") == {"ok": True}


def test_dev_mqueue_is_an_mqueue_mount(runtime: Runtime, host_unchanged: None) -> None:
    mq = top_mount(container_mounts(runtime), "/dev/mqueue")
    assert (mq.fstype, mq.source) == ("mqueue", "mqueue")
    assert {"nosuid", "nodev", "noexec"} <= set(mq.options)


def host_cgroup_hierarchies() -> dict[str, str]:
    """Mount point under /sys/fs/cgroup -> fstype, for the host's cgroup hierarchies."""
    return {e.point: e.fstype for e in parse_mountinfo(mountinfo_lines())
            if e.fstype in ("cgroup", "cgroup2") and os.path.dirname(e.point) == "/sys/fs/cgroup"}


def test_cgroup_mount_is_a_tmpfs_with_one_read_only_mount_per_hierarchy(runtime: Runtime,
                                                                        host_unchanged: None) -> None:
    host = host_cgroup_hierarchies()
    assert host, "this test is for a v1 or hybrid host: cgroup hierarchies under /sys/fs/cgroup/*"
    entries = container_mounts(runtime)
    top = top_mount(entries, "/sys/fs/cgroup")
    assert top.fstype == "tmpfs"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(top.options)
    inside = {e.point: e for e in entries if e.parent_id == top.mount_id}
    assert set(inside) == set(host)
    for point, fstype in host.items():
        assert inside[point].fstype == fstype
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(inside[point].options), point
        # With a cgroup namespace each hierarchy is seen from the container's own cgroup.
        assert inside[point].root == "/", point
    assert runtime.probe("write", "/sys/fs/cgroup/x", "y")["errno"] == errno.EROFS


def test_cgroup2_mount_is_the_unified_hierarchy(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_mounts(runtime.config, tmpfs("/mnt"),
                      {"destination": "/mnt/unified", "type": "cgroup2", "source": "cgroup2",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
    mount = top_mount(container_mounts(runtime, cfg), "/mnt/unified")
    assert mount.fstype == "cgroup2"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(mount.options)
    result = runtime.sh("cat /mnt/unified/cgroup.controllers >/dev/null && echo readable", cfg)
    assert result.stdout.strip() == "readable", result.stderr


def test_cgroup_mount_without_cgroup_namespace_shows_the_containers_own_cgroup(
        runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "cgroup"]
    facts = runtime.probe("facts", config=cfg)
    entries = parse_mountinfo(facts["mountinfo"])
    # Without a cgroup namespace /proc/self/cgroup shows the container's full path in each hierarchy.
    container_cgroups = {line.split(":")[1]: line.split(":", 2)[2] for line in facts["cgroup"]}
    assert any(path != "/" for path in container_cgroups.values()), container_cgroups
    for point, fstype in host_cgroup_hierarchies().items():
        mount = top_mount(entries, point)
        assert mount.fstype == fstype
        controllers = ",".join(o for o in mount.super_options if o not in ("rw", "ro")
                               and (o.startswith("name=") or "=" not in o)) if fstype == "cgroup" else ""
        # The bound directory is the container's own cgroup, never the host's whole hierarchy.
        assert mount.root == container_cgroups[controllers], point
        assert "ro" in mount.options


# --- the option table -------------------------------------------------------------------------------

# option -> (must be in the per-mount options, must not be there); checked on a fresh tmpfs.
PER_MOUNT = {
    "ro": ({"ro"}, {"rw"}),
    "rw": ({"rw"}, {"ro"}),
    "nosuid": ({"nosuid"}, set()),
    "nodev": ({"nodev"}, set()),
    "noexec": ({"noexec"}, set()),
    "noatime": ({"noatime"}, {"relatime"}),
    "relatime": ({"relatime"}, {"noatime"}),
    "strictatime": (set(), {"relatime", "noatime"}),
    "nodiratime": ({"nodiratime"}, set()),
    "nosymfollow": ({"nosymfollow"}, set()),
}
# option -> what the superblock options show.
SUPER = {"sync": "sync", "dirsync": "dirsync", "lazytime": "lazytime"}
# A later option undoes an earlier one: (options, flag that must be absent from the mount's options).
CLEARING = [
    (["ro", "rw"], "ro"),
    (["nosuid", "suid"], "nosuid"),
    (["nodev", "dev"], "nodev"),
    (["noexec", "exec"], "noexec"),
    (["noatime", "atime"], "noatime"),
    (["nodiratime", "diratime"], "nodiratime"),
]


@pytest.mark.parametrize("option", sorted(PER_MOUNT))
def test_mount_option_shows_in_the_per_mount_options(runtime: Runtime, host_unchanged: None,
                                                     option: str) -> None:
    present, absent = PER_MOUNT[option]
    mount = top_mount(container_mounts(runtime, with_mounts(runtime.config, tmpfs("/mnt", option))), "/mnt")
    assert mount.fstype == "tmpfs"
    assert present <= set(mount.options), mount.options
    assert not absent & set(mount.options), mount.options


@pytest.mark.parametrize("option", sorted(SUPER))
def test_superblock_mount_option_shows_in_the_super_options(runtime: Runtime, host_unchanged: None,
                                                            option: str) -> None:
    mount = top_mount(container_mounts(runtime, with_mounts(runtime.config, tmpfs("/mnt", option))), "/mnt")
    assert SUPER[option] in mount.super_options, mount.super_options


def test_tmpfs_without_options_has_none_of_the_flags(runtime: Runtime, host_unchanged: None) -> None:
    mount = top_mount(container_mounts(runtime, with_mounts(runtime.config, tmpfs("/mnt"))), "/mnt")
    assert not {"ro", "nosuid", "nodev", "noexec", "noatime", "nodiratime"} & set(mount.options)
    assert not {"sync", "dirsync"} & set(mount.super_options)


@pytest.mark.parametrize(("options", "cleared"), CLEARING, ids=[",".join(o) for o, _ in CLEARING])
def test_later_mount_option_clears_an_earlier_one(runtime: Runtime, host_unchanged: None, options: list[str],
                                                  cleared: str) -> None:
    mount = top_mount(container_mounts(runtime, with_mounts(runtime.config, tmpfs("/mnt", *options))), "/mnt")
    assert cleared not in mount.options, mount.options


def test_ro_mount_refuses_writes(runtime: Runtime, host_unchanged: None) -> None:
    answer = runtime.probe("write", "/mnt/file", "x", config=with_mounts(runtime.config, tmpfs("/mnt", "ro")))
    assert (answer["ok"], answer["errno"]) == (False, errno.EROFS)


def test_noexec_mount_refuses_to_execute(runtime: Runtime, host_unchanged: None) -> None:
    script = "cp /bin/busybox /mnt/true && /mnt/true; echo status=$?"
    allowed = runtime.sh(script, with_mounts(runtime.config, tmpfs("/mnt")))
    refused = runtime.sh(script, with_mounts(runtime.config, tmpfs("/mnt", "noexec")))
    assert allowed.stdout.strip() == "status=0", allowed.stderr
    assert refused.stdout.strip() == "status=126", refused.stderr


def test_nodev_mount_refuses_to_open_devices(runtime: Runtime, host_unchanged: None) -> None:
    script = "mknod /mnt/null c 1 3 && echo hi > /mnt/null; echo status=$?"
    cfg = copy.deepcopy(runtime.config)
    for name in ("bounding", "effective", "permitted"):
        cfg["process"]["capabilities"][name].append("CAP_MKNOD")
    allowed = runtime.sh(script, with_mounts(cfg, tmpfs("/mnt")))
    refused = runtime.sh(script, with_mounts(cfg, tmpfs("/mnt", "nodev")))
    assert allowed.stdout.strip() == "status=0", allowed.stderr
    assert refused.stdout.strip() == "status=1"
    assert "Permission denied" in refused.stderr


# --- data, creation, order --------------------------------------------------------------------------


def test_unknown_options_are_passed_to_the_filesystem_as_data(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_mounts(runtime.config, tmpfs("/mnt", "nosuid", "size=1m", "mode=0710", "nr_inodes=100"))
    mount = top_mount(container_mounts(runtime, cfg), "/mnt")
    assert {"size=1024k", "mode=710", "nr_inodes=100"} <= set(mount.super_options)
    assert "nosuid" in mount.options and "nosuid" not in mount.super_options
    assert runtime.probe("stat", "/mnt", config=cfg)["mode"] == 0o710


def test_size_data_option_is_enforced(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_mounts(runtime.config, tmpfs("/mnt", "size=64k"))
    result = runtime.sh("dd if=/dev/zero of=/mnt/big bs=1k count=128; echo status=$?", cfg)
    assert result.stdout.strip() == "status=1"
    assert "No space left on device" in result.stderr


def test_missing_nested_destination_is_created(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_mounts(runtime.config, tmpfs("/mnt"), tmpfs("/mnt/a/b/c", "size=1m"))
    entries = container_mounts(runtime, cfg)
    outer, inner = top_mount(entries, "/mnt"), top_mount(entries, "/mnt/a/b/c")
    assert inner.parent_id == outer.mount_id
    assert "size=1024k" in inner.super_options


def test_missing_destination_is_created_in_the_rootfs(runtime: Runtime, host_unchanged: None,
                                                      scratch: Path) -> None:
    source = scratch / "src"
    source.mkdir()
    (source / "hello.txt").write_text("hello from the host\n")
    (scratch / "file.txt").write_text("a single file\n")
    with rootfs_copy_in(scratch) as root:
        cfg = copy.deepcopy(runtime.config)
        cfg["root"]["path"] = str(root)
        cfg = with_mounts(cfg, tmpfs("/x/y/z"), bind(source, "/d1/d2/dir"), bind(scratch / "file.txt",
                                                                              "/f1/f2/file"))
        result = runtime.sh("cat /d1/d2/dir/hello.txt /f1/f2/file; grep -c ' /x/y/z ' /proc/self/mountinfo",
                            cfg)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["hello from the host", "a single file", "1"]
        # What was created is in the copy, as directories and an empty file, and nothing is mounted there.
        assert (root / "x" / "y" / "z").is_dir()
        assert (root / "d1" / "d2" / "dir").is_dir()
        assert list((root / "d1" / "d2" / "dir").iterdir()) == []
        assert (root / "f1" / "f2" / "file").is_file()
        assert (root / "f1" / "f2" / "file").read_text() == ""


def test_later_mount_on_the_same_destination_is_on_top(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_mounts(runtime.config, tmpfs("/mnt", "mode=0701"), tmpfs("/mnt", "mode=0750"))
    entries = container_mounts(runtime, cfg)
    first, second = mounts_at(entries, "/mnt")
    assert second.parent_id == first.mount_id
    assert ("mode=701" in first.super_options, "mode=750" in second.super_options) == (True, True)
    assert runtime.probe("stat", "/mnt", config=cfg)["mode"] == 0o750


def test_mounts_are_made_in_config_order(runtime: Runtime, host_unchanged: None) -> None:
    # /mnt/inner lands in the first tmpfs; the third mount then hides both: order is the config's.
    cfg = with_mounts(runtime.config, tmpfs("/mnt", "mode=0701"), tmpfs("/mnt/inner", "mode=0702"),
                      tmpfs("/mnt", "mode=0703"))
    entries = container_mounts(runtime, cfg)
    first, last = mounts_at(entries, "/mnt")
    inner = top_mount(entries, "/mnt/inner")
    assert inner.parent_id == first.mount_id
    assert last.parent_id == first.mount_id
    assert [e.mount_id for e in entries].index(inner.mount_id) < [e.mount_id for e in entries].index(
        last.mount_id)
    answer = runtime.probe("stat", "/mnt/inner", config=cfg)
    assert (answer["ok"], answer["errno"]) == (False, errno.ENOENT)


# --- bind mounts ------------------------------------------------------------------------------------


def test_bind_mount_of_a_host_directory_shows_its_content(runtime: Runtime, host_unchanged: None,
                                                          scratch: Path) -> None:
    (scratch / "hello.txt").write_text("hello from the host\n")
    cfg = with_mounts(runtime.config, bind(scratch, "/mnt"))
    answer = runtime.probe("read", "/mnt/hello.txt", config=cfg)
    assert answer == {"ok": True, "data": "hello from the host\n"}
    mount = top_mount(container_mounts(runtime, cfg), "/mnt")
    assert mount.root == host_root_of(scratch)


def test_rw_bind_mount_writes_reach_the_host(runtime: Runtime, host_unchanged: None, scratch: Path) -> None:
    cfg = with_mounts(runtime.config, bind(scratch, "/mnt", "rw"))
    assert runtime.probe("write", "/mnt/new.txt", "written inside", config=cfg) == {"ok": True}
    assert (scratch / "new.txt").read_text() == "written inside"


def test_bind_mount_of_a_single_host_file(runtime: Runtime, host_unchanged: None, scratch: Path) -> None:
    hosts = scratch / "hosts"
    hosts.write_text("10.1.2.3 from-the-host\n")
    cfg = with_mounts(runtime.config, bind(hosts, "/etc/hosts"))
    assert runtime.probe("read", "/etc/hosts", config=cfg) == {"ok": True, "data": "10.1.2.3 from-the-host\n"}
    mount = top_mount(container_mounts(runtime, cfg), "/etc/hosts")
    assert mount.root == host_root_of(hosts)
    assert runtime.probe("stat", "/etc/hosts", config=cfg)["type"] == "file"


@pytest.mark.parametrize("what", ["directory", "file"])
def test_ro_bind_mount_is_really_read_only(runtime: Runtime, host_unchanged: None, scratch: Path,
                                           what: str) -> None:
    (scratch / "data.txt").write_text("original\n")
    if what == "directory":
        source, destination, target = scratch, "/mnt", "/mnt/data.txt"
    else:
        source, destination, target = scratch / "data.txt", "/etc/hosts", "/etc/hosts"
    before = tree(scratch)
    # The root is writable here, so only the bind's own `ro` can refuse the write.
    rw = with_mounts(runtime.config, bind(source, destination), readonly_root=False)
    ro = with_mounts(runtime.config, bind(source, destination, "ro"), readonly_root=False)
    mount = top_mount(container_mounts(runtime, ro), destination)
    assert "ro" in mount.options
    answer = runtime.probe("write", target, "changed inside", config=ro)
    assert (answer["ok"], answer["errno"]) == (False, errno.EROFS)
    assert tree(scratch) == before
    # The same bind without `ro` takes the write: the test above can fail.
    assert runtime.probe("write", target, "changed inside", config=rw) == {"ok": True}
    assert (scratch / "data.txt").read_text() == "changed inside"


def test_ro_bind_mount_keeps_the_sources_flags(runtime: Runtime, host_unchanged: None, scratch: Path) -> None:
    # A bind remount must repeat nosuid/nodev/noexec that the source mount has, or the kernel refuses it.
    with host_tmpfs(scratch / "src", "nosuid", "nodev", "noexec") as src:
        (src / "f").write_text("x")
        mount = top_mount(container_mounts(runtime, with_mounts(runtime.config, bind(src, "/mnt", "ro"))),
                          "/mnt")
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(mount.options)


@pytest.mark.parametrize(("option", "carried"), [("rbind", True), ("bind", False)])
def test_rbind_carries_submounts_and_bind_does_not(runtime: Runtime, host_unchanged: None, scratch: Path,
                                                   option: str, carried: bool) -> None:
    (scratch / "top.txt").write_text("top\n")
    with host_tmpfs(scratch / "sub") as sub:
        (sub / "marker.txt").write_text("in the submount\n")
        cfg = with_mounts(runtime.config, {"destination": "/mnt", "type": "bind", "source": str(scratch),
                                           "options": [option]})
        result = runtime.sh("cat /mnt/top.txt; ls -A /mnt/sub", cfg)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == (["top", "marker.txt"] if carried else ["top"])
        points = {e.point for e in container_mounts(runtime, cfg)}
        assert ("/mnt/sub" in points) is carried


def test_bind_mount_of_a_missing_source_is_refused(runtime: Runtime, host_unchanged: None,
                                                   scratch: Path) -> None:
    cfg = with_mounts(runtime.config, bind(scratch / "absent", "/mnt"))
    result = runtime.run(cfg)
    assert result.returncode != 0
    index = len(cfg["mounts"]) - 1
    assert f"mounts[{index}].source" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- propagation ------------------------------------------------------------------------------------


def _propagation(entry: MountEntry) -> set[str]:
    return {o.split(":")[0] for o in entry.optional}


@pytest.mark.parametrize(("option", "expected"), [
    ("private", set()),
    ("rprivate", set()),
    ("shared", {"shared"}),
    ("rshared", {"shared"}),
    ("unbindable", {"unbindable"}),
    ("runbindable", {"unbindable"}),
    # A slave of a private mount has no master: it is private.
    ("slave", set()),
])
def test_propagation_option_shows_in_the_optional_fields(runtime: Runtime, host_unchanged: None,
                                                         option: str, expected: set[str]) -> None:
    mount = top_mount(container_mounts(runtime, with_mounts(runtime.config, tmpfs("/mnt", option))), "/mnt")
    assert _propagation(mount) == expected, mount.optional


@pytest.mark.parametrize(("option", "top", "sub"), [
    ("shared", {"shared"}, set()),
    ("rshared", {"shared"}, {"shared"}),
    ("unbindable", {"unbindable"}, set()),
    ("runbindable", {"unbindable"}, {"unbindable"}),
])
def test_recursive_propagation_reaches_submounts(runtime: Runtime, host_unchanged: None, scratch: Path,
                                                 option: str, top: set[str], sub: set[str]) -> None:
    with host_tmpfs(scratch / "sub"):
        cfg = with_mounts(runtime.config, {"destination": "/mnt", "type": "bind", "source": str(scratch),
                                           "options": ["rbind", option]})
        entries = container_mounts(runtime, cfg)
        assert _propagation(top_mount(entries, "/mnt")) == top
        assert _propagation(top_mount(entries, "/mnt/sub")) == sub


def test_rprivate_makes_a_shared_host_mount_private(runtime: Runtime, host_unchanged: None,
                                                    scratch: Path) -> None:
    with host_tmpfs(scratch / "src") as src:
        subprocess.run(["mount", "--make-shared", str(src)], check=True)
        plain = top_mount(container_mounts(runtime, with_mounts(runtime.config, bind(src, "/mnt"))), "/mnt")
        cfg = with_mounts(runtime.config, bind(src, "/mnt", "rprivate"))
        private = top_mount(container_mounts(runtime, cfg), "/mnt")
        assert _propagation(private) == set(), private.optional
        # Without it the bind keeps a link to the host's peer group (the container's root is made a slave).
        assert _propagation(plain) & {"shared", "master"}, plain.optional


# --- symlinked destinations must stay inside the rootfs ----------------------------------------------


@dataclass
class EscapeSetup:
    root: Path  # the rootfs copy
    host_target: Path  # the host directory the symlink names
    source: Path  # what the container mounts


@pytest.fixture
def escape(scratch: Path) -> Iterator[EscapeSetup]:
    host_target = scratch / "host-target"
    host_target.mkdir()
    (host_target / "precious.txt").write_text("host data\n")
    source = scratch / "source"
    source.mkdir()
    (source / "marker.txt").write_text("mounted\n")
    with rootfs_copy_in(scratch) as root:
        yield EscapeSetup(root, host_target, source)


def _link_target(setup: EscapeSetup, style: str, at: Path) -> str:
    if style == "absolute":
        return "/../../../../.." + str(setup.host_target)
    # Enough `..` to climb from `at` to the host's `/`, and more.
    depth = len(at.parent.parts) + 3
    return "/".join([".."] * depth) + str(setup.host_target)


@pytest.mark.parametrize("style", ["absolute", "relative"])
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_symlinked_destination_lands_inside_the_rootfs(runtime: Runtime, host_unchanged: None,
                                                       escape: EscapeSetup, style: str, kind: str) -> None:
    link = escape.root / "mnt" / "escape"
    link.symlink_to(_link_target(escape, style, link))
    # The link's target, read inside the rootfs, exists there too: the mount must land on that.
    inside = escape.root / escape.host_target.relative_to("/")
    inside.mkdir(parents=True)
    host_before, host_mounts = tree(escape.host_target), mountinfo_lines()
    cfg = copy.deepcopy(runtime.config)
    cfg["root"]["path"] = str(escape.root)
    mount = bind(escape.source, "/mnt/escape") if kind == "bind" else tmpfs("/mnt/escape", "mode=0711")
    cfg = with_mounts(cfg, mount)
    target = escape.host_target
    script = f"ls -A /mnt/escape; stat -c %a {target}; grep -c ' {target} ' /proc/self/mountinfo"
    result = runtime.sh(script, cfg)
    assert result.returncode == 0, result.stderr
    listing = ["marker.txt"] if kind == "bind" else []
    assert result.stdout.splitlines() == [*listing, "755" if kind == "bind" else "711", "1"]
    assert tree(escape.host_target) == host_before
    assert mountinfo_lines() == host_mounts
    assert list(inside.iterdir()) == []  # nothing written through the mount into the copy either


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_dangling_symlinked_destination_never_creates_on_the_host(runtime: Runtime, host_unchanged: None,
                                                                  escape: EscapeSetup, style: str) -> None:
    missing = escape.host_target / "not-there"
    link = escape.root / "mnt" / "escape"
    link.symlink_to(_link_target(escape, style, link) + "/not-there")
    cfg = copy.deepcopy(runtime.config)
    cfg["root"]["path"] = str(escape.root)
    result = runtime.run(with_mounts(cfg, bind(escape.source, "/mnt/escape")))
    # Refusing is fine and so is creating the directory inside the rootfs; the host must not change.
    assert not missing.exists()
    assert [p.name for p in escape.host_target.iterdir()] == ["precious.txt"]
    if result.returncode != 0:
        assert "/mnt/escape" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    else:
        assert (escape.root / missing.relative_to("/")).is_dir()


@pytest.mark.parametrize("fstype", ["proc", "sysfs"])
@pytest.mark.parametrize("style", ["inside", "outside"])
def test_proc_or_sysfs_on_a_symlinked_destination_is_refused(runtime: Runtime, host_unchanged: None,
                                                            escape: EscapeSetup, fstype: str,
                                                            style: str) -> None:
    name = "proc" if fstype == "proc" else "sys"
    (escape.root / name).rmdir()
    if style == "inside":
        (escape.root / "fake").mkdir()
        (escape.root / name).symlink_to("/fake")
    else:
        (escape.root / name).symlink_to("/../../.." + str(escape.host_target))
        (escape.root / escape.host_target.relative_to("/")).mkdir(parents=True)
    host_before = tree(escape.host_target)
    cfg = copy.deepcopy(runtime.config)
    cfg["root"]["path"] = str(escape.root)
    result = runtime.run(cfg)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"/{name}" in lines[0] and "symlink" in lines[0]
    assert not runtime.root.exists() or list(runtime.root.iterdir()) == []
    assert tree(escape.host_target) == host_before
    if style == "inside":
        assert list((escape.root / "fake").iterdir()) == []
