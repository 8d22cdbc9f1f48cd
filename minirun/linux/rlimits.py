"""process.rlimits, with a clear message when the kernel refuses to raise a hard limit."""

from __future__ import annotations

import errno
import resource

from minirun.errors import KernelError
from minirun.spec.model import Rlimit

RLIM_INFINITY_JSON = 2**64 - 1


def _value(v: int) -> int:
    return resource.RLIM_INFINITY if v >= RLIM_INFINITY_JSON else v


def apply(rlimits: list[Rlimit]) -> None:
    for i, rl in enumerate(rlimits):
        which = getattr(resource, rl.type)
        soft, hard = _value(rl.soft), _value(rl.hard)
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError) as e:
            current_hard = resource.getrlimit(which)[1]
            if current_hard != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > current_hard):
                raise KernelError(
                    f"setrlimit {rl.type} (process.rlimits[{i}]): hard limit {rl.hard} is above the current "
                    f"hard limit {current_hard}, and this kernel refuses to raise a hard limit, even for root",
                    errno.EPERM) from None
            raise KernelError(f"setrlimit {rl.type} (process.rlimits[{i}]) to {rl.soft}/{rl.hard}",
                              getattr(e, "errno", None) or errno.EINVAL) from None
