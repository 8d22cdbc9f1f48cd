"""Pure conversions between OCI values, cgroup v1 files and cgroup v2 files. No I/O here.

Functions raise ValueError with a short lowercase problem; callers prefix it with the config field.
"""

from __future__ import annotations

import math

# Kernel bounds (kernel/sched/core.c): cpu.shares is clamped to [MIN_SHARES, MAX_SHARES] = [2, 1 << 18];
# cgroup v2 cpu.weight is [1, 10000]; v1 blkio weights are [10, 1000], v2 io.weight is [1, 10000].
MIN_SHARES, MAX_SHARES = 2, 262144
MIN_WEIGHT, MAX_WEIGHT = 1, 10000
MIN_BLKIO_WEIGHT, MAX_BLKIO_WEIGHT = 10, 1000
DEFAULT_CFS_PERIOD = 100000  # microseconds; what the kernel uses when no period is written

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def shares_to_weight(shares: int) -> int:
    """OCI cpu.shares (v1) → cgroup v2 cpu.weight; 0 means "not set" and stays 0.

    The log-quadratic curve weight = ceil(10 ** ((L² + 125·L) / 612 − 7/34)), L = log2(shares), passes
    exactly through the three points that matter: the minimum (2 → 1), the two defaults (1024 → 100)
    and the maximum (262144 → 10000). It replaced the linear map (see `shares_to_weight_linear`),
    which sent the v1 default 1024 to 39, i.e. well below the v2 default 100, so every container got
    less CPU than a neighbour that had set nothing. Discussion and adoption:
    kubernetes/kubernetes#131216, containers/crun#1721 (crun PR #1767, crun 1.23),
    opencontainers/runc#4772 (runc PR #4785, runc 1.3.2 / 1.4).
    """
    if shares <= 0:
        return 0
    level = math.log2(min(max(shares, MIN_SHARES), MAX_SHARES))
    # (L² + 125L)/612 − 7/34 == (L² + 125L − 126)/612: one division keeps powers of two exact,
    # so 1024 gives exactly 10**2.0 == 100.0 and ceil() cannot round it up to 101.
    exponent = (level * level + 125 * level - 126) / 612
    return min(max(math.ceil(10**exponent), MIN_WEIGHT), MAX_WEIGHT)


def shares_to_weight_linear(shares: int) -> int:
    """The conversion used until 2025 (runc < 1.3.2, crun < 1.23): maps [2, 262144] linearly onto
    [1, 10000]. Kept for reference and for reading cgroups made by older runtimes; replaced by
    `shares_to_weight` because 1024 (the v1 default) became 39 instead of 100."""
    if shares <= 0:
        return 0
    shares = min(max(shares, MIN_SHARES), MAX_SHARES)
    return 1 + (shares - MIN_SHARES) * (MAX_WEIGHT - 1) // (MAX_SHARES - MIN_SHARES)


def cpu_max(quota: int | None, period: int | None) -> str:
    """OCI cpu.quota/cpu.period → cgroup v2 cpu.max ("QUOTA PERIOD"); no positive quota means "max"."""
    period = period or DEFAULT_CFS_PERIOD
    if quota is None or quota <= 0:
        return f"max {period}"
    return f"{quota} {period}"


def blkio_weight_to_io_weight(weight: int) -> int:
    """v1 blkio weight [10, 1000] → v2 io.weight [1, 10000], linearly (10 → 1, 500 → 4950, 1000 → 10000)."""
    if weight <= 0:
        return 0
    weight = min(max(weight, MIN_BLKIO_WEIGHT), MAX_BLKIO_WEIGHT)
    return 1 + (weight - MIN_BLKIO_WEIGHT) * (MAX_WEIGHT - 1) // (MAX_BLKIO_WEIGHT - MIN_BLKIO_WEIGHT)


def swap_to_v2(swap: int, limit: int | None) -> str:
    """OCI memory.swap is memory+swap together (the v1 memsw counter); v2's memory.swap.max counts swap
    alone, so the v2 value is swap − limit. -1 is unlimited ("max")."""
    if swap == -1:
        return "max"
    if limit is None or limit <= 0:
        raise ValueError("a swap limit needs a memory limit (memory.swap is memory plus swap)")
    if swap < limit:
        raise ValueError(f"{swap} is below memory.limit {limit} (memory.swap is memory plus swap)")
    return str(swap - limit)


def pids_max(limit: int) -> str:
    """OCI pids.limit → pids.max; zero or negative means no limit."""
    return "max" if limit <= 0 else str(limit)


def parse_bytes(text: str) -> int:
    """"64k", "1m", "2G", "512", "1MiB", "2MB" (base 1024) → bytes; "max" and "-1" → -1 (unlimited)."""
    s = text.strip().lower()
    if s in ("max", "-1"):
        return -1
    digits = s
    for suffix in ("ib", "b"):
        if digits.endswith(suffix) and digits[: -len(suffix)][-1:] in "kmgtp0123456789":
            digits = digits[: -len(suffix)]
            break
    unit = digits[-1:] if digits[-1:] in _UNITS else ""
    number = digits[: len(digits) - len(unit)]
    if not number.isdigit():
        raise ValueError(f"{text!r} is not a size (a number with an optional k, m, g, t or p suffix, or max)")
    return int(number) * _UNITS[unit]


def format_bytes(value: int) -> str:
    """Bytes → the shortest exact string `parse_bytes` reads back: 65536 → "64k"; -1 → "max"."""
    if value < 0:
        return "max"
    for unit in ("p", "t", "g", "m", "k"):
        if value and value % _UNITS[unit] == 0:
            return f"{value // _UNITS[unit]}{unit}"
    return str(value)


def hugepage_file_part(page_size: str) -> str:
    """OCI hugepageLimits[].pageSize ("2MB", "1GB", "2048KB", "64KB") → the part of the hugetlb file names
    ("hugetlb.2MB.limit_in_bytes"): the kernel names sizes with the largest unit that divides them."""
    s = page_size.strip()
    if not s.endswith("B") or not s[:-2].isdigit() or s[-2:-1] not in ("K", "M", "G"):
        raise ValueError(f"{page_size!r} is not a huge page size like 2MB, 1GB or 64KB")
    size = int(s[:-2]) * _UNITS[s[-2].lower()]
    if size <= 0 or size & (size - 1):
        raise ValueError(f"{page_size!r} is not a power of two")
    for unit, name in (("g", "GB"), ("m", "MB")):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{name}"
    return f"{size // _UNITS['k']}KB"


def parse_cpu_list(text: str) -> list[int]:
    """A kernel list such as "0-3,8,10-15:2/4" (cpuset.cpus, cpuset.mems) → sorted numbers.

    The optional ":used/group" stride takes the first `used` of every `group` numbers of the range.
    """
    found: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            if text.strip():
                raise ValueError(f"{text!r} has an empty element")
            continue
        rng, _, stride = part.partition(":")
        lo_s, dash, hi_s = rng.partition("-")
        if not lo_s.isdigit() or (dash and not hi_s.isdigit()):
            raise ValueError(f"{text!r} is not a list like 0-3,5")
        lo, hi = int(lo_s), int(hi_s) if dash else int(lo_s)
        if hi < lo:
            raise ValueError(f"{text!r}: range {part} goes backwards")
        used, group = 1, 1
        if stride:
            used_s, slash, group_s = stride.partition("/")
            if not dash or not slash or not used_s.isdigit() or not group_s.isdigit():
                raise ValueError(f"{text!r}: bad stride in {part}")
            used, group = int(used_s), int(group_s)
            if not 0 < used <= group:
                raise ValueError(f"{text!r}: bad stride in {part}")
        found.update(n for n in range(lo, hi + 1) if (n - lo) % group < used)
    return sorted(found)
