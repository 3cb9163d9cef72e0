"""Fixtures of the escape tier."""

from __future__ import annotations

import pytest

from tests.conftest import Sandbox


@pytest.fixture
def box(any_sandbox: Sandbox) -> Sandbox:
    """The sandbox of the runtime under test, settled (full, idle, no stray container)."""
    any_sandbox.settle()
    return any_sandbox
