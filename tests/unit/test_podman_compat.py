"""What Podman sends that plain OCI configs do not: device modes with file type bits, `tmpcopyup`."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minirun.errors import ConfigError
from minirun.linux.mountopts import parse
from minirun.spec.default import default_spec
from minirun.spec.load import parse_config


def with_device(**device: Any) -> dict[str, Any]:
    config = copy.deepcopy(default_spec())
    config["linux"]["devices"] = [{"path": "/dev/mynull", "major": 1, "minor": 3, **device}]
    return config


@pytest.mark.parametrize(("kind", "mode"), [("c", 0o20666), ("u", 0o20640), ("b", 0o60600), ("p", 0o10644)])
def test_device_mode_with_matching_type_bits_keeps_the_permissions(kind: str, mode: int) -> None:
    config = parse_config(with_device(type=kind, fileMode=mode), "/bundle")
    assert config.linux.devices[0].file_mode == mode & 0o7777


def test_device_mode_without_type_bits_is_unchanged() -> None:
    assert parse_config(with_device(type="c", fileMode=0o640), "/bundle").linux.devices[0].file_mode == 0o640


@pytest.mark.parametrize(("kind", "mode"), [("c", 0o60666), ("b", 0o20666), ("c", 0o100644), ("c", 0o200000)])
def test_device_mode_with_other_type_bits_is_refused_by_name(kind: str, mode: int) -> None:
    with pytest.raises(ConfigError, match=r"linux\.devices\[0\]\.fileMode"):
        parse_config(with_device(type=kind, fileMode=mode), "/bundle")


def test_tmpcopyup_is_an_extension_never_passed_to_the_kernel() -> None:
    opts = parse(["rw", "tmpcopyup", "size=1m"])
    assert opts.copyup
    assert opts.data == ["size=1m"]
    assert not parse(["rw"]).copyup
