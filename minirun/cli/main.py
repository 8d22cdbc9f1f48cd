"""Entry point. Well-formed calls are parsed without click (start-up cost); see cli/table.py."""

from __future__ import annotations

import importlib
import sys

from minirun.cli import fastparse
from minirun.cli.table import VERBS
from minirun.errors import MinirunError
from minirun.log import logger
from minirun.state import Store

TYPE_CHECKING = False  # typing costs milliseconds to import; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any


class Globals:
    """What every verb gets from the global options."""

    __slots__ = ("debug", "store")

    def __init__(self, store: Store, debug: bool) -> None:
        self.store = store
        self.debug = debug


def dispatch(global_options: dict[str, Any], verb: str, options: dict[str, Any]) -> int:
    logger.configure(global_options["log"], global_options["log_format"], global_options["debug"])
    g = Globals(Store(global_options["root"]), bool(global_options["debug"]))
    module = importlib.import_module(f"minirun.cli.{VERBS[verb].module}")
    result: int = module.execute(g, **options)
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        parsed = fastparse.parse(args)
        if parsed is None:
            from minirun.cli import clicktree

            return clicktree.main(args)
        return dispatch(parsed.globals, parsed.verb, parsed.options)
    except MinirunError as e:
        message = str(e)
        logger.error(message)
        print(message, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
