"""Log lines for ``--log``/``--log-format``: logrus-style text or JSON lines with runc's keys.

containerd and Podman read the last ``"level":"error"`` line of the JSON log to show why a runtime
call failed, so every error the CLI reports also goes here.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

TYPE_CHECKING = False  # typing costs milliseconds to import; only the type checker needs it
if TYPE_CHECKING:
    from typing import IO

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class _Logger:
    def __init__(self) -> None:
        self.path: str | None = None
        self.fmt = "text"
        self.level = _LEVELS["info"]
        self._stream: IO[str] | None = None

    def configure(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path = path or None
        self.fmt = fmt
        self.level = _LEVELS["debug" if debug else "info"]
        self._stream = None

    def _out(self) -> IO[str]:
        if self._stream is None:
            if self.path:
                # Line-buffered append: several minirun processes may share one log file.
                self._stream = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            else:
                self._stream = sys.stderr
        return self._stream

    def log(self, level: str, msg: str) -> None:
        if _LEVELS[level] < self.level:
            return
        if not self.path and level == "error":
            return  # the CLI already prints the error itself on stderr
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": stamp})
        else:
            line = f'time="{stamp}" level={level} msg={json.dumps(msg)}'
        # A broken log must never turn a working container operation into a failure.
        with contextlib.suppress(OSError):
            self._out().write(line + "\n")

    def debug(self, msg: str) -> None:
        self.log("debug", msg)

    def info(self, msg: str) -> None:
        self.log("info", msg)

    def warning(self, msg: str) -> None:
        self.log("warning", msg)

    def error(self, msg: str) -> None:
        self.log("error", msg)


logger = _Logger()
