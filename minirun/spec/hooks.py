"""config.json `hooks`: the commands run at points of the container's lifecycle (config.md "POSIX-platform Hooks").

Running them is minirun/hooks.py; this module only turns the JSON into Hook objects, refusing
malformed entries with the field's name.
"""

from __future__ import annotations

from minirun.spec.reader import Field

# In the order they run; prestart is deprecated by the spec but still honoured (before createRuntime).
SUPPORTED_HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class Hook:
    __slots__ = ("args", "env", "field", "path", "timeout")

    def __init__(self, path: str, args: list[str] | None = None, env: list[str] | None = None,
                 timeout: int | None = None, field: str = "") -> None:
        self.path = path
        self.args = args or [path]  # args[0] is argv[0]; without args the path stands in for it
        self.env = env or []
        self.timeout = timeout  # seconds; None waits as long as the hook takes
        self.field = field  # e.g. hooks.createRuntime[1], for messages

    def __repr__(self) -> str:
        return f"Hook({self.field} {self.path})"


class Hooks:
    """The hook lists by name; a name that is absent has no hooks."""

    __slots__ = ("lists",)

    def __init__(self, lists: dict[str, list[Hook]] | None = None) -> None:
        self.lists = lists or {}

    def of(self, name: str) -> list[Hook]:
        return self.lists.get(name, [])

    def __bool__(self) -> bool:
        return any(self.lists.values())


def parse_hooks(f: Field | None) -> Hooks:
    if f is None:
        return Hooks()
    lists: dict[str, list[Hook]] = {}
    for name in f.obj():
        entries = f.get(name)
        if entries is None:
            continue
        items = entries.items()  # also for unknown names: an array is the only shape a hook list has
        if name in SUPPORTED_HOOKS:
            lists[name] = [_hook(h) for h in items]
    return Hooks(lists)


def _hook(h: Field) -> Hook:
    h.obj()
    path_field = h.need("path")
    path = path_field.string()
    if not path.startswith("/"):
        raise path_field.fail(f"{path!r} is not an absolute path")
    args = h.get("args")
    env = h.get("env")
    entries = env.items() if env else []
    for e in entries:
        if "=" not in e.string()[1:]:
            raise e.fail(f"{e.value!r} is not of the form KEY=VALUE")
    timeout = h.get("timeout")
    if timeout is not None and timeout.integer() <= 0:
        raise timeout.fail(f"{timeout.value} is not a positive number of seconds")
    return Hook(path=path, args=args.strings() if args else [], env=[e.value for e in entries],
                timeout=timeout.value if timeout else None, field=h.path)

