"""Capability sets: names to bits, and the five sets applied in the order the kernel requires."""

from __future__ import annotations

from functools import cache

from minirun.errors import KernelError
from minirun.linux import syscalls
from minirun.log import logger
from minirun.spec.model import Capabilities


def is_known(name: str) -> bool:
    return name.startswith("CAP_") and hasattr(syscalls.shim().lib, name)


@cache
def last_cap() -> int:
    """The highest capability this kernel knows; newer names from the headers are skipped."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return syscalls.const("CAP_CHECKPOINT_RESTORE")


def mask(names: list[str], set_name: str) -> int:
    bits = 0
    for name in names:
        number = syscalls.const(name)
        if number > last_cap():
            logger.warning(f"capabilities.{set_name}: {name} is unknown to this kernel, skipped")
            continue
        bits |= 1 << number
    return bits


def drop_bounding(keep: int) -> None:
    """Must run while CAP_SETPCAP is still effective, i.e. before switching user."""
    for number in range(last_cap() + 1):
        if not keep & (1 << number):
            syscalls.prctl("PR_CAPBSET_DROP", number, what=f"drop capability {number} from the bounding set")


def apply_sets(caps: Capabilities) -> None:
    """Set effective/permitted/inheritable, then ambient (which needs permitted and inheritable)."""
    syscalls.capset(mask(caps.effective, "effective"), mask(caps.permitted, "permitted"),
                    mask(caps.inheritable, "inheritable"))
    syscalls.prctl("PR_CAP_AMBIENT", syscalls.const("PR_CAP_AMBIENT_CLEAR_ALL"))
    ambient = mask(caps.ambient, "ambient")
    for number in range(last_cap() + 1):
        if ambient & (1 << number):
            # The kernel only raises what is both permitted and inheritable; like runc, a refusal is a
            # warning, so a config listing ambient caps without inheritable ones still runs.
            try:
                syscalls.prctl("PR_CAP_AMBIENT", syscalls.const("PR_CAP_AMBIENT_RAISE"), number,
                               what=f"raise ambient capability {number}")
            except KernelError as e:
                logger.warning(f"process.capabilities.ambient: {e}")
