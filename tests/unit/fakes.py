"""A fake container backend at the pool's seam, for unit tests only."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

from sandbox.server.hardening import MANAGED_LABEL, POOL_LABEL, SANDBOX_UID

POSTURE = {
    "uid": SANDBOX_UID, "euid": SANDBOX_UID, "cap_eff": "0", "cap_prm": "0", "no_new_privs": "1",
    "seccomp": "2", "interfaces": ["lo"], "root_read_only": True, "env": ["PATH"],
    "memory_limit": str(1024 * 1024 * 1024), "pids_limit": "128", "docker_socket": False,
}


class FakeChannel:
    """Answers hello with a posture and every run with a scripted report."""

    def __init__(self, backend: FakeBackend, container_id: str) -> None:
        self.backend = backend
        self.container_id = container_id
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = False

    async def send(self, message: Mapping[str, Any]) -> None:
        if message["op"] == "hello":
            self.replies.put_nowait({"op": "ready", "posture": self.backend.posture, "clean": True})
        elif message["op"] == "run":
            self.backend.runs.append((self.container_id, message["job"]))
            reply = dict(self.backend.run_reply)
            reply.update(op="result", id=message["id"], token=message["token"])
            if "records" in reply:  # the harness signs each record with the run's nonce
                reply["records"] = reply["records"].replace("NONCE", message["job"]["nonce"])
            self.replies.put_nowait(reply)

    async def recv(self) -> dict[str, Any]:
        return await self.replies.get()

    def close(self) -> None:
        self.closed = True

    def on_lost(self, callback: Any) -> None:
        self.backend.lost_callbacks.append(callback)


class FakeBackend:
    """Records every call; containers exist in a dict."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.runs: list[tuple[str, dict[str, Any]]] = []
        self.posture: dict[str, Any] = dict(POSTURE)
        self.inspect_override: dict[str, Any] = {}
        self.run_reply: dict[str, Any] = {
            "exited": True, "exit_code": 0, "signal": None, "timed_out": False, "clean": True, "anomaly": "",
            "records": '{"k": "done", "n": "NONCE"}\n',
        }
        self._ids = itertools.count()
        self.lost_callbacks: list[Any] = []

    async def create(self, name: str, config: Mapping[str, Any]) -> str:
        self.calls.append("create")
        cid = f"c{next(self._ids):04d}" + "0" * 60
        self.containers[cid] = dict(config)
        return cid

    async def inspect(self, container_id: str) -> dict[str, Any]:
        self.calls.append("inspect")
        cfg = self.containers[container_id]
        host = dict(cfg["HostConfig"])
        host.update(self.inspect_override)
        return {"HostConfig": host, "Config": {"User": cfg["User"], "Labels": cfg["Labels"]}, "Mounts": []}

    async def start(self, container_id: str) -> FakeChannel:
        self.calls.append("start")
        return FakeChannel(self, container_id)

    async def remove(self, container_id: str) -> None:
        self.calls.append("remove")
        self.containers.pop(container_id, None)

    async def list_pool(self, pool: str) -> list[str]:
        self.calls.append("list")
        return [
            cid for cid, cfg in self.containers.items()
            if cfg["Labels"].get(MANAGED_LABEL) == "true" and cfg["Labels"].get(POOL_LABEL) == pool
        ]

    async def ping(self) -> bool:
        return True
