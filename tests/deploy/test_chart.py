"""The Helm chart, rendered by Helm's own engine and checked against the Kubernetes schemas."""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import inspect
from ipaddress import ip_network
from pathlib import Path
import re
import subprocess
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from core.settings import Settings
from service import cli
from tests.deploy.chart_monitoring import (
    api_routes,
    exported_series,
    matchers,
    selectors,
    threshold,
    validate_custom_resource,
)

CHART = Path(__file__).resolve().parents[2] / "helm" / "commons-users"
RELEASE, NAMESPACE = "users", "commons"
SECRET = "commons-users-secrets"
REQUIRED = {"existingSecret": SECRET}


def placement(component: str) -> dict[str, Any]:
    """Scheduling values of one component, naming it, so that a test sees them reach its pods only."""
    return {
        "podAnnotations": {"example.com/owner": component},
        "nodeSelector": {"example.com/pool": component},
        "tolerations": [{"key": "example.com/pool", "operator": "Equal", "value": component, "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [{"key": component, "operator": "Exists"}]}}
                ]
            }
        },
    }


NON_DEFAULT: dict[str, Any] = {
    "existingSecret": SECRET,
    "image": {"repository": "registry.example.com/commons-users", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "registry"}],
    "config": {"LOG_LEVEL": "DEBUG", "ALLOWED_ORIGINS": "https://commons.example.com", "CONSUMER_MAX_BATCH": 500},
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
    "serviceAccount": {"name": "commons-users-pods"},
    "api": {
        "shutdownGraceSeconds": 40,
        "autoscaling": {"minReplicas": 3, "maxReplicas": 20, "targetCPUUtilizationPercentage": 60},
        "rateLimit": {"perHour": 1_000_000, "redisUrlFromSecret": True},
        "trustedProxies": ["10.244.0.0/16", "fd00:10:244::/56"],
        "proxyHeaders": "forwarded",
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "users.example.com",
            "tlsSecret": "users-example-com-tls",
            "annotations": {
                "nginx.ingress.kubernetes.io/proxy-read-timeout": "120",
                "cert-manager.io/cluster-issuer": "letsencrypt",
            },
        },
        **placement("api"),
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
        ],
    },
    "consumer": {
        "replicas": 6,
        **placement("consumer"),
        "topologySpreadConstraints": [
            {
                "maxSkew": 2,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"example.com/spread": "consumers"}},
            }
        ],
    },
    "migrations": placement("migrations"),
    "audit": {
        "enabled": True,
        "schedule": "0 * * * *",
        "pushgateway": "http://pushgateway.monitoring:9091",
        **placement("audit"),
    },
    "serviceMonitor": {"enabled": True, "interval": "15s"},
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "kube-prometheus-stack"},
        "consumerLag": 50_000,
        "deadLetterRate": 0.5,
        "apiErrorRatio": 0.01,
        "apiLatencyP99Seconds": 2.5,
    },
    "networkPolicy": {
        "enabled": True,
        "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
        "consumerFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas.
KUBERNETES_VERSIONS = ("1.25", kubernetes_validate.utils.latest_version())
COMPONENT = "app.kubernetes.io/component"
WORKLOADS = ("Deployment", "Job", "CronJob")
# Values that are whole Kubernetes objects, documented as one.
OBJECT_VALUES = {
    "api.resources",
    "consumer.resources",
    "migrations.resources",
    "audit.resources",
    "api.ingress.annotations",
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [document for _, text in sorted(rendered.items()) for document in yaml.safe_load_all(text) if document]


def find(manifests: list[dict[str, Any]], kind: str, component: str | None = None) -> list[dict[str, Any]]:
    return [
        m
        for m in manifests
        if m["kind"] == kind and (component is None or m["metadata"]["labels"].get(COMPONENT) == component)
    ]


def one(manifests: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    (found,) = find(manifests, kind, component)
    return found


def pod_template(manifest: dict[str, Any]) -> dict[str, Any]:
    """The pod a manifest makes: its metadata and spec (a Pod is its own)."""
    if manifest["kind"] == "Pod":
        return manifest
    spec = manifest["spec"]["jobTemplate"]["spec"] if manifest["kind"] == "CronJob" else manifest["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = pod_template(manifest)["spec"]
    return spec


def pod_specs(
    manifests: list[dict[str, Any]], kinds: tuple[str, ...] = WORKLOADS
) -> Iterator[tuple[str, dict[str, Any]]]:
    for manifest in manifests:
        if manifest["kind"] in kinds:
            yield manifest["metadata"]["name"], pod_spec(manifest)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container.get("env", [])}


@pytest.fixture(scope="module", params=["default", "non-default"])
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(REQUIRED if request.param == "default" else NON_DEFAULT)


@pytest.fixture(scope="module")
def default_manifests() -> list[dict[str, Any]]:
    return render(REQUIRED)


@pytest.fixture(scope="module")
def custom_manifests() -> list[dict[str, Any]]:
    return render(NON_DEFAULT)


@pytest.mark.parametrize("values", [REQUIRED, NON_DEFAULT], ids=["default", "non-default"])
def test_lint_finds_nothing(values: dict[str, Any]) -> None:
    report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); warnings and errors are findings.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_manifest_validates_against_the_kubernetes_schemas(manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD's: no schema ships with Kubernetes (see test_prometheus_rule_*, test_service_monitor_*)
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def by_kind(kind: tuple[str, str | None]) -> tuple[str, str]:
    return kind[0], kind[1] or ""


def kinds(manifests: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return sorted(((m["kind"], m["metadata"]["labels"].get(COMPONENT)) for m in manifests), key=by_kind)


def test_the_expected_objects_are_rendered(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    assert kinds(default_manifests) == [
        ("ConfigMap", None),
        ("Deployment", "api"),
        ("Deployment", "consumer"),
        ("HorizontalPodAutoscaler", "api"),
        ("Job", "migrations"),
        ("Pod", "test"),  # `helm test`'s, rendered with the rest
        ("PodDisruptionBudget", "api"),
        ("Service", "api"),
        ("Service", "consumer"),
        ("ServiceAccount", None),
        ("ServiceAccount", "migrations"),
    ]
    assert kinds(custom_manifests) == sorted(
        [
            *kinds(default_manifests),
            ("CronJob", "audit"),
            ("Ingress", "api"),
            ("NetworkPolicy", "api"),
            ("NetworkPolicy", "consumer"),
            ("PrometheusRule", None),
            ("ServiceMonitor", None),
        ],
        key=by_kind,
    )
    assert all(m["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE for m in custom_manifests)


def test_rendering_without_existing_secret_fails_clearly() -> None:
    with pytest.raises(helm_python.HelmError, match=r"existingSecret is required.*DATABASE_URL and JWT_SECRET"):
        render({})


@pytest.mark.parametrize(
    "secret", ["DATABASE_URL", "DATABASE_LISTEN_URL", "DATABASE_REPLICA_URLS", "JWT_SECRET", "REDIS_URL"]
)
def test_secrets_are_refused_in_config(secret: str) -> None:
    with pytest.raises(helm_python.HelmError, match=f"config.{secret} is a secret"):
        render({**REQUIRED, "config": {secret: "do-not-put-me-here"}})


def test_secrets_are_referenced_never_inlined(manifests: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(manifests):
        for container in spec["containers"]:
            env = env_of(container)
            for key in ("DATABASE_URL", "JWT_SECRET"):
                assert env[key]["valueFrom"] == {"secretKeyRef": {"name": SECRET, "key": key}}, name
            # Optional keys: a Secret without them leaves the variables unset, and the service's defaults apply.
            for key in ("DATABASE_LISTEN_URL", "DATABASE_REPLICA_URLS"):
                assert env[key]["valueFrom"] == {"secretKeyRef": {"name": SECRET, "key": key, "optional": True}}, name
    assert find(manifests, "Secret") == []
    configmap = one(manifests, "ConfigMap")
    assert not {"DATABASE_URL", "JWT_SECRET"} & set(configmap["data"]), configmap["data"]


def test_pods_get_the_configmap(manifests: list[dict[str, Any]]) -> None:
    configmap = one(manifests, "ConfigMap")
    pods = [*find(manifests, "Deployment", "api"), *find(manifests, "Deployment", "consumer")]
    for manifest in [*pods, *find(manifests, "CronJob", "audit")]:
        container = pod_spec(manifest)["containers"][0]
        assert container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    # The pre-install hook runs before the ConfigMap exists, so it gets the same settings inline.
    job_env = env_of(one(manifests, "Job", "migrations")["spec"]["template"]["spec"]["containers"][0])
    assert {name: job_env[name]["value"] for name in configmap["data"]} == configmap["data"]


def test_config_leaves_out_empty_values(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    assert "ALLOWED_ORIGINS" not in one(default_manifests, "ConfigMap")["data"]
    data = one(custom_manifests, "ConfigMap")["data"]
    assert data["ALLOWED_ORIGINS"] == "https://commons.example.com"
    assert data["CONSUMER_MAX_BATCH"] == "500"
    assert data["LOG_LEVEL"] == "DEBUG"


def test_every_container_is_hardened(manifests: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(manifests, (*WORKLOADS, "Pod")):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert [m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"] == sorted(tmp_volumes)
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


def test_each_role_runs_its_own_command(custom_manifests: list[dict[str, Any]]) -> None:
    def container(kind: str, component: str) -> dict[str, Any]:
        containers: list[dict[str, Any]] = pod_spec(one(custom_manifests, kind, component))["containers"]
        return containers[0]

    assert container("Deployment", "api")["args"] == ["api", "--host", "0.0.0.0", "--port", "8080"]
    assert container("Deployment", "consumer")["args"] == ["consumer"]
    assert container("Job", "migrations")["args"] == ["migrate"]
    assert container("CronJob", "audit")["args"] == ["audit", "--pushgateway", "http://pushgateway.monitoring:9091"]
    roles = (("Deployment", "api"), ("Deployment", "consumer"), ("Job", "migrations"), ("CronJob", "audit"))
    for kind, component in roles:
        assert container(kind, component)["image"] == "registry.example.com/commons-users:1.2.3"
        assert env_of(container(kind, component))["TZ"] == {"name": "TZ", "value": "UTC"}


@pytest.mark.parametrize(("component", "port_name", "port"), [("api", "http", 8080), ("consumer", "health", 8081)])
def test_liveness_and_readiness_probes_are_distinct(
    manifests: list[dict[str, Any]], component: str, port_name: str, port: int
) -> None:
    container = one(manifests, "Deployment", component)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": port_name, "containerPort": port} in container["ports"]
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert liveness == {"path": "/healthz", "port": port_name}
    assert readiness == {"path": "/readyz", "port": port_name}


@pytest.mark.parametrize(
    ("values", "limit"), [(REQUIRED, "2500"), (NON_DEFAULT, "1000000")], ids=["default", "non-default"]
)
def test_api_gets_its_rate_limit(values: dict[str, Any], limit: str) -> None:
    manifests = render(values)
    api = one(manifests, "Deployment", "api")
    assert env_of(api["spec"]["template"]["spec"]["containers"][0])["RATE_LIMIT_PER_HOUR"]["value"] == limit
    for name, spec in pod_specs(manifests):
        if name != api["metadata"]["name"]:  # only the API serves requests
            assert "RATE_LIMIT_PER_HOUR" not in env_of(spec["containers"][0]), name


def test_redis_url_comes_from_the_secret_and_only_to_the_api(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    for _, spec in pod_specs(default_manifests):  # off by default: each replica counts alone
        assert "REDIS_URL" not in env_of(spec["containers"][0])
    api = one(custom_manifests, "Deployment", "api")
    for name, spec in pod_specs(custom_manifests):
        env = env_of(spec["containers"][0])
        if name == api["metadata"]["name"]:
            assert env["REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": SECRET, "key": "REDIS_URL"}}
        else:
            assert "REDIS_URL" not in env, name
    assert "REDIS_URL" not in one(custom_manifests, "ConfigMap")["data"]


def test_consumer_is_told_its_health_port(manifests: list[dict[str, Any]]) -> None:
    container = one(manifests, "Deployment", "consumer")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["CONSUMER_HEALTH_PORT"]["value"] == "8081"


@pytest.mark.parametrize(("values", "grace"), [(REQUIRED, 20), (NON_DEFAULT, 40)], ids=["default", "non-default"])
def test_api_pods_outlive_their_drain(values: dict[str, Any], grace: int) -> None:
    spec = one(render(values), "Deployment", "api")["spec"]["template"]["spec"]
    assert env_of(spec["containers"][0])["SHUTDOWN_GRACE_SECONDS"]["value"] == str(grace)
    pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert spec["terminationGracePeriodSeconds"] > grace + int(pre_stop[-1])


def test_the_audit_runs_on_its_schedule_one_at_a_time_and_never_repairs(custom_manifests: list[dict[str, Any]]) -> None:
    cron = one(custom_manifests, "CronJob", "audit")
    assert cron["spec"]["schedule"] == "0 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0  # a run that finds drift fails once
    [container] = pod_spec(cron)["containers"]
    assert "--repair" not in container["args"]
    assert {"DATABASE_URL", "JWT_SECRET"} <= set(env_of(container))
    without_gateway = render({**NON_DEFAULT, "audit": {"enabled": True}})
    assert pod_spec(one(without_gateway, "CronJob", "audit"))["containers"][0]["args"] == ["audit"]


def test_migrations_job_is_a_pre_install_and_pre_upgrade_hook(manifests: list[dict[str, Any]]) -> None:
    job = one(manifests, "Job", "migrations")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert int(annotations["helm.sh/hook-weight"]) < 0
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["backoffLimit"] >= 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Every other object is a normal release resource, applied only after the hook succeeded, but
    # the Job's ServiceAccount, which must exist before it, and `helm test`'s pod.
    hooks = sorted(
        (m["kind"], m["metadata"]["annotations"]["helm.sh/hook"])
        for m in manifests
        if "helm.sh/hook" in m["metadata"].get("annotations", {})
    )
    assert hooks == [("Job", "pre-install,pre-upgrade"), ("Pod", "test"), ("ServiceAccount", "pre-install,pre-upgrade")]
    account = one(manifests, "ServiceAccount", "migrations")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert int(account["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    # Helm deletes it once every hook of the phase succeeded: it is there while the Job runs.
    assert set(account["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }


@pytest.mark.parametrize("component", ["api", "consumer"])
def test_selectors_carry_the_component_and_match_the_pods(manifests: list[dict[str, Any]], component: str) -> None:
    deployment = one(manifests, "Deployment", component)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector[COMPONENT] == component
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    service = one(manifests, "Service", component)
    assert service["spec"]["selector"] == selector


def test_api_service_pdb_and_hpa_select_only_api_pods(manifests: list[dict[str, Any]]) -> None:
    api_pods = one(manifests, "Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    other_pods = [
        m["spec"]["template"]["metadata"]["labels"]
        for m in manifests
        if m["kind"] in ("Deployment", "Job") and m["metadata"]["labels"][COMPONENT] != "api"
    ]
    service, pdb = one(manifests, "Service", "api"), one(manifests, "PodDisruptionBudget", "api")
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= api_pods.items()
        assert all(not selector.items() <= labels.items() for labels in other_pods)
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_hpa_scales_the_api_deployment(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    for manifests, (low, high, cpu) in ((default_manifests, (2, 10, 70)), (custom_manifests, (3, 20, 60))):
        hpa, api = one(manifests, "HorizontalPodAutoscaler", "api"), one(manifests, "Deployment", "api")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": api["metadata"]["name"],
        }
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (low, high)
        assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == cpu
        assert "replicas" not in api["spec"]  # the HPA owns it; an upgrade must not reset it


def test_without_autoscaling_the_api_has_fixed_replicas() -> None:
    manifests = render({**REQUIRED, "api": {"replicas": 4, "autoscaling": {"enabled": False}}})
    assert find(manifests, "HorizontalPodAutoscaler") == []
    assert one(manifests, "Deployment", "api")["spec"]["replicas"] == 4


def test_consumer_replicas_follow_the_value(custom_manifests: list[dict[str, Any]]) -> None:
    assert one(custom_manifests, "Deployment", "consumer")["spec"]["replicas"] == 6


def test_config_checksum_rolls_pods_when_config_changes() -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        manifests = render(values)
        return {
            component: one(manifests, "Deployment", component)["spec"]["template"]["metadata"]["annotations"][
                "checksum/config"
            ]
            for component in ("api", "consumer")
        }

    before = checksums(REQUIRED)
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in before.values())
    assert checksums(REQUIRED) == before
    after = checksums({**REQUIRED, "config": {"LOG_LEVEL": "DEBUG"}})
    assert all(after[component] != before[component] for component in before)
    # Values outside the ConfigMap leave it alone.
    assert checksums({**REQUIRED, "consumer": {"replicas": 3}}) == before


def test_service_monitor_scrapes_both_roles(custom_manifests: list[dict[str, Any]]) -> None:
    monitor = one(custom_manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoints = {(e["port"], e["path"], e["interval"]) for e in monitor["spec"]["endpoints"]}
    assert endpoints == {("http", "/metrics", "15s"), ("health", "/metrics", "15s")}
    for service in find(custom_manifests, "Service"):
        assert selector.items() <= service["metadata"]["labels"].items()
        assert {port["name"] for port in service["spec"]["ports"]} & {port for port, _, _ in endpoints}
    # Unready consumers (lagging ones) are the ones to watch, so they stay scrapable.
    assert one(custom_manifests, "Service", "consumer")["spec"]["publishNotReadyAddresses"] is True


@pytest.mark.parametrize(
    ("component", "port", "peers"), [("api", "http", "apiFrom"), ("consumer", "health", "consumerFrom")]
)
def test_network_policies_admit_only_the_role_port(
    custom_manifests: list[dict[str, Any]], component: str, port: str, peers: str
) -> None:
    policy = one(custom_manifests, "NetworkPolicy", component)
    pods = one(custom_manifests, "Deployment", component)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pods.items()
    assert policy["spec"]["podSelector"]["matchLabels"][COMPONENT] == component
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    allowed = NON_DEFAULT["networkPolicy"][peers]
    if component == "api":  # and `helm test`'s pod, which calls it
        test_pod = one(custom_manifests, "Pod", "test")["metadata"]["labels"]
        (peer,) = [p for p in policy["spec"]["ingress"][0]["from"] if p not in allowed]
        assert peer["podSelector"]["matchLabels"].items() <= test_pod.items()
        assert not peer["podSelector"]["matchLabels"].items() <= pods.items()
        allowed = [*allowed, peer]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": port}], "from": allowed}]


def test_api_pods_spread_softly_across_nodes_and_zones(default_manifests: list[dict[str, Any]]) -> None:
    api = one(default_manifests, "Deployment", "api")
    constraints = pod_spec(api)["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"], c["maxSkew"]) for c in constraints] == [
        ("kubernetes.io/hostname", "ScheduleAnyway", 1),
        ("topology.kubernetes.io/zone", "ScheduleAnyway", 1),
    ]
    for constraint in constraints:
        assert constraint["labelSelector"] == {"matchLabels": api["spec"]["selector"]["matchLabels"]}
        # Each rollout's pods are spread among themselves, not against the pods they replace.
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]
    for name, spec in pod_specs(default_manifests):
        if name != api["metadata"]["name"]:
            assert "topologySpreadConstraints" not in spec, name
    unspread = render({**REQUIRED, "api": {"topologySpreadConstraints": []}})
    assert "topologySpreadConstraints" not in pod_spec(one(unspread, "Deployment", "api"))


def test_scheduling_values_reach_each_component_s_pods_only(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    roles = {"api": "Deployment", "consumer": "Deployment", "migrations": "Job", "audit": "CronJob"}
    for component, kind in roles.items():
        pod = pod_template(one(custom_manifests, kind, component))
        expected = placement(component)
        for field in ("nodeSelector", "tolerations", "affinity"):
            assert pod["spec"][field] == expected[field], component
        assert expected["podAnnotations"].items() <= pod["metadata"]["annotations"].items(), component
        # Beside the checksum, in the pods that read the ConfigMap.
        assert ("checksum/config" in pod["metadata"]["annotations"]) is (component != "migrations"), component
    for name, spec in pod_specs(default_manifests):
        assert not {"nodeSelector", "tolerations", "affinity"} & set(spec), name
    # A spread constraint without a labelSelector counts its component's pods; one with it, what it says.
    api = one(custom_manifests, "Deployment", "api")
    selector = {"labelSelector": {"matchLabels": api["spec"]["selector"]["matchLabels"]}}
    assert pod_spec(api)["topologySpreadConstraints"] == [
        {**NON_DEFAULT["api"]["topologySpreadConstraints"][0], **selector}
    ]
    consumer = pod_spec(one(custom_manifests, "Deployment", "consumer"))
    assert consumer["topologySpreadConstraints"] == NON_DEFAULT["consumer"]["topologySpreadConstraints"]


def test_pod_annotations_cannot_replace_the_config_checksum(default_manifests: list[dict[str, Any]]) -> None:
    def checksum(manifests: list[dict[str, Any]]) -> str:
        annotations: dict[str, str] = pod_template(one(manifests, "Deployment", "api"))["metadata"]["annotations"]
        return annotations["checksum/config"]

    mine = render({**REQUIRED, "api": {"podAnnotations": {"checksum/config": "mine"}}})
    assert checksum(mine) == checksum(default_manifests)


def test_pods_run_as_the_chart_s_service_account_without_its_token(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    for manifests, name in ((default_manifests, f"{RELEASE}-commons-users"), (custom_manifests, "commons-users-pods")):
        accounts = {m["metadata"]["labels"].get(COMPONENT): m for m in find(manifests, "ServiceAccount")}
        assert {c: a["metadata"]["name"] for c, a in accounts.items()} == {
            None: name,
            "migrations": f"{name}-migrations",
        }
        assert all(account["automountServiceAccountToken"] is False for account in accounts.values())
        for manifest in manifests:
            if manifest["kind"] in (*WORKLOADS, "Pod"):
                component = manifest["metadata"]["labels"][COMPONENT]
                # The migrations hook runs before the release's objects exist: its own account does.
                account = accounts["migrations" if component == "migrations" else None]["metadata"]["name"]
                assert pod_spec(manifest)["serviceAccountName"] == account, component
                assert pod_spec(manifest)["automountServiceAccountToken"] is False, component
    for values, account in (
        ({"create": False, "name": "platform-pods"}, "platform-pods"),
        ({"create": False}, "default"),
    ):
        manifests = render({**REQUIRED, "serviceAccount": values})
        assert find(manifests, "ServiceAccount") == []
        assert {spec["serviceAccountName"] for _, spec in pod_specs(manifests, (*WORKLOADS, "Pod"))} == {account}


def test_the_ingress_routes_the_api_as_a_live_update_stream_needs(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    assert find(default_manifests, "Ingress") == []
    ingress = one(custom_manifests, "Ingress", "api")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "users-example-com-tls", "hosts": ["users.example.com"]}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "users.example.com"
    # The API's routes only: the probes and /metrics stay inside the cluster.
    service = one(custom_manifests, "Service", "api")["metadata"]["name"]
    backend = {"service": {"name": service, "port": {"name": "http"}}}
    assert rule["http"]["paths"] == [{"path": "/api", "pathType": "Prefix", "backend": backend}]
    assert {route for route in api_routes() if not route.startswith("/api/")} == {"/healthz", "/readyz", "/metrics"}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"  # each event as it is sent
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "120"  # the user's value wins
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"

    plain = one(render({**REQUIRED, "api": {"ingress": {"enabled": True}}}), "Ingress", "api")
    assert not {"tls", "ingressClassName"} & set(plain["spec"]) and "host" not in plain["spec"]["rules"][0]
    # An idle stream sends a keepalive comment: nginx must wait for more than one before it gives up.
    keepalive = Settings.model_fields["update_stream_keepalive_seconds"].default
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert float(plain["metadata"]["annotations"][f"nginx.ingress.kubernetes.io/{timeout}"]) > 2 * keepalive
    # A default set to null is dropped.
    dropped = {"nginx.ingress.kubernetes.io/proxy-send-timeout": None}
    without = one(render({**REQUIRED, "api": {"ingress": {"enabled": True, "annotations": dropped}}}), "Ingress", "api")
    assert set(without["metadata"]["annotations"]) == set(plain["metadata"]["annotations"]) - set(dropped)


def test_only_the_api_is_told_which_proxies_to_trust(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted = [ip_network("10.244.0.0/16"), ip_network("fd00:10:244::/56")]
    for manifests, networks, headers in (
        (default_manifests, [], "x-forwarded"),
        (custom_manifests, trusted, "forwarded"),
    ):
        api = one(manifests, "Deployment", "api")
        env = env_of(pod_spec(api)["containers"][0])
        # The settings as the API reads them from its environment.
        plain = {name: variable["value"] for name, variable in env.items() if "value" in variable}
        with monkeypatch.context() as patch:
            patch.delenv("TRUSTED_PROXIES", raising=False)
            for name, value in {**one(manifests, "ConfigMap")["data"], **plain, "JWT_SECRET": "s" * 32}.items():
                patch.setenv(name, value)
            settings = Settings(_env_file=None)
        assert (settings.trusted_proxies, settings.proxy_headers) == (networks, headers)
        for name, spec in pod_specs(manifests):
            if name != api["metadata"]["name"]:
                assert not {"TRUSTED_PROXIES", "PROXY_HEADERS"} & set(env_of(spec["containers"][0])), name
    # None by default: the service's own default, trusting nobody.
    assert "TRUSTED_PROXIES" not in env_of(pod_spec(one(default_manifests, "Deployment", "api"))["containers"][0])


def test_unknown_proxy_headers_fail_rendering() -> None:
    with pytest.raises(helm_python.HelmError, match=r"api\.proxyHeaders is \"x-real-ip\": it must be x-forwarded"):
        render({**REQUIRED, "api": {"proxyHeaders": "x-real-ip"}})


# Each alert of the chart README ("Alerts"): the series it reads, and whose pods export them.
ALERTS = {
    "CommonsUsersConsumerDown": ("up", "consumer"),
    "CommonsUsersConsumerNotReady": ("commons_users_consumer_ready", "consumer"),
    "CommonsUsersConsumerLag": ("commons_users_consumer_partition_lag", "consumer"),
    "CommonsUsersDeadLetters": ("commons_users_consumer_dead_lettered_total", "consumer"),
    "CommonsUsersAuditDrift": ("commons_users_audit_drift_rows", None),  # from the Pushgateway
    "CommonsUsersApiErrors": ("commons_users_http_requests_total", "api"),
    "CommonsUsersApiSlow": ("commons_users_http_request_duration_seconds_bucket", "api"),
    "CommonsUsersUpdateHubNotListening": ("commons_users_update_stream_listening", "api"),
}
# The values of the thresholds, and the alerts that compare with them.
THRESHOLDS = {
    "consumerLag": "CommonsUsersConsumerLag",
    "deadLetterRate": "CommonsUsersDeadLetters",
    "apiErrorRatio": "CommonsUsersApiErrors",
    "apiLatencyP99Seconds": "CommonsUsersApiSlow",
}


def alerts(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rule = one(manifests, "PrometheusRule")
    return {alert["alert"]: alert for group in rule["spec"]["groups"] for alert in group["rules"]}


@pytest.mark.parametrize(
    "values", [NON_DEFAULT, {**REQUIRED, "prometheusRule": {"enabled": True}}], ids=["non-default", "default"]
)
def test_prometheus_rule_validates_against_its_crd_and_compares_with_the_thresholds(values: dict[str, Any]) -> None:
    rule = one(render(values), "PrometheusRule")
    validate_custom_resource(rule)
    assert values["prometheusRule"].get("labels", {}).items() <= rule["metadata"]["labels"].items()
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]
    rules = alerts([rule])
    for value, alert in THRESHOLDS.items():
        assert threshold(rules[alert]["expr"]) == values["prometheusRule"].get(value, chart_defaults[value]), alert
    # The check refuses what the API server would drop without a word: here a misspelt field.
    group = rule["spec"]["groups"][0]
    with pytest.raises(jsonschema.ValidationError, match="'rule' was unexpected"):
        validate_custom_resource({**rule, "spec": {"groups": [{**group, "rule": group["rules"]}]}})


def test_prometheus_rule_alerts_on_what_this_release_exports(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    assert find(default_manifests, "PrometheusRule") == []
    rules = alerts(custom_manifests)
    assert set(rules) == set(ALERTS)
    # A ServiceMonitor's job label is the name of the Service it scraped.
    jobs = {
        component: one(custom_manifests, "Service", component)["metadata"]["name"] for component in ("api", "consumer")
    }
    served = exported_series() | {"up"}
    for name, alert in rules.items():
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        assert "<no value>" not in str(alert["annotations"]), name  # Helm left Prometheus's templates alone
        series, component = ALERTS[name]
        for selector in selectors(alert["expr"]):  # raises unless the expression is PromQL
            assert selector.name == series, name
            if component is None:  # pushed by the audit with its job label only
                assert matchers(selector) == {'job="commons-users-audit"'}
                continue
            assert {f'namespace="{NAMESPACE}"', f'job="{jobs[component]}"'} <= matchers(selector), name
            assert selector.name in served, name
    source = inspect.getsource(cli)
    assert '"commons_users_audit_drift_rows"' in source and 'job="commons-users-audit"' in source

    # Server errors among the answers; a client that went away (499) is neither.
    errors, answers = selectors(rules["CommonsUsersApiErrors"]["expr"])
    assert 'status=~"5.."' in matchers(errors) and 'status!="499"' in matchers(answers)
    # A live update stream lasts as long as its session: no latency to watch.
    (durations,) = selectors(rules["CommonsUsersApiSlow"]["expr"])
    stream = "/api/users/{userId}/update-stream"
    assert stream in api_routes() and f'route!="{stream}"' in matchers(durations)
    # The audit's gauge exists only where the audit pushes it.
    without_gateway = render({**NON_DEFAULT, "audit": {"enabled": True, "pushgateway": ""}})
    assert set(alerts(without_gateway)) == set(ALERTS) - {"CommonsUsersAuditDrift"}


def test_helm_test_calls_the_api_readiness_through_its_service(manifests: list[dict[str, Any]]) -> None:
    pod = one(manifests, "Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == pod_spec(one(manifests, "Deployment", "api"))["containers"][0]["image"]
    # The image's entrypoint is `commons-users`: the command replaces it.
    assert container["command"][:2] == ["python", "-c"] and "args" not in container
    service = one(manifests, "Service", "api")
    port = service["spec"]["ports"][0]["port"]
    assert container["command"][-1] == f"http://{service['metadata']['name']}:{port}/readyz"


@pytest.mark.parametrize(("status", "passes"), [(HTTPStatus.OK, True), (HTTPStatus.SERVICE_UNAVAILABLE, False)])
def test_helm_test_fails_unless_the_api_is_ready(
    default_manifests: list[dict[str, Any]], status: HTTPStatus, passes: bool
) -> None:
    (container,) = one(default_manifests, "Pod", "test")["spec"]["containers"]
    _, *arguments, url = container["command"]
    asked: list[str] = []

    class API(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"status": "..."}')

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), API) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        local = urlsplit(url)._replace(netloc=f"127.0.0.1:{server.server_port}").geturl()
        try:
            result = subprocess.run([sys.executable, *arguments, local], capture_output=True, timeout=30, check=False)
        finally:
            server.shutdown()
    assert asked == ["/readyz"]
    assert (result.returncode == 0) is passes, result.stderr


def _leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in OBJECT_VALUES:
            yield from _leaf_paths(value, f"{path}.")
        else:
            yield path


def test_chart_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values_section = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1]
    documented = set(re.findall(r"^\| `([^`]+)` \|", values_section, flags=re.MULTILINE))
    leaves = set(_leaf_paths(values))
    assert leaves - documented == set(), "values missing from the chart README"
    assert documented - leaves == set(), "the chart README documents values that do not exist"
