"""Settings from one mapping, and the hardening schema that fails closed."""

from __future__ import annotations

import pytest

from sandbox.errors import InvalidRequestError
from sandbox.server.hardening import SANDBOX_UID, container_config, verify_inspect, verify_posture
from sandbox.server.settings import Settings


def test_settings_from_env_and_overrides() -> None:
    """SANDBOX_* variables are read, typed, and flags override them."""
    s = Settings.from_env({"SANDBOX_POOL_SIZE": "7", "SANDBOX_RUNTIME": "runsc"}, runtime="runc")
    assert s.pool_size == 7 and s.runtime == "runc"


def test_settings_reject_bad_values() -> None:
    """A wrong value is an error that names the variable."""
    with pytest.raises(InvalidRequestError, match="SANDBOX_POOL_SIZE"):
        Settings.from_env({"SANDBOX_POOL_SIZE": "many"})
    with pytest.raises(InvalidRequestError, match="runtime"):
        Settings.from_env({}, runtime="kata")


def test_request_memory_bound_follows_container_memory() -> None:
    """A request may not ask for more memory than a container has, minus the agent's share."""
    s = Settings.from_env({}, container_memory_mb=768)
    assert s.bounds.max_memory_mb == 704


def _inspect_of(settings: Settings) -> dict[str, object]:
    """What docker inspect reports for a container created from our config."""
    cfg = container_config(settings, "img", "name")
    host = dict(cfg["HostConfig"])
    return {"HostConfig": host, "Config": {"User": cfg["User"], "Labels": cfg["Labels"]}, "Mounts": []}


def test_config_carries_every_isolation_item() -> None:
    """The create body has each isolation property of the design, secure by default."""
    s = Settings()
    cfg = container_config(s, "img", "n")
    host = cfg["HostConfig"]
    assert host["NetworkMode"] == "none" and cfg["NetworkDisabled"] is True
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] == host["MemorySwap"] == s.container_memory_mb * 1024 * 1024
    assert host["PidsLimit"] == s.container_pids
    assert host["NanoCpus"] == int(s.container_cpus * 1e9)
    assert "/tmp" in host["Tmpfs"] and "noexec" in host["Tmpfs"]["/tmp"]
    assert not host["Binds"] and not host["Mounts"]
    assert cfg["User"] == f"{SANDBOX_UID}:{SANDBOX_UID}"
    assert cfg["Labels"] == {"sandbox.managed": "true", "sandbox.pool": "default"}
    assert host["LogConfig"]["Type"] == "none"
    assert verify_inspect(_inspect_of(s), s) == []


@pytest.mark.parametrize(
    ("key", "value", "finding"),
    [
        ("NetworkMode", "bridge", "network mode is none"),
        ("ReadonlyRootfs", False, "root filesystem is read-only"),
        ("CapAdd", ["SYS_ADMIN"], "no capability added"),
        ("Privileged", True, "not privileged"),
        ("MemorySwap", -1, "swap equal to memory"),
        ("Binds", ["/var/run/docker.sock:/var/run/docker.sock"], "no host mounts"),
        ("SecurityOpt", ["seccomp=unconfined"], "no-new-privileges set"),
        ("Runtime", "runsc", "runtime as configured"),
    ],
)
def test_verify_inspect_finds_each_deviation(key: str, value: object, finding: str) -> None:
    """A container that came up differently from its config is reported, by name."""
    s = Settings()
    info = _inspect_of(s)
    info["HostConfig"][key] = value  # type: ignore[index]
    assert finding in verify_inspect(info, s)


GOOD_POSTURE = {
    "uid": 10001, "euid": 10001, "cap_eff": "0000000000000000", "cap_prm": "0000000000000000",
    "no_new_privs": "1", "seccomp": "2", "interfaces": ["lo"], "root_read_only": True,
    "env": ["HOME", "HOSTNAME", "LANG", "PATH"], "memory_limit": str(1024 * 1024 * 1024),
    "pids_limit": "128", "docker_socket": False,
}


def test_posture_good_is_clean_and_each_deviation_is_named() -> None:
    """The posture check accepts the real thing and names every check that fails."""
    s = Settings()
    assert verify_posture(GOOD_POSTURE, s) == []
    cases = {
        "uid": (0, "candidate uid is not 0"),
        "cap_eff": ("00000000a80425fb", "no cap_eff capabilities"),
        "no_new_privs": ("0", "NoNewPrivs is 1"),
        "seccomp": ("0", "seccomp filter is on"),
        "interfaces": (["lo", "eth0"], "only the loopback interface"),
        "root_read_only": (False, "root filesystem is read-only"),
        "env": (["PATH", "AWS_SECRET_ACCESS_KEY"], "only allow-listed environment variables"),
        "docker_socket": (True, "no Docker socket"),
        "pids_limit": ("max", "pids limit read back from the cgroup"),
        "memory_limit": ("9223372036854771712", "memory limit read back from the cgroup"),
    }
    for key, (value, finding) in cases.items():
        assert finding in verify_posture({**GOOD_POSTURE, key: value}, s), key


def test_posture_under_runsc_knows_gvisor_proc() -> None:
    """gVisor shows no NoNewPrivs line and Seccomp 0; that is not a finding under runsc."""
    s = Settings(runtime="runsc")
    assert verify_posture({**GOOD_POSTURE, "no_new_privs": "", "seccomp": "0"}, s) == []
    assert "NoNewPrivs is 1" in verify_posture({**GOOD_POSTURE, "no_new_privs": ""}, Settings())
