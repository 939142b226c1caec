"""The Helm chart, rendered by Helm's own engine and checked against the Kubernetes schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import re
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "commons-users"
RELEASE, NAMESPACE = "users", "commons"
SECRET = "commons-users-secrets"
REQUIRED = {"existingSecret": SECRET}
NON_DEFAULT: dict[str, Any] = {
    "existingSecret": SECRET,
    "image": {"repository": "registry.example.com/commons-users", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "registry"}],
    "config": {"LOG_LEVEL": "DEBUG", "ALLOWED_ORIGINS": "https://commons.example.com", "CONSUMER_MAX_BATCH": 500},
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
    "api": {
        "shutdownGraceSeconds": 40,
        "autoscaling": {"minReplicas": 3, "maxReplicas": 20, "targetCPUUtilizationPercentage": 60},
        "rateLimit": {"perHour": 1_000_000, "redisUrlFromSecret": True},
    },
    "consumer": {"replicas": 6},
    "audit": {"enabled": True, "schedule": "0 * * * *", "pushgateway": "http://pushgateway.monitoring:9091"},
    "serviceMonitor": {"enabled": True, "interval": "15s"},
    "networkPolicy": {
        "enabled": True,
        "apiFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
        "consumerFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas.
KUBERNETES_VERSIONS = ("1.25", kubernetes_validate.utils.latest_version())
COMPONENT = "app.kubernetes.io/component"
# Values that are whole Kubernetes objects, documented as one.
OBJECT_VALUES = {"api.resources", "consumer.resources", "migrations.resources", "audit.resources"}


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


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]["jobTemplate"]["spec"] if manifest["kind"] == "CronJob" else manifest["spec"]
    template: dict[str, Any] = spec["template"]["spec"]
    return template


def pod_specs(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for manifest in manifests:
        if manifest["kind"] in ("Deployment", "Job", "CronJob"):
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
            continue  # a CRD: no schema ships with Kubernetes; checked in test_service_monitor
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def kinds(manifests: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return sorted((m["kind"], m["metadata"]["labels"].get(COMPONENT)) for m in manifests)


def test_the_expected_objects_are_rendered(
    default_manifests: list[dict[str, Any]], custom_manifests: list[dict[str, Any]]
) -> None:
    assert kinds(default_manifests) == [
        ("ConfigMap", None),
        ("Deployment", "api"),
        ("Deployment", "consumer"),
        ("HorizontalPodAutoscaler", "api"),
        ("Job", "migrations"),
        ("PodDisruptionBudget", "api"),
        ("Service", "api"),
        ("Service", "consumer"),
    ]
    assert kinds(custom_manifests) == sorted(
        [
            *kinds(default_manifests),
            ("CronJob", "audit"),
            ("NetworkPolicy", "api"),
            ("NetworkPolicy", "consumer"),
            ("ServiceMonitor", None),
        ]
    )
    assert all(m["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE for m in custom_manifests)


def test_rendering_without_existing_secret_fails_clearly() -> None:
    with pytest.raises(helm_python.HelmError, match=r"existingSecret is required.*DATABASE_URL and JWT_SECRET"):
        render({})


@pytest.mark.parametrize("secret", ["DATABASE_URL", "JWT_SECRET", "REDIS_URL"])
def test_secrets_are_refused_in_config(secret: str) -> None:
    with pytest.raises(helm_python.HelmError, match=f"config.{secret} is a secret"):
        render({**REQUIRED, "config": {secret: "do-not-put-me-here"}})


def test_secrets_are_referenced_never_inlined(manifests: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(manifests):
        for container in spec["containers"]:
            env = env_of(container)
            for key in ("DATABASE_URL", "JWT_SECRET"):
                assert env[key]["valueFrom"] == {"secretKeyRef": {"name": SECRET, "key": key}}, name
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
    for name, spec in pod_specs(manifests):
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
    # Every other object is a normal release resource, applied only after the hook succeeded.
    assert [m["metadata"]["name"] for m in manifests if "helm.sh/hook" in m["metadata"].get("annotations", {})] == [
        job["metadata"]["name"]
    ]


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
    assert policy["spec"]["ingress"] == [{"ports": [{"port": port}], "from": NON_DEFAULT["networkPolicy"][peers]}]


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
