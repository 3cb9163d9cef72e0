"""The Grafana dashboard (deploy/grafana/sandbox.json): its shape, and its queries against real data.

The static tests read the JSON only. The integration tests (marked) share one scenario,
run once by the ``observed`` fixture: a :class:`~sandbox.server.app.EmbeddedServer` with
a warm pool on the local engine; passing, failing, timing-out and refused requests
through the real client; faults injected through the engine (containers killed under a
running request, one container removed while it starts); a real Prometheus (Debian's)
scraping the metrics port every second; and then every PromQL expression of the
dashboard, with Grafana's variables substituted, sent to Prometheus's HTTP API. Each
must parse and return data. Two strict xfails record what the metrics cannot show yet;
they fail (XPASS) once the server is fixed, to be turned into plain tests.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest

from sandbox.client import NO_RETRY, Client
from sandbox.domain import ExecuteRequest, HumanEvalTests, RunResult, Status
from sandbox.limits import Limits
from sandbox.server.metrics import Metrics
from tests.conftest import unique_pool_name

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sandbox.json"

# What Grafana would put in place of its variables. The rate window is wide enough to
# hold the whole workload of the integration test, so a rate over it sees every
# increase the test caused; "All" of a multi-value variable is its allValue.
GRAFANA_VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "15s",
    "__range": "5m",
    "instance": ".*",
}

_PROXYLESS = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- reading the dashboard


def load_dashboard() -> dict[str, Any]:
    with DASHBOARD.open() as f:
        return dict(json.load(f))


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every Prometheus target."""
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def substitute(expr: str, variables: dict[str, str] = GRAFANA_VARIABLES) -> str:
    """``expr`` with ``$name``, ``${name}`` and ``[[name]]`` replaced; fails on an unknown variable."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in variables:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)


def metric_names(expr: str) -> set[str]:
    """The sandbox_* metric names an expression reads (label values in quotes excluded)."""
    return set(re.findall(r"\bsandbox_\w+", re.sub(r'"[^"]*"', '""', expr)))


def exposed_names(metrics: Metrics) -> dict[str, set[str]]:
    """Metric family -> the series names Prometheus sees for it."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name: {family.name + s for s in suffixes[family.type]} for family in metrics.registry.collect()}


# -- static checks


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    """No panel is pinned to one data source: all go through ${datasource}, a Prometheus variable."""
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    for panel in iter_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == wanted, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == wanted, (panel["title"], target["refId"])
    assert variables["instance"]["datasource"] == wanted


def test_every_metric_of_the_server_is_on_the_dashboard() -> None:
    """Each family defined in sandbox/server/metrics.py is queried by at least one panel."""
    used = set().union(*(metric_names(expr) for _, _, expr in queries(load_dashboard())))
    missing = [family for family, names in exposed_names(Metrics()).items() if not names & used]
    assert not missing, f"metrics with no panel: {missing}"


def test_expressions_name_only_metrics_the_server_exposes() -> None:
    """A misspelt metric name is caught without Prometheus: every sandbox_* name exists."""
    known = set().union(*exposed_names(Metrics()).values())
    for title, ref, expr in queries(load_dashboard()):
        unknown = metric_names(expr) - known
        assert not unknown, f"{title} {ref}: {unknown}"


def test_the_panels_the_brief_asks_for_are_there() -> None:
    """Throughput, latency percentiles, saturation, errors, churn and gRPC codes each have a panel."""
    titles = {p["title"] for p in iter_panels(load_dashboard())}
    for wanted in (
        "Throughput by status",
        "Run duration percentiles",
        "Queue wait percentiles",
        "Queue depth",
        "Runs in flight",
        "Pool containers by state",
        "Sandbox errors by kind",
        "Container starts and recycles",
        "Container start failures",
        "gRPC requests by method and code",
    ):
        assert wanted in titles
    percentiles = {
        float(q) for _, _, expr in queries(load_dashboard()) for q in re.findall(r"histogram_quantile\(([\d.]+)", expr)
    }
    assert {0.5, 0.9, 0.99} <= percentiles


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Grafana renders the grid as written: ids unique, within 24 columns, no two panels on one cell."""
    panels = list(iter_panels(load_dashboard()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_substitution_replaces_grafana_variables_and_refuses_unknown_ones() -> None:
    """The helper the integration test relies on: known variables replaced, unknown ones an error."""
    assert substitute('rate(x{instance=~"$instance"}[$__rate_interval])') == 'rate(x{instance=~".*"}[5m])'
    assert substitute("${instance} [[instance]]") == ".* .*"
    with pytest.raises(KeyError):
        substitute("rate(x[$__nope])")


# -- the integration tests


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


class Prometheus:
    """A Prometheus server on loopback with its own config and storage, killed on exit."""

    def __init__(self, binary: Path, workdir: Path, scrape_target: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: sandbox\n"
            f"    static_configs:\n      - targets: ['{scrape_target}']\n"
        )
        self._argv = [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(self._argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_for("Prometheus to be ready", self._ready, 30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self._proc.returncode}: {self.log()}")
        try:
            with _PROXYLESS.open(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data`` on success, raises with Prometheus's error otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with _PROXYLESS.open(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                body = json.load(exc)
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def last_scrape(self) -> float:
        """Time of the newest sample of the sandbox target (0 before the first scrape)."""
        result = self.query('timestamp(up{job="sandbox"} == 1)')
        return float(result[0]["value"][1]) if result else 0.0


class CreateSaboteur:
    """Removes the next ``n`` pool containers the server creates, as they start.

    Watches the engine's create events for the pool's label on a thread and removes the
    container at once, while the pool is still inspecting, starting or greeting it: the
    start fails on the engine side, which the server must count as a start failure.
    """

    def __init__(self, docker_client: Any, pool: str) -> None:
        self._docker = docker_client
        self._remaining = 0
        self._lock = threading.Lock()
        self._events = docker_client.events(
            decode=True, filters={"type": "container", "event": "create", "label": f"sandbox.pool={pool}"}
        )
        self._thread = threading.Thread(target=self._watch, name="create-saboteur", daemon=True)
        self._thread.start()

    def arm(self, n: int) -> None:
        with self._lock:
            self._remaining = n

    def _watch(self) -> None:
        try:
            for event in self._events:
                with self._lock:
                    if self._remaining <= 0:
                        continue
                    self._remaining -= 1
                try:
                    self._docker.api.remove_container(event["id"], force=True)
                except Exception:  # noqa: BLE001 - gone already is as good as removed
                    pass
        except Exception:  # noqa: BLE001 - the stream ends when close() cuts it
            return

    def close(self) -> None:
        self._events.close()
        self._thread.join(timeout=10)


def _sample_sum(metrics: Metrics, name: str) -> float:
    return sum(
        sample.value for family in metrics.registry.collect() for sample in family.samples if sample.name == name
    )


def _request(program: str, test: str, entry_point: str = "add", timeout_s: float = 10.0) -> ExecuteRequest:
    return ExecuteRequest(
        program=program, tests=HumanEvalTests(test=test, entry_point=entry_point), limits=Limits(timeout_s=timeout_s)
    )


CHECK_ADD = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
PASSING = _request("def add(a, b):\n    return a + b\n", CHECK_ADD)
FAILING = _request("def add(a, b):\n    return a - b\n", CHECK_ADD)
HANGING = _request("def add(a, b):\n    while True:\n        pass\n", CHECK_ADD, timeout_s=1.0)
SLEEPING = _request("import time\n\ndef add(a, b):\n    time.sleep(30)\n    return a + b\n", CHECK_ADD, timeout_s=60.0)
TOO_LONG = _request("def add(a, b):\n    return a + b\n", CHECK_ADD, timeout_s=100_000.0)


def _workload(client: Client) -> list[RunResult]:
    """Passing, failing and timing-out runs, a refused request, and one stream."""
    results = [client.execute(PASSING, timeout_s=60) for _ in range(3)]
    results += [client.execute(FAILING, timeout_s=60) for _ in range(2)]
    results += [client.execute(HANGING, timeout_s=60) for _ in range(2)]
    with pytest.raises(grpc.RpcError) as refused:
        client.execute(TOO_LONG, timeout_s=60)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    streamed = list(client.execute_many([PASSING, FAILING, PASSING, PASSING], window=4))
    results += [r for _, r in streamed if isinstance(r, RunResult)]
    assert len(results) == 11
    return results


def _inject_faults(srv: Any, docker_client: Any) -> None:
    """Kills the pool's containers under a running request, twice, and sabotages one start.

    The request sleeps, so each kill lands while its agent is busy: the first loss is
    retried by the server on another container, whose loss is final and answers
    sandbox_error (the client does not retry, so that verdict reaches the test). The
    refill's first container start is sabotaged (removed as it starts), which the server
    must count as a start failure; if the removal loses the race with a fast start, one
    more refill is sabotaged.
    """
    metrics: Metrics = srv.server.metrics
    pool = srv.server.pool
    pool_label = f"sandbox.pool={srv.settings.pool_name}"

    def kill_all() -> None:
        for container in docker_client.containers.list(filters={"label": pool_label}):
            try:
                container.kill()
            except docker.errors.APIError:
                pass  # already gone or stopping

    def one_busy_and_the_rest_idle() -> bool:
        # Full and still: no container is starting, so a kill now loses agents but never
        # fails a start (start failures must come from the saboteur alone).
        size = srv.settings.pool_size
        return bool(pool.busy == 1 and pool.idle == size - 1 and pool.starting == 0)

    def lost() -> float:
        return _sample_sum(metrics, "sandbox_errors_total")

    def start_failures() -> float:
        return _sample_sum(metrics, "sandbox_container_start_failures_total")

    saboteur = CreateSaboteur(docker_client, srv.settings.pool_name)
    client = Client(srv.target, retry=NO_RETRY)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
            _wait_for("the pool to be warm", lambda: pool.idle == srv.settings.pool_size, 60)
            saboteur.arm(1)
            pending = executor.submit(client.execute, SLEEPING, 120)
            _wait_for("the sleeping run to start", one_busy_and_the_rest_idle, 30, 0.05)
            kill_all()
            # The retry runs on a fresh container, or on the other one killed just now if
            # the pool had not yet noticed its death: either way its agent is lost too.
            _wait_for(
                "the retry to run in a refilled pool, or the run to end",
                lambda: pending.done() or (lost() >= 1 and one_busy_and_the_rest_idle()),
                60,
                0.05,
            )
            if not pending.done():
                kill_all()
            result = pending.result(timeout=60)
        assert result.status is Status.SANDBOX_ERROR, result
        assert lost() >= 2

        for _attempt in range(3):
            try:
                _wait_for("a container start failure", lambda: start_failures() > 0, 15)
                break
            except AssertionError:
                # The removal lost the race with a fast start: sabotage another refill.
                _wait_for("the pool to be warm again", lambda: pool.idle == srv.settings.pool_size, 60)
                saboteur.arm(1)
                docker_client.containers.list(filters={"label": pool_label})[0].kill()
        else:
            raise AssertionError("no container start failure after 3 sabotaged refills")
        _wait_for("the pool to be warm again", lambda: pool.idle == srv.settings.pool_size, 60)
    finally:
        client.close()
        saboteur.close()


def _close_metrics_socket(server: Any) -> None:
    # Works around a leak in SandboxServer.stop(): it shuts the metrics HTTP server down
    # but never calls server_close(), so its listening socket stays open until garbage
    # collection, where filterwarnings=error turns the ResourceWarning into a failure.
    # Harmless once stop() closes it itself (closing twice is a no-op).
    metrics_server = getattr(server.server, "_metrics_server", None)
    if metrics_server is not None:
        metrics_server[0].server_close()


@dataclasses.dataclass
class Observed:
    """What Prometheus answered after the scenario, gathered before everything is torn down."""

    answers: dict[tuple[str, str], tuple[str, list[dict[str, Any]] | str]]
    """(panel title, refId) -> (PromQL sent, its series, or Prometheus's error message)."""

    extra: dict[str, list[dict[str, Any]]]
    """Further expressions (not on the dashboard) -> their series."""

    instances: list[str]
    """Values of the instance variable's query, label_values(sandbox_pool_containers, instance)."""

    metrics_target: str
    """HOST:PORT that Prometheus scraped."""

    prometheus_log: str


EXTRA_QUERIES = ('sandbox_runs_total{status="sandbox_error"}',)


@pytest.fixture(scope="module")
def observed(prometheus_bin: Path, engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Observed:
    """Runs the scenario once: a server does work and meets faults while Prometheus scrapes it."""
    from sandbox.server.app import EmbeddedServer
    from sandbox.server.settings import Settings

    metrics_port = _free_port()
    target = f"127.0.0.1:{metrics_port}"
    # The brief's pool is "ops-test"; made unique per session like every test pool, since a
    # server removes whatever its pool name left behind and sessions share the engine.
    settings = Settings.from_env(
        {}, listen="127.0.0.1:0", metrics_listen=target, pool_size=2, pool_name=unique_pool_name("ops-test")
    )
    server = EmbeddedServer(settings)
    try:
        with (
            server as srv,
            Prometheus(prometheus_bin, tmp_path_factory.mktemp("prometheus"), target) as prom,
            Client(srv.target) as client,
        ):
            # A baseline before any work, so rates and quantiles see the increases.
            _wait_for(
                "two scrapes before the work",
                lambda: prom.query('count_over_time(up{job="sandbox"}[5m]) >= 2') != [],
                30,
            )
            results = _workload(client)
            statuses = {r.status for r in results}
            assert {Status.PASSED, Status.FAILED, Status.TIMEOUT} <= statuses, statuses
            _inject_faults(srv, engine)

            done = time.time()
            _wait_for("two scrapes after the work", lambda: prom.last_scrape() >= done + 2, 30)

            answers: dict[tuple[str, str], tuple[str, list[dict[str, Any]] | str]] = {}
            for title, ref, expr in queries(load_dashboard()):
                promql = substitute(expr)
                try:
                    answers[(title, ref)] = (promql, prom.query(promql))
                except ValueError as exc:
                    answers[(title, ref)] = (promql, str(exc))
            return Observed(
                answers=answers,
                extra={expr: prom.query(expr) for expr in EXTRA_QUERIES},
                instances=list(prom.api("label/instance/values", **{"match[]": "sandbox_pool_containers"})),
                metrics_target=target,
                prometheus_log=prom.log(),
            )
    finally:
        _close_metrics_socket(server)


def _values(series: list[dict[str, Any]]) -> list[float]:
    return [float(s["value"][1]) for s in series]


@pytest.mark.integration
def test_every_dashboard_expression_returns_data_from_a_real_prometheus(observed: Observed) -> None:
    """Each PromQL expression of the dashboard parses and returns series for a server that did work.

    Histogram quantiles must also yield a number (not NaN): the buckets moved while
    Prometheus watched, so a quantile over them exists.
    """
    failures = []
    for (title, ref), (promql, answer) in observed.answers.items():
        if isinstance(answer, str):
            failures.append(f"{title} [{ref}] does not evaluate: {answer}\n    {promql}")
        elif not answer:
            failures.append(f"{title} [{ref}] returned no series\n    {promql}")
        elif "histogram_quantile" in promql and all(math.isnan(v) for v in _values(answer)):
            failures.append(f"{title} [{ref}] returned only NaN\n    {promql}")
    assert not failures, "\n".join(failures) + f"\n\nprometheus log:\n{observed.prometheus_log}"
    assert len(observed.answers) == len(queries(load_dashboard())) > 20


@pytest.mark.integration
def test_the_instance_variable_lists_the_scraped_server(observed: Observed) -> None:
    """The instance variable's query (label_values) resolves to the one server Prometheus scraped."""
    assert observed.instances == [observed.metrics_target]


@pytest.mark.integration
def test_the_dashboard_sees_the_work_the_test_did(observed: Observed) -> None:
    """Throughput shows the verdicts the workload produced, and the timeouts' recycles."""
    _, by_status = observed.answers[("Throughput by status", "A")]
    assert isinstance(by_status, list)
    rates = {s["metric"]["status"]: float(s["value"][1]) for s in by_status}
    for status in ("passed", "failed", "timeout"):
        assert rates.get(status, 0) > 0, rates
    _, recycles = observed.answers[("Container starts and recycles", "B")]
    assert isinstance(recycles, list)
    assert {"timeout", "agent_lost"} <= {s["metric"]["reason"] for s in recycles}


@pytest.mark.integration
def test_error_panels_show_the_injected_faults(observed: Observed) -> None:
    """Lost agents and a failed start, injected after the first scrapes, show as non-zero error rates."""
    for panel in ("Sandbox errors by kind", "Container start failures", "Infrastructure errors per run"):
        _, series = observed.answers[(panel, "A")]
        assert isinstance(series, list)
        assert any(v > 0 for v in _values(series)), panel


@pytest.mark.integration
def test_a_run_lost_to_dead_agents_is_counted_as_a_sandbox_error_run(observed: Observed) -> None:
    """The run answered sandbox_error (both warm agents killed) appears in sandbox_runs_total."""
    assert observed.extra['sandbox_runs_total{status="sandbox_error"}']
