"""Container hardening: one place, small named steps, fail closed.

:func:`container_config` builds the create-time configuration from a list of steps,
each adding one isolation property. :func:`verify_inspect` checks what the engine
reports for the created container, and :func:`verify_posture` checks what the agent
reads from inside it; a container with any finding is destroyed and never serves.

PID 1 is the agent itself rather than ``--init``: the kernel ignores signals sent from
inside a PID namespace to its init unless init handles them, so the candidate cannot
kill or stop the agent, and the agent reaps orphans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sandbox.server.settings import Settings

MANAGED_LABEL = "sandbox.managed"
POOL_LABEL = "sandbox.pool"
SANDBOX_UID = 10001
ALLOWED_ENV = frozenset({"PATH", "LANG", "HOME", "HOSTNAME"})

Step = Callable[[dict[str, Any], dict[str, Any], Settings], None]


def _no_network(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    cfg["NetworkDisabled"] = True
    host["NetworkMode"] = "none"


def _read_only_root(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    host["ReadonlyRootfs"] = True


def _scratch_tmpfs(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    host["Tmpfs"] = {"/tmp": f"rw,nosuid,nodev,noexec,size={s.scratch_mb}m,mode=1777"}
    host["ShmSize"] = s.shm_mb * 1024 * 1024


def _no_capabilities(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    host["CapDrop"] = ["ALL"]
    host["CapAdd"] = None


def _no_new_privileges(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    # Docker's default seccomp profile applies when none is named; we keep it.
    host["SecurityOpt"] = ["no-new-privileges:true"]
    host["Privileged"] = False


def _unprivileged_user(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    cfg["User"] = f"{SANDBOX_UID}:{SANDBOX_UID}"


def _memory(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    host["Memory"] = s.container_memory_mb * 1024 * 1024
    host["MemorySwap"] = host["Memory"]  # swap equal to memory: no swap at all
    host["OomKillDisable"] = False


def _pids_and_cpu(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    host["PidsLimit"] = s.container_pids
    host["NanoCpus"] = int(s.container_cpus * 1e9)
    host["Ulimits"] = [{"Name": "core", "Soft": 0, "Hard": 0}]


def _private_namespaces(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    host["IpcMode"] = "private"
    host["PidMode"] = ""
    host["UTSMode"] = ""
    cfg["Hostname"] = "sandbox"


def _environment(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    cfg["Env"] = ["LANG=C.UTF-8", "HOME=/tmp"]


def _no_mounts(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    host["Binds"] = None
    host["Mounts"] = None
    cfg["Volumes"] = None


def _stdio_only(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    # The agent's channel is the attached stdio; nothing is logged on the host.
    cfg.update(AttachStdin=True, AttachStdout=True, AttachStderr=True,
               OpenStdin=True, StdinOnce=False, Tty=False)
    host["LogConfig"] = {"Type": "none", "Config": {}}
    host["AutoRemove"] = False
    host["RestartPolicy"] = {"Name": "no"}


def _runtime(cfg: dict[str, Any], host: dict[str, Any], s: Settings) -> None:
    host["Runtime"] = s.runtime


STEPS: tuple[Step, ...] = (
    _no_network,
    _read_only_root,
    _scratch_tmpfs,
    _no_capabilities,
    _no_new_privileges,
    _unprivileged_user,
    _memory,
    _pids_and_cpu,
    _private_namespaces,
    _environment,
    _no_mounts,
    _stdio_only,
    _runtime,
)


def container_config(settings: Settings, image: str, name: str) -> dict[str, Any]:
    """The Engine API create body for one pool container, every step applied."""
    cfg: dict[str, Any] = {
        "Image": image,
        "Labels": {MANAGED_LABEL: "true", POOL_LABEL: settings.pool_name},
    }
    host: dict[str, Any] = {}
    for step in STEPS:
        step(cfg, host, settings)
    cfg["HostConfig"] = host
    return cfg


def verify_inspect(info: Mapping[str, Any], settings: Settings) -> list[str]:
    """Findings (empty when fine) from ``docker inspect`` of a created container."""
    host = info.get("HostConfig") or {}
    cfg = info.get("Config") or {}
    memory = settings.container_memory_mb * 1024 * 1024
    checks = {
        "network mode is none": host.get("NetworkMode") == "none",
        "root filesystem is read-only": host.get("ReadonlyRootfs") is True,
        "all capabilities dropped": [c.upper() for c in host.get("CapDrop") or []] in (["ALL"], ["CAP_ALL"]),
        "no capability added": not host.get("CapAdd"),
        "no-new-privileges set": any(
            o.replace("=", ":") in ("no-new-privileges:true", "no-new-privileges")
            for o in host.get("SecurityOpt") or []
        ),
        "seccomp not disabled": not any("unconfined" in o for o in host.get("SecurityOpt") or []),
        "not privileged": host.get("Privileged") is False,
        "memory limited": host.get("Memory") == memory,
        "swap equal to memory": host.get("MemorySwap") == memory,
        "pids limited": host.get("PidsLimit") == settings.container_pids,
        "cpu quota set": host.get("NanoCpus") == int(settings.container_cpus * 1e9),
        "no host mounts": not host.get("Binds") and not info.get("Mounts"),
        "scratch is a tmpfs": "/tmp" in (host.get("Tmpfs") or {}),
        "runs as the sandbox user": cfg.get("User") == f"{SANDBOX_UID}:{SANDBOX_UID}",
        "runtime as configured": host.get("Runtime") == settings.runtime,
        "labelled as managed": (cfg.get("Labels") or {}).get(MANAGED_LABEL) == "true",
    }
    return [name for name, ok in checks.items() if not ok]


def verify_posture(posture: Mapping[str, Any], settings: Settings) -> list[str]:
    """Findings from what the agent reads inside the container (runtime-aware).

    Under gVisor, /proc/self/status shows no NoNewPrivs line and ``Seccomp: 0``: gVisor
    emulates /proc, and its own kernel is what seccomp confines on the host.
    """
    findings = []
    if posture.get("uid") in (0, None) or posture.get("euid") in (0, None):
        findings.append("candidate uid is not 0")
    for key in ("cap_eff", "cap_prm"):
        value = str(posture.get(key) or "")
        if not value or int(value, 16) != 0:
            findings.append(f"no {key} capabilities")
    if settings.runtime == "runc":
        if posture.get("no_new_privs") != "1":
            findings.append("NoNewPrivs is 1")
        if posture.get("seccomp") not in ("2",):
            findings.append("seccomp filter is on")
    if set(posture.get("interfaces") or []) - {"lo"}:
        findings.append("only the loopback interface")
    if posture.get("root_read_only") is not True:
        findings.append("root filesystem is read-only")
    if set(posture.get("env") or []) - ALLOWED_ENV:
        findings.append("only allow-listed environment variables")
    if posture.get("docker_socket"):
        findings.append("no Docker socket")
    if settings.runtime == "runc":
        # gVisor's cgroup files are its own emulation; docker inspect covers them there.
        if str(posture.get("memory_limit")) != str(settings.container_memory_mb * 1024 * 1024):
            findings.append("memory limit read back from the cgroup")
        if str(posture.get("pids_limit")) != str(settings.container_pids):
            findings.append("pids limit read back from the cgroup")
    return findings
