"""The container's process: how args, env, cwd, user, umask, rlimits and oomScoreAdj reach it.

Everything is observed from inside a real container (the probe's JSON or a shell's output) or on the
host (exit status, stderr, what is left behind).
"""

from __future__ import annotations

import copy
import os
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOTFS, Result, Runtime

RLIM_INFINITY_JSON = 2**64 - 1


def write_script(path: Path, text: str, mode: int = 0o755) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def with_args(config: dict[str, Any], *args: str) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    cfg["process"]["args"] = list(args)
    return cfg


def run_bundle(runtime: Runtime, config: dict[str, Any], cid: str, env: dict[str, str] | None = None) -> Result:
    bundle = runtime.bundle(config)
    return runtime.cmd("run", "--bundle", str(bundle), cid, env=env)


def state_dirs(runtime: Runtime) -> list[str]:
    return sorted(os.listdir(runtime.root)) if runtime.root.is_dir() else []


# --- args and PATH -----------------------------------------------------------------------------------


def test_args_are_looked_up_in_the_containers_path_not_the_hosts(
        runtime: Runtime, rootfs_copy: Path, host_unchanged: None) -> None:
    # The container has the program only in /opt/cbin (a directory the host's PATH never names); an
    # earlier PATH entry holds a non-executable file of the same name, which must be skipped. The
    # runtime itself runs with a PATH whose first entry holds a host program of the same name.
    write_script(rootfs_copy / "opt" / "noexec" / "whereami", "#!/bin/sh\necho not-executable\n", 0o644)
    write_script(rootfs_copy / "opt" / "cbin" / "whereami", "#!/bin/sh\necho container-opt-cbin\n")
    host_bin = Path(tempfile.mkdtemp(prefix="minirun-test-hostbin-"))
    try:
        write_script(host_bin / "whereami", "#!/bin/sh\necho host\n")
        cfg = with_args(runtime.config, "whereami")
        cfg["root"]["path"] = str(rootfs_copy)
        cfg["process"]["env"] = ["PATH=/opt/noexec:/opt/cbin:/bin"]
        host_env = {**os.environ, "PATH": f"{host_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        result = run_bundle(runtime, cfg, "minirun-test-path", env=host_env)
    finally:
        shutil.rmtree(host_bin, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "container-opt-cbin\n"


def test_args_with_a_slash_are_not_looked_up_in_path(runtime: Runtime, host_unchanged: None) -> None:
    cfg = with_args(runtime.config, "/bin/echo", "absolute", "args kept")
    cfg["process"]["env"] = ["PATH=/nonexistent"]
    result = runtime.run(cfg)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "absolute args kept\n"


# --- env ---------------------------------------------------------------------------------------------


def test_env_is_passed_exactly_without_the_runtimes_environment(runtime: Runtime, host_unchanged: None) -> None:
    env = ["PATH=/usr/bin:/bin", "SPACES=a b  c", "EMPTY=", "EQUALS=x=y=z", "HOME=/custom/home"]
    cfg = with_args(runtime.config, "/usr/bin/probe", "facts")
    cfg["process"]["env"] = env
    result = run_bundle(runtime, cfg, "minirun-test-env",
                        env={**os.environ, "MINIRUN_TEST_LEAK": "from-the-host"})
    assert result.returncode == 0, result.stderr
    assert result.json()["env"] == env


@pytest.mark.parametrize(("uid", "gid", "home"), [(0, 0, "/root"), (1000, 1000, "/home/user"), (4242, 4242, "/")])
def test_home_comes_from_the_containers_passwd_when_not_set(
        runtime: Runtime, host_unchanged: None, uid: int, gid: int, home: str) -> None:
    env = ["PATH=/usr/bin:/bin", "TERM=xterm"]
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["env"] = env
    cfg["process"]["user"] = {"uid": uid, "gid": gid}
    facts = runtime.probe("facts", config=cfg)
    assert facts["uid"] == uid
    assert [e for e in facts["env"] if not e.startswith("HOME=")] == env
    assert [e for e in facts["env"] if e.startswith("HOME=")] == [f"HOME={home}"]


def test_home_is_read_from_the_containers_passwd_not_the_hosts(
        runtime: Runtime, rootfs_copy: Path, host_unchanged: None) -> None:
    passwd = rootfs_copy / "etc" / "passwd"
    passwd.write_text(passwd.read_text().replace("root:x:0:0:root:/root:", "root:x:0:0:root:/container-home:"))
    cfg = copy.deepcopy(runtime.config)
    cfg["root"]["path"] = str(rootfs_copy)
    cfg["process"]["env"] = ["PATH=/bin"]
    facts = runtime.probe("facts", config=cfg)
    assert facts["env"] == ["PATH=/bin", "HOME=/container-home"]


# --- cwd ---------------------------------------------------------------------------------------------


def test_cwd_is_set(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["cwd"] = "/home/user"
    assert runtime.probe("facts", config=cfg)["cwd"] == "/home/user"


def test_cwd_is_created_when_missing(runtime: Runtime, host_unchanged: None) -> None:
    # Created inside a tmpfs so that the shared rootfs is never written to.
    cfg = copy.deepcopy(runtime.config)
    cfg["mounts"].append({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]})
    cfg["process"]["cwd"] = "/mnt/made/by/minirun"
    cfg["process"]["args"] = ["/bin/sh", "-c", "pwd; test -d /mnt/made/by/minirun && echo is-a-dir"]
    result = runtime.run(cfg)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/mnt/made/by/minirun\nis-a-dir\n"
    assert not (ROOTFS / "mnt" / "made").exists()


# --- user, groups, umask -----------------------------------------------------------------------------


def test_user_uid_gid_and_additional_gids_are_exactly_applied(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [100, 5, 65534]}
    facts = runtime.probe("facts", config=cfg)
    assert (facts["uid"], facts["euid"], facts["gid"], facts["egid"]) == (1000, 1000, 1000, 1000)
    assert sorted(facts["groups"]) == [5, 100, 65534]


def test_root_without_additional_gids_has_no_supplementary_groups(runtime: Runtime, host_unchanged: None) -> None:
    # The runtime runs as root with whatever groups the host gave it; none of them may leak in.
    facts = runtime.probe("facts")
    assert (facts["uid"], facts["gid"]) == (0, 0)
    assert facts["groups"] == []


def test_umask_defaults_to_0022(runtime: Runtime, host_unchanged: None) -> None:
    old = os.umask(0o077)  # the runtime's own umask must not be what the container gets
    try:
        facts = runtime.probe("facts")
    finally:
        os.umask(old)
    assert facts["umask"] == 0o022


def test_configured_umask_is_applied(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "umask": 0o027}
    assert runtime.probe("facts", config=cfg)["umask"] == 0o027


# --- rlimits -----------------------------------------------------------------------------------------


def test_rlimits_are_applied_soft_and_hard(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
        {"type": "RLIMIT_CORE", "soft": 1024, "hard": 4096},
        {"type": "RLIMIT_FSIZE", "soft": 1 << 20, "hard": RLIM_INFINITY_JSON},
        {"type": "RLIMIT_NPROC", "soft": 777, "hard": 888},
    ]
    rlimits = runtime.probe("facts", config=cfg)["rlimits"]
    assert rlimits["nofile"] == [123, 456]
    assert rlimits["core"] == [1024, 4096]
    assert rlimits["fsize"] == [1 << 20, -1]
    assert rlimits["nproc"] == [777, 888]


def test_raising_a_hard_rlimit_fails_with_a_one_line_message_naming_the_field(
        runtime: Runtime, host_unchanged: None) -> None:
    current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert current_hard != resource.RLIM_INFINITY
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["rlimits"] = [
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_NOFILE", "soft": 64, "hard": current_hard + 1},
    ]
    result = runtime.run(cfg)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "process.rlimits[1]" in lines[0]
    assert "refuses to raise a hard limit" in lines[0]
    assert state_dirs(runtime) == []


# --- oomScoreAdj -------------------------------------------------------------------------------------


def test_oom_score_adj_is_applied(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["oomScoreAdj"] = 321
    assert runtime.probe("facts", config=cfg)["oom_score_adj"] == 321


def test_oom_score_adj_unset_is_inherited_from_the_runtime(runtime: Runtime, host_unchanged: None) -> None:
    own = int(Path("/proc/self/oom_score_adj").read_text())
    cfg = copy.deepcopy(runtime.config)
    cfg["process"].pop("oomScoreAdj", None)
    assert runtime.probe("facts", config=cfg)["oom_score_adj"] == own


# --- exec failures and exit status -------------------------------------------------------------------


def test_executable_not_found_exits_127_with_runcs_message(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.run(with_args(runtime.config, "nosuchcmd"))
    assert result.returncode == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in result.stderr
    assert result.stdout == ""
    assert state_dirs(runtime) == []


def test_absolute_executable_not_found_exits_127(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.run(with_args(runtime.config, "/no/such/program"))
    assert result.returncode == 127
    assert 'exec: "/no/such/program"' in result.stderr
    assert state_dirs(runtime) == []


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc"])
def test_non_executable_file_exits_126(runtime: Runtime, host_unchanged: None, path: str) -> None:
    result = runtime.run(with_args(runtime.config, path))
    assert result.returncode == 126, result.stderr
    assert f'exec: "{path}"' in result.stderr
    assert result.stdout == ""
    assert state_dirs(runtime) == []


@pytest.mark.parametrize("status", [0, 3, 255])
def test_foreground_run_returns_the_process_exit_status(runtime: Runtime, host_unchanged: None, status: int) -> None:
    result = runtime.run(with_args(runtime.config, "/bin/sh", "-c", f"echo before-exit; exit {status}"))
    assert result.returncode == status, result.stderr
    assert result.stdout == "before-exit\n"
    assert state_dirs(runtime) == []
