"""linux.seccomp parsing: what is accepted, and every refusal names its field."""

from __future__ import annotations

import copy
import sys
from typing import Any

import pytest

from minirun.errors import ConfigError
from minirun.log import logger
from minirun.spec.default import default_spec
from minirun.spec.load import NOT_YET_SUPPORTED, parse_config
from minirun.spec.seccomp import (
    SUPPORTED_ACTIONS,
    SUPPORTED_ARCHES,
    SUPPORTED_FLAGS,
    SUPPORTED_OPERATORS,
    Seccomp,
)


def parse(seccomp: Any) -> Seccomp:
    config = copy.deepcopy(default_spec())
    config["linux"]["seccomp"] = seccomp
    parsed = parse_config(config, "/bundle").linux.seccomp
    assert parsed is not None
    return parsed


def refusal(seccomp: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(seccomp)
    return str(info.value)


def test_absent_seccomp_is_none_and_no_longer_refused() -> None:
    assert "linux.seccomp" not in NOT_YET_SUPPORTED
    assert parse_config(copy.deepcopy(default_spec()), "/bundle").linux.seccomp is None


def test_full_profile_is_parsed() -> None:
    sc = parse({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/run/agent.sock", "listenerMetadata": "meta",
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 5},
        ],
    })
    assert (sc.default_action, sc.default_errno_ret) == ("SCMP_ACT_ERRNO", 38)
    assert sc.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert sc.flags == ["SECCOMP_FILTER_FLAG_LOG"]
    assert (sc.listener_path, sc.listener_metadata) == ("/run/agent.sock", "meta")
    assert [r.names for r in sc.syscalls] == [["read", "write"], ["personality"], ["mkdir"], ["ptrace"]]
    arg = sc.syscalls[1].args[0]
    assert (arg.index, arg.value, arg.value_two, arg.op) == (0, 8, 0, "SCMP_CMP_EQ")
    assert sc.syscalls[3].errno_ret == 5
    assert sc.uses_notify()
    assert sc.syscalls[1].where == "linux.seccomp.syscalls[1]"


@pytest.mark.parametrize("action", SUPPORTED_ACTIONS)
def test_every_supported_action_is_accepted(action: str) -> None:
    extra = {"listenerPath": "/x.sock"} if action == "SCMP_ACT_NOTIFY" else {}
    assert parse({"defaultAction": "SCMP_ACT_ALLOW", **extra,
                  "syscalls": [{"names": ["getpid"], "action": action}]}).syscalls[0].action == action


def test_every_supported_operator_arch_and_flag_is_accepted() -> None:
    sc = parse({"defaultAction": "SCMP_ACT_ALLOW", "architectures": list(SUPPORTED_ARCHES),
                "flags": list(SUPPORTED_FLAGS),
                "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_LOG",
                              "args": [{"index": 1, "value": 1, "op": op}]} for op in SUPPORTED_OPERATORS]})
    assert [r.args[0].op for r in sc.syscalls] == list(SUPPORTED_OPERATORS)


def test_unknown_syscall_names_are_skipped_with_a_debug_line(capsys: pytest.CaptureFixture[str]) -> None:
    logger.configure(None, "text", debug=True)
    try:
        sc = parse({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["getpid", "minirun_no_such_call"], "action": "SCMP_ACT_ERRNO"}]})
    finally:
        logger.configure(None, "text", debug=False)
    assert sc.syscalls[0].names == ["getpid"]
    err = capsys.readouterr().err
    assert "level=debug" in err and "minirun_no_such_call" in err and "linux.seccomp.syscalls[0]" in err


@pytest.mark.parametrize(("seccomp", "field", "problem"), [
    ({}, "linux.seccomp.defaultAction", "required"),
    ("allow", "linux.seccomp", "must be an object"),
    ({"defaultAction": "SCMP_ACT_FOO"}, "linux.seccomp.defaultAction", 'unknown action "SCMP_ACT_FOO"'),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}, "linux.seccomp.defaultAction",
     "cannot be the default action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}, "linux.seccomp.defaultErrnoRet",
     "only valid with SCMP_ACT_ERRNO"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}, "linux.seccomp.defaultErrnoRet", "out of range"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}, "linux.seccomp.architectures[0]",
     'unknown architecture "SCMP_ARCH_Z80"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_LOONGARCH64"]},
     "linux.seccomp.architectures[0]", "not supported by the libseccomp"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_FOO"]},
     "linux.seccomp.flags[1]", 'unknown flag "SECCOMP_FILTER_FLAG_FOO"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
     "linux.seccomp.flags[0]", "not supported by the libseccomp"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.listenerPath", "required when a rule's action is SCMP_ACT_NOTIFY"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
      "syscalls": [{"names": ["mkdir", "sendmsg"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0].names[1]", "cannot be SCMP_ACT_NOTIFY"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names", "required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names", "at least one"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW"},
                                                      {"names": ["b"], "action": "SCMP_ACT_BAR"}]},
     "linux.seccomp.syscalls[1].action", 'unknown action "SCMP_ACT_BAR"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_KILL",
                                                       "errnoRet": 1}]},
     "linux.seccomp.syscalls[0].errnoRet", "only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                                                       "errnoRet": 70000}]},
     "linux.seccomp.syscalls[0].errnoRet", "out of range"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index", "out of range [0, 5]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_X"}]}]},
     "linux.seccomp.syscalls[0].args[0].op", 'unknown operator "SCMP_CMP_X"'),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 0, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].value", "required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].value", "out of range"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": 5}, "linux.seccomp.listenerPath", "must be a string"),
])
def test_refusals_name_the_field(seccomp: Any, field: str, problem: str) -> None:
    message = refusal(seccomp)
    assert f"config.json: {field}: " in message, message
    assert problem in message, message


# --- compiling (libseccomp builds the filter in memory; loading it is left to the integration tests) ---


def test_a_full_profile_compiles() -> None:
    from minirun.linux.seccomp import compile_filter

    flt = compile_filter(parse({
        "defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": list(SUPPORTED_FLAGS), "listenerPath": "/x.sock",
        "syscalls": [
            {"names": ["read", "write", "socketcall"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},  # the default action itself: skipped
            {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 3},
            # two conditions on one argument: one libseccomp rule cannot say that
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},
                      {"index": 1, "value": 0, "op": "SCMP_CMP_NE"}]},
        ],
    }))
    assert flt.notify


def test_condition_sets_and_only_split_repeated_indexes() -> None:
    from minirun.linux.seccomp import _condition_sets
    from minirun.spec.seccomp import ArgRule

    a, b, c = ArgRule(0, 1, "SCMP_CMP_EQ"), ArgRule(1, 2, "SCMP_CMP_EQ"), ArgRule(0, 3, "SCMP_CMP_EQ")
    assert _condition_sets([a, b]) == [[a, b]]
    assert _condition_sets([a, c]) == [[a], [c]]
    assert _condition_sets([]) == [[]]


def test_action_values_carry_the_errno() -> None:
    from minirun.linux.seccomp import action_value
    from minirun.linux.syscalls import shim

    lib = shim().lib
    assert action_value("SCMP_ACT_ERRNO", None) == lib.mr_scmp_act_errno(1)
    assert action_value("SCMP_ACT_ERRNO", 38) == lib.mr_scmp_act_errno(38)
    assert action_value("SCMP_ACT_TRACE", None) == lib.mr_scmp_act_trace(1)
    assert action_value("SCMP_ACT_KILL", None) == lib.SCMP_ACT_KILL_THREAD


def test_architectures_of_the_other_byte_order_are_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    logger.configure(None, "text", debug=True)
    try:
        sc = parse({"defaultAction": "SCMP_ACT_ALLOW", "architectures": list(SUPPORTED_ARCHES)})
    finally:
        logger.configure(None, "text", debug=False)
    if sys.byteorder == "little":
        assert "SCMP_ARCH_X86_64" in sc.architectures and "SCMP_ARCH_S390X" not in sc.architectures
        assert "SCMP_ARCH_S390X" in capsys.readouterr().err
    from minirun.linux.seccomp import compile_filter

    compile_filter(sc)
