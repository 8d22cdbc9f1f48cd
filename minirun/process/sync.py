"""The channel between the runtime and the container's init: one JSON object per SEQPACKET message.

Child → parent: {"type": "init", "pid": N}, {"type": "created"}, {"type": "error", "msg", "exit_code"}.
Parent → child: {"type": "go"} at each point where the parent had work to do first.
"""

from __future__ import annotations

import contextlib
import json
import socket

from minirun.errors import ChildError, MinirunError

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 65536


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return Channel(a), Channel(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, kind: str, **data: Any) -> None:
        self.sock.send(json.dumps({"type": kind, **data}).encode())

    def recv(self) -> dict[str, Any] | None:
        raw = self.sock.recv(MAX_MESSAGE)
        return json.loads(raw) if raw else None

    def expect(self, kind: str) -> dict[str, Any]:
        """The next message, which must be `kind`; an error message from the child is raised here."""
        msg = self.recv()
        if msg is None:
            raise MinirunError(f"container init: exited before `{kind}` (no error reported)")
        if msg.get("type") == "error":
            raise ChildError(str(msg.get("msg")), int(msg.get("exit_code", 1)))
        if msg.get("type") != kind:
            raise MinirunError(f"container init: expected `{kind}`, got `{msg.get('type')}`")
        return msg

    def report(self, exc: BaseException) -> None:
        """Send an exception from the child side as an error message; never raises."""
        if isinstance(exc, MinirunError):
            msg, code = str(exc), exc.exit_code
        else:
            msg, code = f"container init: {type(exc).__name__}: {exc}", 1
        with contextlib.suppress(OSError):
            self.send("error", msg=msg, exit_code=code)
