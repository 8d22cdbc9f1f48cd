"""`minirun update`: change resource limits live, from a LinuxResources JSON and/or runc's flags."""

from __future__ import annotations

import json
import sys

from minirun import container
from minirun.errors import ConfigError, UsageError
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.cli.main import Globals


def _read_resources(source: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()  # noqa: SIM115
    except OSError as e:
        raise UsageError(f"--resources {source!r}: {e.strerror.lower() if e.strerror else e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError("", f"invalid JSON: {e}", source="--resources") from None
    if not isinstance(data, dict):
        raise ConfigError("", "must be a LinuxResources object", source="--resources")
    return data


def _bytes(flag: str, text: str) -> int:
    from minirun.cgroups.convert import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected bytes such as 1048576, 512k, 64m, 1g or -1") from None


def execute(g: Globals, *, resources: str, memory: str, memory_swap: str, memory_reservation: str,
            cpu_shares: int | None, cpu_quota: int | None, cpu_period: int | None, cpuset_cpus: str | None,
            cpuset_mems: str | None, pids_limit: int | None, blkio_weight: int | None, container_id: str) -> int:
    changes: dict[str, Any] = _read_resources(resources) if resources else {}
    mem = changes.setdefault("memory", {})
    for flag, key, value in (("--memory", "limit", memory), ("--memory-swap", "swap", memory_swap),
                             ("--memory-reservation", "reservation", memory_reservation)):
        if value:
            mem[key] = _bytes(flag, value)
    cpu = changes.setdefault("cpu", {})
    for key, cvalue in (("shares", cpu_shares), ("quota", cpu_quota), ("period", cpu_period),
                        ("cpus", cpuset_cpus), ("mems", cpuset_mems)):
        if cvalue is not None:
            cpu[key] = cvalue
    if pids_limit is not None:
        changes.setdefault("pids", {})["limit"] = pids_limit
    if blkio_weight is not None:
        changes.setdefault("blockIO", {})["weight"] = blkio_weight
    changes = {k: v for k, v in changes.items() if v != {}}
    if not changes:
        raise UsageError("update: nothing to change (give --resources or a limit flag)")
    container.update(g.store, validate_id(container_id), changes)
    return 0
