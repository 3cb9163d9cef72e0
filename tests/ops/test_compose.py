"""The compose set-up (deploy/compose): valid files, and the pieces wired to one another.

Nothing is started (the images come from a registry this machine cannot reach):
docker-compose validates the compose file, promtool the Prometheus config, and the
tests check that Prometheus scrapes the server's metrics port and that Grafana is
provisioned with that Prometheus and with deploy/grafana/sandbox.json.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.conftest import DEPLOY

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"


def load(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}= not given exactly once in {args}"
    return values[0]


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path, for the service's relative bind mounts."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (COMPOSE_DIR / source).resolve()
    return mounts


def test_compose_file_is_valid(compose_bin: Path) -> None:
    """docker-compose accepts the file (schema, references, interpolation)."""
    out = subprocess.run(
        [str(compose_bin), "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr


def test_compose_validation_can_fail(compose_bin: Path, tmp_path: Path) -> None:
    """The same check rejects a misspelt option, so a pass above means something."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("privileged: true", "privilegd: true", 1))
    out = subprocess.run(
        [str(compose_bin), "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0


def test_prometheus_config_is_valid(promtool_bin: Path) -> None:
    """promtool accepts the Prometheus configuration."""
    out = subprocess.run(
        [str(promtool_bin), "check", "config", str(COMPOSE_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_scrapes_the_servers_metrics_port() -> None:
    """The scrape target is the server service on the port of its --metrics-listen."""
    services = load(COMPOSE_FILE)["services"]
    port = flag(services["server"]["command"], "metrics-listen").rpartition(":")[2]
    config = load(COMPOSE_DIR / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"server:{port}" in targets
    assert bind_mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == (COMPOSE_DIR / "prometheus.yml")


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    """Grafana gets the compose Prometheus as default data source and loads deploy/grafana/sandbox.json."""
    services = load(COMPOSE_FILE)["services"]
    mounts = bind_mounts(services["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == COMPOSE_DIR / "grafana" / "provisioning"

    datasources = load(provisioning / "datasources" / "prometheus.yml")["datasources"]
    (prometheus,) = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus["isDefault"] is True
    assert prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in services

    (provider,) = load(provisioning / "dashboards" / "sandbox.yml")["providers"]
    dashboards_in_container = provider["options"]["path"]
    host_dir = mounts[dashboards_in_container]
    dashboard = json.loads((host_dir / "sandbox.json").read_text())
    assert dashboard["uid"] == "sandbox-service"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in_container}/sandbox.json"


def test_server_reaches_its_own_engine_never_the_hosts_socket() -> None:
    """The server talks to the DinD service over a shared volume; no service mounts /var/run/docker.sock."""
    services = load(COMPOSE_FILE)["services"]
    for name, service in services.items():
        for spec in service.get("volumes", []):
            assert "docker.sock" not in spec.split(":")[0], f"{name} mounts a host Docker socket"
    socket = flag(services["dind"]["command"], "host")
    assert services["server"]["environment"]["DOCKER_HOST"] == socket
    socket_dir = socket.removeprefix("unix://").rsplit("/", 1)[0]
    shared = {v.split(":")[0] for v in services["dind"]["volumes"] if v.split(":")[1] == socket_dir}
    assert shared & {v.split(":")[0] for v in services["server"]["volumes"] if v.split(":")[1] == socket_dir}
    assert flag(services["dind"]["command"], "group") in services["server"]["group_add"]


@pytest.mark.parametrize("service", ["server", "prometheus", "grafana"])
def test_published_ports_are_loopback_only(service: str) -> None:
    """Nothing is published beyond 127.0.0.1: the gRPC port runs untrusted code on request."""
    for spec in load(COMPOSE_FILE)["services"][service].get("ports", []):
        assert str(spec).startswith("127.0.0.1:"), spec
