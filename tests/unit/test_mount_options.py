"""The mount option table: flags set and cleared, propagation, bind, and data passthrough."""

from __future__ import annotations

import pytest

from minirun.linux import syscalls
from minirun.linux.mountopts import FLAG_OPTIONS, PROPAGATION_OPTIONS, parse


def c(name: str) -> int:
    return syscalls.const(name)


@pytest.mark.parametrize("option", sorted(FLAG_OPTIONS))
def test_each_flag_option_sets_or_clears_its_flag(option: str) -> None:
    is_set, name = FLAG_OPTIONS[option]
    parsed = parse([option])
    if is_set:
        assert parsed.flags == c(name) and parsed.clear == 0
    else:
        assert parsed.flags == 0 and parsed.clear == c(name)


def test_later_option_wins() -> None:
    assert parse(["ro", "rw"]).flags & c("MS_RDONLY") == 0
    assert parse(["rw", "ro"]).flags & c("MS_RDONLY") == c("MS_RDONLY")
    assert parse(["rw", "ro"]).clear & c("MS_RDONLY") == 0


@pytest.mark.parametrize("option", sorted(PROPAGATION_OPTIONS))
def test_propagation_options(option: str) -> None:
    parsed = parse([option])
    expected = 0
    for name in PROPAGATION_OPTIONS[option]:
        expected |= c(name)
    assert parsed.propagation == [expected]
    assert parsed.flags == 0
    assert (expected & c("MS_REC") != 0) == option.startswith("r")


def test_bind_and_rbind() -> None:
    assert parse(["bind"]).bind and not parse(["bind"]).recursive
    assert parse(["rbind"]).bind and parse(["rbind"]).recursive


def test_unknown_options_become_mount_data_in_order() -> None:
    parsed = parse(["nosuid", "mode=755", "size=65536k", "newinstance", "defaults"])
    assert parsed.data_string == "mode=755,size=65536k,newinstance"
    assert parsed.flags == c("MS_NOSUID")


def test_no_data_is_none() -> None:
    assert parse(["ro"]).data_string is None


def test_full_issue_option_list_is_known() -> None:
    names = ["ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "remount",
             "bind", "rbind", "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
             "runbindable", "relatime", "norelatime", "strictatime", "nostrictatime", "noatime", "atime"]
    assert parse(names).data == []
