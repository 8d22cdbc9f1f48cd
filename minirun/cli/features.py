"""`minirun features`: what this minirun implements, as the runtime-spec Features JSON."""

from __future__ import annotations

import json

from minirun.features import features

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.cli.main import Globals


def execute(g: Globals) -> int:
    print(json.dumps(features(), indent=4))
    return 0
