"""`minirun kill`: send a signal to the container's init (or, with --all, to all its processes)."""

from __future__ import annotations

from minirun import container
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def execute(g: Globals, *, all: bool, container_id: str, signal: str) -> int:
    sig = container.parse_signal(signal)
    container.kill(g.store, validate_id(container_id), sig, all)
    return 0
