"""The soak tool's quick mode (bench/soak.py --quick), run in-process against embedded
servers: about 500 mixed requests, a tenth of them hostile, at and above capacity."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import docker
import pytest

pytestmark = pytest.mark.integration

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def load_soak() -> ModuleType:
    """bench/soak.py as a module (bench/ is a folder of scripts, not a package)."""
    if "sandbox_soak" in sys.modules:
        return sys.modules["sandbox_soak"]
    spec = importlib.util.spec_from_file_location("sandbox_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
def test_quick_soak_loses_nothing_judges_right_and_leaks_nothing(engine: docker.DockerClient) -> None:
    """At capacity and above it (a queue of 4 for 32 in flight), with fork bombs, memory
    bombs, floods, early exits, orphans, fd exhaustion and disk fills among benign runs:
    every request has exactly one final answer, no failing or hostile program passes and
    every passing one passes, overload is refused with RESOURCE_EXHAUSTED, and afterwards
    no container, process, descriptor or disk space is left behind."""
    soak = load_soak()
    report = soak.run(soak.parse(["--quick"]), say=lambda _: None)
    text = report.text()
    counts = report.counts()
    assert counts["runs"] == 500, text
    assert (counts["lost"], counts["wrong"], counts["leaked"], counts["failed_checks"]) == (0, 0, 0, 0), text
    hostile = sum(s.hostile for s in report.scenarios)
    assert hostile == 50, text
    above = next(s for s in report.scenarios if s.name == "above")
    assert above.answers["RESOURCE_EXHAUSTED"] > 0, text
    assert report.ok, text
