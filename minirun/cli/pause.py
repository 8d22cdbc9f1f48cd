"""`minirun pause`: freeze every process of a running container (cgroup freezer)."""

from __future__ import annotations

from minirun import container
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def execute(g: Globals, *, container_id: str) -> int:
    container.pause(g.store, validate_id(container_id))
    return 0
