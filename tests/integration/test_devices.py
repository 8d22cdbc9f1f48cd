"""/dev inside the container: the spec's default devices, its symlinks, /dev/shm and linux.devices."""

from __future__ import annotations

import copy
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Runtime
from tests.integration.test_mounts import parse_mountinfo, rootfs_copy_in, scratch_dir, top_mount

# runtime-spec config-linux.md, "Default Devices".
DEFAULT_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
                   "tty": (5, 0)}
SYMLINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
            "/dev/stderr": "/proc/self/fd/2", "/dev/ptmx": "pts/ptmx"}
TYPES = {"c": "char", "u": "char", "b": "block", "p": "fifo"}


@pytest.fixture
def scratch() -> Iterator[Path]:
    with scratch_dir("devices") as top:
        yield top


def with_devices(config: dict[str, Any], *devices: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    cfg["linux"]["devices"] = copy.deepcopy(list(devices))
    return cfg


def stat_many(runtime: Runtime, config: dict[str, Any], *paths: str) -> dict[str, Any]:
    """`probe stat` of each path in one container: the shell runs the probe once per path."""
    cfg = copy.deepcopy(config)
    cfg["process"]["args"] = ["/bin/sh", "-c", 'for p; do /usr/bin/probe stat "$p"; done', "sh", *paths]
    result = runtime.run(cfg)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(paths)
    return dict(zip(paths, answers, strict=True))


# --- the default devices ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEFAULT_DEVICES))
def test_default_device_exists_with_its_numbers_and_mode_0666(runtime: Runtime, host_unchanged: None,
                                                               name: str) -> None:
    st = runtime.probe("stat", f"/dev/{name}")
    assert st["ok"] is True
    assert st["type"] == "char"
    assert (st["rdev_major"], st["rdev_minor"]) == DEFAULT_DEVICES[name]
    assert st["mode"] == 0o666
    assert (st["uid"], st["gid"]) == (0, 0)


def test_default_devices_work(runtime: Runtime, host_unchanged: None) -> None:
    script = ("echo discarded > /dev/null && wc -c < /dev/null && head -c 5 /dev/zero | od -An -tx1 && "
              "head -c 32 /dev/urandom | wc -c && head -c 32 /dev/random | wc -c")
    result = runtime.sh(script)
    assert result.returncode == 0, result.stderr
    assert [line.strip() for line in result.stdout.splitlines()] == ["0", "00 00 00 00 00", "32", "32"]
    full = runtime.probe("write", "/dev/full", "x")
    assert (full["ok"], full["errno"]) == (False, errno.ENOSPC)


def test_dev_tty_without_a_terminal_is_not_a_controlling_terminal(runtime: Runtime,
                                                                   host_unchanged: None) -> None:
    # The node is there and is the real tty device: opening it says "no controlling terminal".
    answer = runtime.probe("open", "/dev/tty", "rw")
    assert (answer["ok"], answer["errno"]) == (False, errno.ENXIO)


@pytest.mark.parametrize(("link", "target"), sorted(SYMLINKS.items()))
def test_dev_symlink_points_where_it_should(runtime: Runtime, host_unchanged: None, link: str,
                                            target: str) -> None:
    assert runtime.probe("stat", link)["type"] == "symlink"
    result = runtime.sh(f"readlink {link}")
    assert result.stdout.strip() == target, result.stderr


def test_dev_std_links_reach_the_process_streams(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.sh("echo to-stdout > /dev/stdout; echo to-stderr > /dev/stderr; ls /dev/fd/ | sort -n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "to-stdout"
    assert result.stderr.strip() == "to-stderr"
    assert {"0", "1", "2"} <= set(lines[1:])


def test_dev_shm_is_a_writable_sticky_tmpfs(runtime: Runtime, host_unchanged: None) -> None:
    st = runtime.probe("stat", "/dev/shm")
    assert (st["type"], st["mode"]) == ("dir", 0o1777)
    entries = parse_mountinfo(runtime.probe("facts")["mountinfo"])
    assert top_mount(entries, "/dev/shm").fstype == "tmpfs"
    assert runtime.probe("write", "/dev/shm/segment", "data") == {"ok": True}


def test_dev_holds_only_what_the_runtime_made(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.sh("ls -A /dev")
    assert result.returncode == 0, result.stderr
    expected = set(DEFAULT_DEVICES) | {os.path.basename(p) for p in SYMLINKS} | {"pts", "shm", "mqueue"}
    assert set(result.stdout.split()) == expected


# --- linux.devices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dev_type", "major", "minor", "mode", "uid", "gid"), [
    ("c", 1, 5, 0o640, 1000, 100),
    ("u", 1, 9, 0o600, 0, 5),
    ("b", 7, 0, 0o660, 0, 6),
    ("p", 0, 0, 0o620, 1000, 1000),
])
def test_linux_device_is_created_as_configured(runtime: Runtime, host_unchanged: None, dev_type: str,
                                               major: int, minor: int, mode: int, uid: int, gid: int) -> None:
    device = {"path": "/dev/configured", "type": dev_type, "major": major, "minor": minor, "fileMode": mode,
              "uid": uid, "gid": gid}
    st = runtime.probe("stat", "/dev/configured", config=with_devices(runtime.config, device))
    assert st["ok"] is True
    assert st["type"] == TYPES[dev_type]
    assert st["mode"] == mode
    assert (st["uid"], st["gid"]) == (uid, gid)
    if dev_type != "p":
        assert (st["rdev_major"], st["rdev_minor"]) == (major, minor)


def test_linux_device_without_mode_or_owner_is_0666_root(runtime: Runtime, host_unchanged: None) -> None:
    device = {"path": "/dev/plain", "type": "c", "major": 1, "minor": 7}
    st = runtime.probe("stat", "/dev/plain", config=with_devices(runtime.config, device))
    assert (st["type"], st["mode"], st["uid"], st["gid"]) == ("char", 0o666, 0, 0)
    assert (st["rdev_major"], st["rdev_minor"]) == (1, 7)


def test_linux_device_in_a_subdirectory_is_created_with_it(runtime: Runtime, host_unchanged: None) -> None:
    device = {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200, "fileMode": 0o666}
    answers = stat_many(runtime, with_devices(runtime.config, device), "/dev/net", "/dev/net/tun")
    assert (answers["/dev/net"]["type"], answers["/dev/net"]["mode"]) == ("dir", 0o755)
    tun = answers["/dev/net/tun"]
    assert (tun["type"], tun["rdev_major"], tun["rdev_minor"], tun["mode"]) == ("char", 10, 200, 0o666)


def test_linux_devices_are_all_created(runtime: Runtime, host_unchanged: None) -> None:
    paths = [f"/dev/many{i}" for i in range(4)]
    devices = [{"path": p, "type": "c", "major": 1, "minor": 3, "fileMode": 0o600 + i}
               for i, p in enumerate(paths)]
    answers = stat_many(runtime, with_devices(runtime.config, *devices), *paths)
    assert [a["mode"] for a in answers.values()] == [0o600, 0o601, 0o602, 0o603]


def test_linux_device_overrides_a_default_one(runtime: Runtime, host_unchanged: None) -> None:
    device = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 1000,
              "gid": 1000}
    answers = stat_many(runtime, with_devices(runtime.config, device), "/dev/null", "/dev/zero")
    assert (answers["/dev/null"]["mode"], answers["/dev/null"]["uid"]) == (0o600, 1000)
    assert answers["/dev/zero"]["mode"] == 0o666  # the other defaults are still made


def test_linux_device_outside_dev_is_created_there(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["mounts"].append({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs"})
    device = {"path": "/mnt/sub/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o644}
    st = runtime.probe("stat", "/mnt/sub/zero", config=with_devices(cfg, device))
    assert (st["type"], st["rdev_major"], st["rdev_minor"], st["mode"]) == ("char", 1, 5, 0o644)


def test_devices_replace_what_the_rootfs_has_at_their_path(runtime: Runtime, host_unchanged: None,
                                                           scratch: Path) -> None:
    with rootfs_copy_in(scratch) as root:
        (scratch / "host-file").write_text("host\n")
        (root / "dev" / "zero").symlink_to(scratch / "host-file")
        (root / "dev" / "full").write_text("a regular file\n")
        cfg = copy.deepcopy(runtime.config)
        cfg["root"]["path"] = str(root)
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/dev"]
        answers = stat_many(runtime, cfg, "/dev/zero", "/dev/full", "/dev/null")
        for name in ("zero", "full", "null"):
            st = answers[f"/dev/{name}"]
            want = ("char", *DEFAULT_DEVICES[name], 0o666)
            assert (st["type"], st["rdev_major"], st["rdev_minor"], st["mode"]) == want
        assert (scratch / "host-file").read_text() == "host\n"
        # Made in the copy's own /dev, which is where they are seen.
        assert os.major((root / "dev" / "zero").lstat().st_rdev) == 1


def test_device_path_through_a_symlinked_directory_stays_in_the_rootfs(runtime: Runtime, host_unchanged: None,
                                                                       scratch: Path) -> None:
    host_dir = scratch / "host-dir"
    host_dir.mkdir()
    with rootfs_copy_in(scratch) as root:
        (root / "dev" / "evil").symlink_to(host_dir)
        (root / host_dir.relative_to("/")).mkdir(parents=True)
        cfg = copy.deepcopy(runtime.config)
        cfg["root"]["path"] = str(root)
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/dev"]
        device = {"path": "/dev/evil/null", "type": "c", "major": 1, "minor": 3}
        st = runtime.probe("stat", f"{host_dir}/null", config=with_devices(cfg, device))
        assert (st["type"], st["rdev_major"], st["rdev_minor"]) == ("char", 1, 3)
        assert list(host_dir.iterdir()) == []
        assert [p.name for p in (root / host_dir.relative_to("/")).iterdir()] == ["null"]
