"""Parse a well-formed command line from the table without importing click.

Returns None for anything it is not sure about (help, unknown or malformed options, missing
arguments); the caller then hands the command line to click, which explains the problem properly.
"""

from __future__ import annotations

from minirun.cli.table import GLOBAL_OPTIONS, VERBS, Opt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Parsed:
    __slots__ = ("globals", "options", "verb")

    def __init__(self, globals_: dict[str, Any], verb: str, options: dict[str, Any]) -> None:
        self.globals = globals_
        self.verb = verb
        self.options = options


def _take(opts: tuple[Opt, ...], argv: list[str], i: int, out: dict[str, Any]) -> int | None:
    """Consume the option at argv[i] into `out`; the next index, or None when unsure."""
    word = argv[i]
    name, eq, inline = word.partition("=")
    opt = next((o for o in opts if name in o.names), None)
    if opt is None:
        return None
    if opt.kind == "flag":
        if eq:
            return None
        out[opt.dest] = True
        return i + 1
    if eq:
        value, nxt = inline, i + 1
    elif i + 1 < len(argv):
        value, nxt = argv[i + 1], i + 2
    else:
        return None
    if opt.kind == "int":
        if not value.lstrip("-").isdigit():
            return None
        out[opt.dest] = int(value)
    elif opt.kind == "choice" and value not in opt.choices:
        return None
    elif opt.kind == "multi":
        out[opt.dest] = [*out[opt.dest], value]
    else:
        out[opt.dest] = value
    return nxt


def parse(argv: list[str]) -> Parsed | None:
    if any(a in ("-h", "--help", "-v", "--version") for a in argv):
        return None
    globals_ = {o.dest: o.default for o in GLOBAL_OPTIONS}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        nxt = _take(GLOBAL_OPTIONS, argv, i, globals_)
        if nxt is None:
            return None
        i = nxt
    if i >= len(argv) or argv[i] not in VERBS:
        return None
    verb_name = argv[i]
    verb = VERBS[verb_name]
    options = {o.dest: ([] if o.kind == "multi" else o.default) for o in verb.options}
    positional: list[str] = []
    variadic = bool(verb.args) and verb.args[-1].variadic
    i += 1
    while i < len(argv):
        word = argv[i]
        if word == "--":
            positional.extend(argv[i + 1:])
            break
        # As runc: for a verb ending in a command line (exec, ps), options stop at the first positional
        # (`exec ID sh -c ...`: -c belongs to sh).
        if variadic and positional:
            positional.extend(argv[i:])
            break
        if word.startswith("-") and word != "-":
            nxt = _take(verb.options, argv, i, options)
            if nxt is None:
                return None
            i = nxt
        else:
            positional.append(word)
            i += 1
    if len(positional) > len(verb.args) and not variadic:
        return None
    for index, arg in enumerate(verb.args):
        if arg.variadic:
            options[arg.dest] = positional[index:]
        elif index < len(positional):
            options[arg.dest] = positional[index]
        elif arg.required:
            return None
        else:
            options[arg.dest] = arg.default
    return Parsed(globals_, verb_name, options)
