"""`minirun events`: stats (once with --stats, else every --interval) and `oom` events, as JSON lines."""

from __future__ import annotations

import json
import sys
import time

from minirun import container
from minirun.errors import UsageError
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals

# How often the OOM counter is read between two stats documents.
OOM_POLL_SECONDS = 0.2


def parse_interval(text: str) -> float:
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        number = text[: -len(suffix)]
        if text.endswith(suffix) and number.replace(".", "", 1).isdigit():
            value = float(number) * scale
            if value > 0:
                return value
    raise UsageError(f"--interval {text!r}: expected a positive duration such as 5s or 500ms")


def _emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def execute(g: Globals, *, stats: bool, interval: str, container_id: str) -> int:
    validate_id(container_id)
    if stats:
        _emit(container.stats(g.store, container_id))
        return 0
    period = parse_interval(interval)
    state, _ = container.load(g.store, container_id)
    manager = container.cgroup_of(state)
    oom_seen = manager.oom_kills() if manager else 0
    next_stats = time.monotonic()
    while container.load(g.store, container_id)[1] != "stopped":
        if manager is not None:
            kills = manager.oom_kills()
            if kills > oom_seen:
                oom_seen = kills
                _emit({"type": "oom", "id": container_id})
        if time.monotonic() >= next_stats:
            _emit(container.stats(g.store, container_id))
            next_stats += period
        time.sleep(min(OOM_POLL_SECONDS, period))
    if manager is not None and manager.oom_kills() > oom_seen:
        _emit({"type": "oom", "id": container_id})
    return 0
