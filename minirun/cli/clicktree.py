"""The click view of the command-line table: --help, usage errors, and calls the fast parser declined."""

from __future__ import annotations

from typing import Any

import click

from minirun import __version__
from minirun.cli.table import GLOBAL_OPTIONS, VERBS, Opt, Verb


def _option(opt: Opt) -> Any:
    kwargs: dict[str, Any] = {"help": opt.help, "hidden": opt.hidden, "show_default": opt.kind != "flag"}
    if opt.kind == "flag":
        kwargs["is_flag"] = True
    elif opt.kind == "int":
        kwargs["type"] = int
    elif opt.kind == "choice":
        kwargs["type"] = click.Choice(list(opt.choices))
    elif opt.kind == "multi":
        return click.option(*opt.names, opt.dest, multiple=True, help=opt.help, hidden=opt.hidden)
    return click.option(*opt.names, opt.dest, default=opt.default, **kwargs)


def _command(name: str, verb: Verb) -> click.Command:
    def callback(**options: Any) -> int:
        from minirun.cli.main import dispatch

        ctx = click.get_current_context()
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        return dispatch(ctx.find_root().params, name, options)

    cmd: Any = callback
    for arg in reversed(verb.args):
        # click 8.3 treats an explicit default=None as a value, so pass a default only when optional.
        if arg.variadic:
            cmd = click.argument(arg.dest, metavar=arg.metavar, nargs=-1)(cmd)
        elif arg.required:
            cmd = click.argument(arg.dest, metavar=arg.metavar)(cmd)
        else:
            cmd = click.argument(arg.dest, metavar=arg.metavar, required=False, default=arg.default)(cmd)
    for opt in reversed(verb.options):
        cmd = _option(opt)(cmd)
    # As runc: for a verb ending in a command line (exec, ps), options stop at the first positional.
    interspersed = not (verb.args and verb.args[-1].variadic)
    return click.command(name, help=verb.help, context_settings={"allow_interspersed_args": interspersed})(cmd)


def _group() -> click.Group:
    def callback(**_: Any) -> None:
        pass

    cmd: Any = callback
    for opt in reversed(GLOBAL_OPTIONS):
        cmd = _option(opt)(cmd)
    cmd = click.version_option(__version__, "-v", "--version", prog_name="minirun")(cmd)
    group = click.group(context_settings={"help_option_names": ["-h", "--help"]},
                        help="minirun: run OCI containers (runc-compatible command line).")(cmd)
    for name, verb in VERBS.items():
        group.add_command(_command(name, verb))
    return group


def main(argv: list[str]) -> int:
    try:
        result = _group().main(args=argv, prog_name="minirun", standalone_mode=False)
    except click.exceptions.Abort:
        return 130
    except click.ClickException as e:
        e.show()
        from minirun.log import logger

        # Usage errors are raised before dispatch() configures the log: configure it from the global
        # options click did parse, so `--log` records them too (engines read its last error line).
        ctx = getattr(e, "ctx", None)
        params = ctx.find_root().params if ctx is not None else {}
        if all(params.get(k) is not None for k in ("log", "log_format", "debug")):
            logger.configure(params["log"], params["log_format"], params["debug"])
        logger.error(e.format_message())
        return e.exit_code
    return result if isinstance(result, int) else 0
