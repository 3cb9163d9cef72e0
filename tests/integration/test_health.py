"""`sandbox serve`: health says NOT_SERVING until the pool is warm, reflection works, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from sandbox.client import Client
from tests.conftest import he_request, pool_containers, unique_pool_name

pytestmark = pytest.mark.integration

SANDBOX = str(Path(sys.executable).with_name("sandbox"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(target: str) -> int | None:
    with grpc.insecure_channel(target) as channel:
        try:
            return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status)
        except grpc.RpcError:
            return None


def test_serve_reports_health_after_warm_up_answers_reflection_and_drains_on_sigterm(
    engine: docker.DockerClient, tmp_path: Path
) -> None:
    """The health service says NOT_SERVING (or the port is closed) until the pool is warm,
    then SERVING; reflection lists sandbox.v1.Sandbox (what grpcurl uses); SIGTERM ends
    the server with exit status 0 and removes every container of its pool."""
    port = _free_port()
    pool = unique_pool_name("serve")
    target = f"127.0.0.1:{port}"
    env = dict(os.environ, SANDBOX_LOG_FORMAT="json")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [SANDBOX, "serve", "--listen", target, "--pool-name", pool, "--pool-size", "2"],
        stdout=subprocess.DEVNULL, stderr=log, env=env,
    )
    seen: list[int | None] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = _status(target)
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(0.05)
        assert seen[-1] == health_pb2.HealthCheckResponse.SERVING, f"health states seen: {seen}"
        assert seen[0] in (None, health_pb2.HealthCheckResponse.NOT_SERVING), f"first answer {seen[0]}"
        assert len(pool_containers(engine, pool)) == 2

        with grpc.insecure_channel(target) as channel:
            services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "sandbox.v1.Sandbox" in services and "grpc.health.v1.Health" in services

        with Client(target) as client:
            assert client.execute(he_request("def f(x):\n    return x + 1\n")).passed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert pool_containers(engine, pool) == []
