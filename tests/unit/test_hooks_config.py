"""config.json `hooks`: parsing, and refusals that name the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minirun.errors import ConfigError
from minirun.spec.default import default_spec
from minirun.spec.hooks import SUPPORTED_HOOKS
from minirun.spec.load import parse_config
from minirun.spec.model import Config


def with_hooks(hooks: Any) -> dict[str, Any]:
    config = copy.deepcopy(default_spec())
    config["hooks"] = hooks
    return config


def parsed(hooks: Any) -> Config:
    return parse_config(with_hooks(hooks), "/bundle")


def refusal(hooks: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parsed(hooks)
    return str(info.value)


def test_every_hook_list_is_parsed_in_order() -> None:
    hooks = {name: [{"path": f"/bin/{name}-a"}, {"path": f"/bin/{name}-b", "args": ["b", "-x"],
                                                  "env": ["A=1", "B=x=y"], "timeout": 7}]
             for name in SUPPORTED_HOOKS}
    config = parsed(hooks)
    assert config.hooks is not None
    for name in SUPPORTED_HOOKS:
        first, second = config.hooks.of(name)
        assert (first.path, first.args, first.env, first.timeout) == (f"/bin/{name}-a", [f"/bin/{name}-a"], [], None)
        assert (second.path, second.args, second.env, second.timeout) == (
            f"/bin/{name}-b", ["b", "-x"], ["A=1", "B=x=y"], 7)
        assert (first.field, second.field) == (f"hooks.{name}[0]", f"hooks.{name}[1]")


def test_supported_hooks_are_the_six_of_the_spec() -> None:
    assert set(SUPPORTED_HOOKS) == {"prestart", "createRuntime", "createContainer", "startContainer",
                                    "poststart", "poststop"}


@pytest.mark.parametrize("hooks", [None, {}, {"createRuntime": []}, {"poststop": None}])
def test_no_hooks_means_none(hooks: Any) -> None:
    assert parsed(hooks).hooks is None


def test_unknown_hook_names_with_an_array_are_ignored() -> None:
    config = parsed({"futureHook": [{"path": "relative", "whatever": 1}], "poststop": [{"path": "/bin/x"}]})
    assert config.hooks is not None
    assert config.hooks.of("futureHook") == []
    assert [h.path for h in config.hooks.of("poststop")] == ["/bin/x"]


def test_unknown_fields_of_a_hook_are_ignored() -> None:
    config = parsed({"prestart": [{"path": "/bin/x", "somethingNew": {"a": 1}}]})
    assert config.hooks is not None
    assert config.hooks.of("prestart")[0].path == "/bin/x"


@pytest.mark.parametrize(("hooks", "field"), [
    ([], "hooks"),
    ("prestart", "hooks"),
    ({"prestart": {"path": "/bin/x"}}, "hooks.prestart"),
    ({"futureHook": "oops"}, "hooks.futureHook"),
    ({"createRuntime": ["/bin/x"]}, "hooks.createRuntime[0]"),
    ({"createRuntime": [{}]}, "hooks.createRuntime[0].path"),
    ({"createRuntime": [{"path": "/a"}, {"path": "bin/x"}]}, "hooks.createRuntime[1].path"),
    ({"createRuntime": [{"path": ""}]}, "hooks.createRuntime[0].path"),
    ({"createRuntime": [{"path": 5}]}, "hooks.createRuntime[0].path"),
    ({"createContainer": [{"path": "/a", "args": "a b"}]}, "hooks.createContainer[0].args"),
    ({"createContainer": [{"path": "/a", "args": ["a", 1]}]}, "hooks.createContainer[0].args[1]"),
    ({"startContainer": [{"path": "/a", "env": "A=1"}]}, "hooks.startContainer[0].env"),
    ({"startContainer": [{"path": "/a", "env": ["A=1", 2]}]}, "hooks.startContainer[0].env[1]"),
    ({"startContainer": [{"path": "/a", "env": ["NOEQUALS"]}]}, "hooks.startContainer[0].env[0]"),
    ({"startContainer": [{"path": "/a", "env": ["=value"]}]}, "hooks.startContainer[0].env[0]"),
    ({"poststart": [{"path": "/a"}, {"path": "/a", "timeout": 0}]}, "hooks.poststart[1].timeout"),
    ({"poststart": [{"path": "/a", "timeout": -3}]}, "hooks.poststart[0].timeout"),
    ({"poststop": [{"path": "/a", "timeout": "5"}]}, "hooks.poststop[0].timeout"),
    ({"poststop": [{"path": "/a", "timeout": 1.5}]}, "hooks.poststop[0].timeout"),
    ({"poststop": [{"path": "/a", "timeout": True}]}, "hooks.poststop[0].timeout"),
])
def test_refusal_names_the_field(hooks: Any, field: str) -> None:
    message = refusal(hooks)
    assert message.startswith(f"config.json: {field}: "), message
    assert "\n" not in message
