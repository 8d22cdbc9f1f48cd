"""Typed access to a JSON object that remembers where it is, so errors name the exact field."""

from __future__ import annotations

from minirun.errors import ConfigError

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

UINT32_MAX = 2**32 - 1


class Field:
    """A JSON value at a dotted path such as ``linux.namespaces[2].type``."""

    def __init__(self, value: Any, path: str = "") -> None:
        self.value = value
        self.path = path

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(self.path, problem)

    def _child_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> Field | None:
        """The member `key` of this object, or None when absent or JSON null."""
        obj = self.obj()
        if key not in obj or obj[key] is None:
            return None
        return Field(obj[key], self._child_path(key))

    def need(self, key: str) -> Field:
        child = self.get(key)
        if child is None:
            raise ConfigError(self._child_path(key), "required")
        return child

    def obj(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            raise self.fail(f"must be an object, not {_kind(self.value)}")
        return self.value

    def items(self) -> list[Field]:
        if not isinstance(self.value, list):
            raise self.fail(f"must be an array, not {_kind(self.value)}")
        return [Field(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def string(self) -> str:
        if not isinstance(self.value, str):
            raise self.fail(f"must be a string, not {_kind(self.value)}")
        if "\0" in self.value:
            raise self.fail("must not contain a NUL byte")
        return self.value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail(f"must be a boolean, not {_kind(self.value)}")
        return self.value

    def integer(self, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail(f"must be an integer, not {_kind(self.value)}")
        if (lo is not None and self.value < lo) or (hi is not None and self.value > hi):
            raise self.fail(f"{self.value} is out of range [{lo}, {hi}]")
        return self.value

    def strings(self) -> list[str]:
        return [item.string() for item in self.items()]

    def str_map(self) -> dict[str, str]:
        return {k: Field(v, f"{self.path}[{k!r}]").string() for k, v in self.obj().items()}

    # Optional-member conveniences, used for the many fields that have a default.
    def opt_str(self, key: str, default: str = "") -> str:
        child = self.get(key)
        return default if child is None else child.string()

    def opt_bool(self, key: str, default: bool = False) -> bool:
        child = self.get(key)
        return default if child is None else child.boolean()

    def opt_int(self, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
        child = self.get(key)
        return None if child is None else child.integer(lo, hi)

    def opt_strs(self, key: str) -> list[str]:
        child = self.get(key)
        return [] if child is None else child.strings()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)
