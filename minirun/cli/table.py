"""The command line, declared once: every global option, verb, flag and argument.

Both parsers read this table: `fastparse` (no click import, used for every well-formed call — the
path container engines take) and `clicktree` (click, for --help, usage errors and anything the fast
parser declines). Importing this module must stay cheap: it is on every command's start-up path.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs milliseconds to import; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any


class Opt:
    """An option: `names` such as ("-b", "--bundle"); `kind` is flag, str, int, choice or multi (repeatable
    str, collected in a list)."""

    __slots__ = ("choices", "default", "dest", "help", "hidden", "kind", "names")

    def __init__(self, names: tuple[str, ...], kind: str, default: Any, help: str,
                 choices: tuple[str, ...] = (), hidden: bool = False) -> None:
        self.names, self.kind, self.default, self.help = names, kind, default, help
        self.choices, self.hidden = choices, hidden
        long = next((n for n in names if n.startswith("--")), names[0])
        self.dest = long.lstrip("-").replace("-", "_")


class Arg:
    """A positional argument; a `variadic` one (always last) takes every remaining word as a list."""

    __slots__ = ("default", "dest", "metavar", "required", "variadic")

    def __init__(self, dest: str, metavar: str, required: bool = True, default: str = "",
                 variadic: bool = False) -> None:
        self.dest, self.metavar, self.required, self.default = dest, metavar, required, default
        self.variadic = variadic


class Verb:
    """A verb; minirun.cli.<module> holds its `execute(g, **options)`."""

    __slots__ = ("args", "help", "module", "options")

    def __init__(self, module: str, help: str, options: tuple[Opt, ...] = (),
                 args: tuple[Arg, ...] = ()) -> None:
        self.module, self.help, self.options, self.args = module, help, options, args


ROOT_DEFAULT = "/run/minirun"

GLOBAL_OPTIONS = (
    Opt(("--root",), "str", ROOT_DEFAULT, "Directory holding container state."),
    Opt(("--log",), "str", "", "Write log lines to this file (default: stderr)."),
    Opt(("--log-format",), "choice", "text", "Log line format.", ("text", "json")),
    Opt(("--debug",), "flag", False, "Log debug lines too."),
    Opt(("--systemd-cgroup",), "flag", False, "Accepted for runc compatibility; not used.", hidden=True),
    Opt(("--rootless",), "str", "auto", "Accepted for runc compatibility; not used.", hidden=True),
    Opt(("--criu",), "str", "", "Accepted for runc compatibility; not used.", hidden=True),
)

_ID = Arg("container_id", "ID")
_BUNDLE = Opt(("-b", "--bundle"), "str", ".", "Bundle directory (holding config.json).")
_CREATE_OPTIONS = (
    Opt(("--pid-file",), "str", "", "Write the container init's pid to this file."),
    Opt(("--console-socket",), "str", "", "Unix socket to receive the pty master (process.terminal)."),
    Opt(("--no-pivot",), "flag", False, "Use MS_MOVE + chroot instead of pivot_root."),
    Opt(("--no-new-keyring",), "flag", False, "Accepted for runc compatibility; not used."),
    Opt(("--preserve-fds",), "int", 0, "Pass fds 3..3+N-1 on (sets LISTEN_FDS/LISTEN_PID)."),
)

VERBS: dict[str, Verb] = {
    "create": Verb("create", "Create a container from a bundle; it waits for `start`.",
                   (_BUNDLE, *_CREATE_OPTIONS), (_ID,)),
    "start": Verb("start", "Start a created container.", (), (_ID,)),
    "run": Verb("run", "Create and start a container; without -d, wait and return its exit status.",
                (Opt(("-b", "--bundle"), "str", None, "Bundle directory (default: the current one)."),
                 *_CREATE_OPTIONS,
                 Opt(("-d", "--detach"), "flag", False, "Return once the container runs."),
                 Opt(("--keep",), "flag", False, "Do not delete the container when it exits."),
                 Opt(("--no-subreaper",), "flag", False, "Accepted for runc compatibility; not used."),
                 Opt(("--name", "--id"), "str", "", "Container id when a bundle directory is given.")),
                (Arg("target", "ID|BUNDLE_DIR", required=False),)),
    "exec": Verb("exec_", "Run a new process in a running container (ARGS, or --process).",
                 (Opt(("-p", "--process"), "str", "", "OCI process JSON file (instead of ARGS and the flags)."),
                  Opt(("-t", "--tty"), "flag", False, "Give the process a pseudo-terminal."),
                  Opt(("--console-socket",), "str", "", "Unix socket to receive the pty master (with -t -d)."),
                  Opt(("-d", "--detach"), "flag", False, "Return once the process runs."),
                  Opt(("--pid-file",), "str", "", "Write the process's pid to this file."),
                  Opt(("--cwd",), "str", "", "Working directory in the container."),
                  Opt(("-e", "--env"), "multi", None, "Set an environment variable (K=V); repeatable."),
                  Opt(("-u", "--user"), "str", "", "UID[:GID] to run as."),
                  Opt(("-g", "--additional-gids"), "multi", None, "An additional group id; repeatable."),
                  Opt(("-c", "--cap"), "multi", None, "Add a capability (CAP_...); repeatable."),
                  Opt(("--no-new-privs",), "flag", False, "Set no_new_privs for the process."),
                  Opt(("--preserve-fds",), "int", 0, "Pass fds 3..3+N-1 on (sets LISTEN_FDS/LISTEN_PID)."),
                  Opt(("--ignore-paused",), "flag", False, "Exec even when the container is paused."),
                  Opt(("--process-label",), "str", "", "SELinux label (applied only where SELinux is on)."),
                  Opt(("--apparmor",), "str", "", "AppArmor profile (applied only where AppArmor is on).")),
                 (_ID, Arg("args", "[ARGS...]", required=False, variadic=True))),
    "state": Verb("state", "Print the state of a container as JSON.", (), (_ID,)),
    "kill": Verb("kill", "Send SIGNAL (name or number, default TERM) to a container.",
                 (Opt(("-a", "--all"), "flag", False, "Signal every process of the container."),),
                 (_ID, Arg("signal", "[SIGNAL]", required=False, default="TERM"))),
    "delete": Verb("delete", "Delete a container and everything minirun holds for it.",
                   (Opt(("-f", "--force"), "flag", False, "Kill the container first if it is running."),),
                   (_ID,)),
    "list": Verb("list_", "List containers.",
                 (Opt(("-f", "--format"), "choice", "table", "Output format.", ("table", "json")),
                  Opt(("-q", "--quiet"), "flag", False, "Print only the ids."))),
    "pause": Verb("pause", "Freeze every process of a running container.", (), (_ID,)),
    "resume": Verb("resume", "Thaw a paused container.", (), (_ID,)),
    "update": Verb("update", "Change a container's resource limits while it runs.",
                   (Opt(("-r", "--resources"), "str", "", "LinuxResources JSON file, or - for stdin."),
                    Opt(("--memory",), "str", "", "Memory limit (bytes, or with k/m/g)."),
                    Opt(("--memory-swap",), "str", "", "Memory plus swap limit; -1 for unlimited."),
                    Opt(("--memory-reservation",), "str", "", "Memory soft limit."),
                    Opt(("--cpu-shares",), "int", None, "CPU shares (relative weight)."),
                    Opt(("--cpu-quota",), "int", None, "CPU CFS quota in microseconds per period; -1: none."),
                    Opt(("--cpu-period",), "int", None, "CPU CFS period in microseconds."),
                    Opt(("--cpuset-cpus",), "str", None, "CPUs allowed, e.g. 0-1,3."),
                    Opt(("--cpuset-mems",), "str", None, "Memory nodes allowed, e.g. 0."),
                    Opt(("--pids-limit",), "int", None, "Maximum number of processes; 0 or -1: none."),
                    Opt(("--blkio-weight",), "int", None, "Block IO weight (10-1000).")),
                   (_ID,)),
    "events": Verb("events", "Print stats and OOM events of a container as JSON lines.",
                   (Opt(("--stats",), "flag", False, "Print one stats document and exit."),
                    Opt(("--interval",), "str", "5s", "Time between stats documents, e.g. 5s, 500ms.")),
                   (_ID,)),
    "ps": Verb("ps", "List the processes of a container (extra words go to ps(1), default -ef).",
               (Opt(("-f", "--format"), "choice", "table", "Output format.", ("table", "json")),),
               (_ID, Arg("ps_args", "[-- PS_ARGS...]", required=False, variadic=True))),
    "features": Verb("features", "Print the features this minirun implements, as runtime-spec JSON."),
    "spec": Verb("spec", "Write a default config.json for a bundle.",
                 (Opt(("-b", "--bundle"), "str", ".", "Directory to write config.json in."),
                  Opt(("--rootless",), "flag", False, "Not supported; refused."))),
}
