"""deploy/k8s: the kustomize base and overlays render, validate against the Kubernetes API schemas,
and give each service what operators rely on.

Rendering: with tests/deploy/kustomize_lite.py (pure Python, so it runs in CI, which has only
Python), and, wherever `kubectl` is installed, also with the real `kubectl kustomize`, whose output
must be identical. Validation: every built-in resource against the Kubernetes 1.33 JSON schemas
vendored in deploy/schemas/kubernetes-v1.33 (strict: unknown fields fail), from the PyPI package
kubernetes-validate 1.37.0; the two Prometheus Operator resources (no schema vendored) by their
structure, and the PrometheusRule must carry exactly deploy/prometheus/rules.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import referencing
import yaml

from tests.deploy.kustomize_lite import render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
SCHEMAS = ROOT / "deploy" / "schemas" / "kubernetes-v1.33"
SCHEMA_FILES = {
    ("apps/v1", "Deployment"): "deployment-apps-v1.json",
    ("v1", "Service"): "service-v1.json",
    ("v1", "ConfigMap"): "configmap-v1.json",
    ("v1", "Secret"): "secret-v1.json",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscaler-autoscaling-v2.json",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudget-policy-v1.json",
}
OPERATOR = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
SERVICES = {"intake": 8001, "routing": 8002, "sla": 8003, "notify": 8004}
PARTITIONS = 6


def key(resource: dict) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


@pytest.fixture(scope="module", params=["base", *OVERLAYS])
def rendered(request) -> tuple[str, dict[tuple[str, str], dict]]:
    directory = K8S / "base" if request.param == "base" else K8S / "overlays" / request.param
    resources = render(directory)
    by_key = {key(resource): resource for resource in resources}
    assert len(by_key) == len(resources), f"{request.param}: two resources share a kind and name"
    return request.param, by_key


@pytest.fixture(scope="module")
def validators() -> dict:
    definitions = json.loads((SCHEMAS / "_definitions.json").read_text())
    registry = referencing.Registry().with_resource(
        "https://kubernetes.io/api/_definitions.json", referencing.Resource.from_contents(definitions)
    )
    validators = {}
    for kind, file in SCHEMA_FILES.items():
        schema = json.loads((SCHEMAS / file).read_text())
        validators[kind] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


def test_the_vendored_schemas_are_unmodified() -> None:
    for line in (SCHEMAS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, f"{name} was modified"


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_kustomize_lite_renders_what_kubectl_kustomize_renders(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; kustomize_lite alone renders the manifests")
    directory = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
    output = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert output.returncode == 0, output.stderr
    real = sorted((doc for doc in yaml.safe_load_all(output.stdout) if doc), key=key)
    assert sorted(render(directory), key=key) == real


def test_every_resource_validates_against_the_kubernetes_schemas(rendered, validators) -> None:
    name, resources = rendered
    for (kind, resource_name), resource in resources.items():
        api = (resource["apiVersion"], kind)
        if api in OPERATOR:
            continue
        assert api in validators, f"{name}: no schema vendored for {api} ({resource_name})"
        errors = sorted(validators[api].iter_errors(resource), key=lambda error: list(error.absolute_path))
        assert not errors, f"{name}: {kind}/{resource_name}: " + "; ".join(
            f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}" for error in errors[:5]
        )


def test_a_schema_violation_is_caught(validators) -> None:
    """The validation is real: a misspelt field and a wrong type both fail."""
    deployment = next(r for r in render(K8S / "base") if r["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    deployment["spec"]["revisionHistoryLimit"] = "five"
    assert len(list(validators[("apps/v1", "Deployment")].iter_errors(deployment))) >= 2


def test_each_service_has_a_deployment_service_autoscaler_and_disruption_budget(rendered) -> None:
    name, resources = rendered
    for service, port in SERVICES.items():
        full = f"switchboard-{service}"
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            assert (kind, full) in resources, f"{name}: no {kind} {full}"
        deployment = resources["Deployment", full]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items(), f"{name}: {full} selects pods it does not create"
        assert "replicas" not in deployment["spec"], f"{name}: {full} sets replicas; its autoscaler owns them"
        assert resources["Service", full]["spec"]["selector"].items() <= pod_labels.items()
        assert resources["PodDisruptionBudget", full]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        hpa = resources["HorizontalPodAutoscaler", full]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": full}
        assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"] <= PARTITIONS, (
            f"{name}: {full} may scale to {hpa['maxReplicas']}; more consumers than partitions ({PARTITIONS}) idle"
        )
        service_ports = {p["name"]: p for p in resources["Service", full]["spec"]["ports"]}
        assert service_ports["http"]["port"] == port


def test_each_deployment_runs_its_service_safely_with_probes_and_resources(rendered) -> None:
    name, resources = rendered
    for service, port in SERVICES.items():
        pod = resources["Deployment", f"switchboard-{service}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", f"services.{service}"]
        env = {item["name"]: item.get("value") for item in container.get("env", [])}
        assert env["HTTP_PORT"] == str(port)
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
        resources_ = container["resources"]
        assert resources_["requests"]["cpu"] and resources_["requests"]["memory"] and resources_["limits"]["memory"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"
        sources = [ref for item in container["envFrom"] for ref in item.values()]
        assert {"name": "switchboard-config"} in sources and {"name": "switchboard-secrets"} in sources


def test_config_and_secret_name_only_settings_the_services_read(rendered) -> None:
    from shared.launcher.platform import GENERATED_SECRETS
    from services.notify.settings import NotifySettings
    from shared.settings import ServiceSettings

    known = {field.upper() for settings in (ServiceSettings, NotifySettings) for field in settings.model_fields}
    known |= set(GENERATED_SECRETS)
    name, resources = rendered
    for kind, field in (("ConfigMap", "data"), ("Secret", "stringData")):
        resource = resources.get((kind, f"switchboard-{'config' if kind == 'ConfigMap' else 'secrets'}"))
        if resource is None:
            assert name != "base" and kind == "Secret", f"{name}: no {kind}"
            continue  # production brings its own Secret
        unknown = set(resource.get(field, {})) - known
        assert not unknown, f"{name}: {kind} sets {sorted(unknown)}, which no setting reads"



def test_the_survey_links_notify_mails_point_at_intakes_public_url(rendered) -> None:
    name, resources = rendered
    public = urlsplit(resources["ConfigMap", "switchboard-config"]["data"]["INTAKE_PUBLIC_URL"])
    assert public.scheme in ("http", "https") and public.hostname and public.path in ("", "/"), (
        f"{name}: INTAKE_PUBLIC_URL must be the address customers' browsers reach intake at"
    )
    assert public.hostname not in ("intake", "switchboard-intake"), f"{name}: an in-cluster name, not public"

def test_prometheus_operator_resources_scrape_every_service_with_the_shipped_rules(rendered) -> None:
    name, resources = rendered
    monitor = resources["ServiceMonitor", "switchboard"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    for service in SERVICES:
        labels = resources["Service", f"switchboard-{service}"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{name}: the ServiceMonitor does not select switchboard-{service}"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    shipped = [
        group for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert resources["PrometheusRule", "switchboard"]["spec"]["groups"] == shipped, (
        "base/prometheusrule.yaml differs from deploy/prometheus/rules: run `python deploy/k8s/render_prometheusrule.py`"
    )


def test_the_production_overlay_uses_a_released_image_and_brings_its_own_secret() -> None:
    resources = {key(r): r for r in render(K8S / "overlays" / "production")}
    assert ("Secret", "switchboard-secrets") not in resources, "production must not ship the placeholder Secret"
    for service in SERVICES:
        (container,) = resources["Deployment", f"switchboard-{service}"]["spec"]["template"]["spec"]["containers"]
        assert not container["image"].endswith(":latest"), f"production runs {container['image']}"
