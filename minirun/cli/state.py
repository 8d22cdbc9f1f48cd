"""`minirun state`: the OCI state JSON."""

from __future__ import annotations

import json

from minirun import container
from minirun.state import validate_id

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def execute(g: Globals, *, container_id: str) -> int:
    print(json.dumps(container.oci_state(g.store, validate_id(container_id)), indent=2))
    return 0
