"""The Helm chart: lint, render with several value sets, validate every manifest
against Kubernetes' schemas, check what the objects say, and check that the
chart refuses configurations that cannot work. All offline (helm-python-sdk)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

Render = Callable[[dict[str, Any]], Any]
Validate = Callable[[dict[str, Any]], None]

RELEASE = "cb"
NAMESPACE = "corkboard"  # as rendered by the conftest fixture
FULLNAME = "cb-corkboard"
REDIS = "cb-corkboard-redis"
LINT_WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error

TOKENS = [
    {"token": "s3cret-team-a", "namespaces": ["team-a-*"], "permissions": ["read", "write"]},
    {"token_sha256": "0" * 64, "namespaces": ["*"], "permissions": ["admin"]},
]

# The value sets the chart is rendered, linted and validated with.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "bundled-redis": {
        "replicaCount": 2,
        "redis": {"enabled": True, "persistence": {"size": "20Gi", "storageClass": "fast-ssd"}},
        "auth": {"tokens": TOKENS, "requireTokens": True},
        "networkPolicy": {"enabled": True, "restrictEgress": True},
    },
    "external-redis-full": {
        "replicaCount": 3,
        "externalRedis": {"existingSecret": "shared-redis", "existingSecretKey": "url"},
        "auth": {"existingSecret": "corkboard-tokens", "requireTokens": True},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 10},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": "", "minAvailable": 2},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "corkboard.example.org", "paths": [{"path": "/"}]}],
            "tls": [{"hosts": ["corkboard.example.org"], "secretName": "corkboard-tls"}],
        },
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "networkPolicy": {
            "enabled": True,
            "ingressFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }
                }
            ],
            "restrictEgress": True,
            "extraEgress": [
                {
                    "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                    "ports": [{"port": 6379, "protocol": "TCP"}],
                }
            ],
        },
    },
    "external-redis-cluster": {
        "replicaCount": 3,
        "externalRedis": {"existingSecret": "redis-cluster", "waitReplicas": 1},
    },
    "external-redis-url": {
        "replicaCount": 3,
        "externalRedis": {"url": "rediss://:pw@redis.example.org:6380/2"},
        "config": {
            "artifacts": "file:///var/lib/corkboard",
            "corsOrigins": ["https://a.example.org", "https://b.example.org"],
            "workers": 2,
            "keyHistory": 25,
            "extraEnv": {"CORKBOARD_EXTRA_FLAG": "on"},
        },
        "dataVolume": {"enabled": True, "existingClaim": "corkboard-artifacts"},
    },
    "external-nats": {
        "replicaCount": 3,
        "externalNats": {
            "url": "nats://nats-0.nats:4222,nats-1.nats:4222?replicas=3",
            "existingSecret": "nats-creds",
        },
        "networkPolicy": {
            "enabled": True,
            "restrictEgress": True,
            "extraEgress": [{"ports": [{"port": 4222, "protocol": "TCP"}]}],
        },
    },
}

EXPECTED_KINDS = {
    "defaults": ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"],
    "bundled-redis": [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Secret",
        "Service",
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ],
    "external-redis-full": [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ],
    "external-redis-cluster": [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ],
    "external-redis-url": [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    ],
    "external-nats": [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ],
}


def secret_ref(env: dict[str, Any]) -> tuple[str, str]:
    ref = env["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- lint ------------------------------------------------------------------


def test_chart_metadata(chart: helm_python.Chart) -> None:
    assert chart.name == "corkboard"
    assert chart.metadata["apiVersion"] == "v2"
    assert chart.schema is not None, "values.schema.json must ship with the chart"
    assert chart.dependencies == [], "the chart must render without fetching dependencies"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_is_clean(chart_dir: Path, kubernetes_version: str, name: str) -> None:
    report = helm_python.lint(
        chart_dir, VALUE_SETS[name], strict=True, kube_version=f"v{kubernetes_version}"
    )
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= LINT_WARNING]
    assert problems == [] and report["errors"] == []


def test_lint_reports_bad_values(chart_dir: Path) -> None:
    """The linter really lints: values breaking the schema are errors."""
    report = helm_python.lint(chart_dir, {"replicaCount": "three"}, strict=True)
    assert any("replicaCount" in e for e in report["errors"]), report


# --- schema validation of every rendered manifest ---------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_validates(render: Render, validate: Validate, name: str) -> None:
    rendered = render(VALUE_SETS[name])
    assert rendered.kinds() == sorted(EXPECTED_KINDS[name])
    for manifest in rendered.manifests:
        validate(manifest)
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_validation_is_not_vacuous(render: Render, validate: Validate) -> None:
    """A misspelt field fails validation, built-in kind or ServiceMonitor, and a
    kind nothing knows is an error rather than a pass."""
    deployment = json.loads(json.dumps(render({}).deployment))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)

    monitor = json.loads(
        json.dumps(render(VALUE_SETS["external-redis-full"]).get("ServiceMonitor"))
    )
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    monitor["spec"]["endpoints"][0] = {"port": "http", "interval": "thirty seconds"}
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)

    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate(unknown)


# --- the refusals -------------------------------------------------------------

MEMORY_ONE_PROCESS = "the memory backend serves one process only"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"replicaCount": 2},
            MEMORY_ONE_PROCESS + ", but replicaCount is 2. Use Redis",
            id="memory-2-replicas",
        ),
        pytest.param(
            {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}},
            MEMORY_ONE_PROCESS + ", but autoscaling.maxReplicas is 4. Use Redis",
            id="memory-hpa",
        ),
        pytest.param(
            {"config": {"workers": 4}},
            MEMORY_ONE_PROCESS + ", but config.workers is 4. Use Redis or NATS",
            id="memory-workers",
        ),
        pytest.param(
            {"redis": {"enabled": True}, "externalRedis": {"url": "redis://r:6379/0"}},
            "redis.enabled (bundled Redis) and externalRedis are both set; choose one",
            id="two-redis-sources",
        ),
        pytest.param(
            {"externalRedis": {"url": "redis://r:6379/0", "existingSecret": "s"}},
            "set only one of externalRedis.url and externalRedis.existingSecret",
            id="two-external-redis-sources",
        ),
        pytest.param(
            {"auth": {"requireTokens": True}},
            "auth.requireTokens is true but no tokens are configured",
            id="require-tokens-without-tokens",
        ),
        pytest.param(
            {"auth": {"tokens": TOKENS, "existingSecret": "s"}},
            "set only one of auth.tokens and auth.existingSecret",
            id="two-token-sources",
        ),
        pytest.param(
            {
                "redis": {"enabled": True},
                "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
            },
            "autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (2)",
            id="hpa-min-over-max",
        ),
        pytest.param(
            {"preStopSleepSeconds": 30, "terminationGracePeriodSeconds": 30},
            "terminationGracePeriodSeconds (30) must exceed preStopSleepSeconds (30)",
            id="grace-period-too-short",
        ),
        pytest.param(
            {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
            "set exactly one of podDisruptionBudget.minAvailable and",
            id="pdb-two-bounds",
        ),
        pytest.param(
            {"redis": {"enabled": True}, "externalNats": {"url": "nats://n:4222"}},
            "externalNats and Redis (redis.enabled or externalRedis) are both set",
            id="nats-and-redis",
        ),
        pytest.param(
            {"externalNats": {"existingSecret": "nats-creds"}},
            "externalNats.existingSecret holds credentials only; set externalNats.url",
            id="nats-secret-without-url",
        ),
        pytest.param(
            {"externalNats": {"url": "nats://n:4222", "existingSecret": "nats-creds"},
             "config": {"artifacts": "nats://n:4222?bucket=blobs"}},
            "config.artifacts is a nats:// URL, but externalNats.existingSecret's credentials",
            id="nats-artifacts-without-credentials",
        ),
        pytest.param(
            {"config": {"artifacts": "file:///var/lib/corkboard"}},
            "config.artifacts is a file:// store but the root filesystem is read-only",
            id="file-artifacts-without-volume",
        ),
    ],
)
def test_chart_refuses(render: Render, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError) as failure:
        render(values)
    assert "corkboard: " + message in str(failure.value)


def test_memory_backend_with_two_replicas_names_the_fix(render: Render) -> None:
    with pytest.raises(helm_python.HelmRenderError) as failure:
        render({"replicaCount": 2})
    text = str(failure.value)
    assert "memory backend serves one process only" in text
    assert "replicaCount is 2" in text
    assert "redis.enabled=true" in text and "externalRedis.url" in text


def test_memory_backend_allows_an_hpa_capped_at_one(render: Render) -> None:
    rendered = render({"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}})
    assert rendered.get("HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 1


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"replicaCount": "3"}, "/replicaCount"),
        (
            {"auth": {"tokens": [{"token": "t", "namespaces": ["*"], "permissions": ["own"]}]}},
            "/auth/tokens/0/permissions/0",
        ),
        ({"externalRedis": {"url": "http://redis:6379"}}, "/externalRedis/url"),
        ({"externalRedis": {"url": "redis+sentinel://r:26379"}}, "/externalRedis/url"),
        ({"externalRedis": {"waitReplicas": -1}}, "/externalRedis/waitReplicas"),
        ({"redis": {"auth": {"password": "p@ss/word"}}}, "/redis/auth/password"),
        ({"externalNats": {"url": "nats://user:pw@nats:4222"}}, "/externalNats/url"),
        ({"externalNats": {"url": "redis://nats:4222"}}, "/externalNats/url"),
    ],
)
def test_schema_rejects_bad_values(
    chart: helm_python.Chart, values: dict[str, Any], path: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(path)):
        chart.validate_schema(values)


# --- defaults: memory backend, one pod ----------------------------------------


def test_defaults_run_one_memory_pod(render: Render) -> None:
    rendered = render({})
    deployment = rendered.deployment
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert rendered.config["CORKBOARD_BACKEND"] == "memory://"
    assert rendered.config["CORKBOARD_WORKERS"] == "1"
    assert "env" not in rendered.container, "memory backend and no tokens: nothing secret"
    assert rendered.maybe("Secret") is None
    assert rendered.maybe("HorizontalPodAutoscaler") is None


def test_configmap_carries_the_settings(render: Render) -> None:
    assert render({}).config == {
        "CORKBOARD_BACKEND": "memory://",
        "CORKBOARD_KEY_HISTORY": "10",
        "CORKBOARD_EVENT_RETENTION": "100000",
        "CORKBOARD_MAX_VALUE_BYTES": "1048576",
        "CORKBOARD_MAX_ARTIFACT_BYTES": "67108864",
        "CORKBOARD_HEARTBEAT_SECONDS": "15",
        "CORKBOARD_REQUIRE_TOKENS": "false",
        "CORKBOARD_LOG_LEVEL": "info",
        "CORKBOARD_WORKERS": "1",
    }
    config = render(VALUE_SETS["external-redis-url"]).config
    assert "CORKBOARD_BACKEND" not in config, "a Redis URL may hold a password: Secret only"
    assert config["CORKBOARD_ARTIFACTS"] == "file:///var/lib/corkboard"
    assert config["CORKBOARD_CORS_ORIGINS"] == "https://a.example.org,https://b.example.org"
    assert config["CORKBOARD_WORKERS"] == "2"
    assert config["CORKBOARD_KEY_HISTORY"] == "25"
    assert config["CORKBOARD_EXTRA_FLAG"] == "on"
    for key, value in config.items():
        assert isinstance(value, str), key


def test_settings_come_from_the_configmap(render: Render) -> None:
    rendered = render({})
    assert rendered.container["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    assert rendered.get("ConfigMap")["metadata"]["name"] == FULLNAME


def test_config_change_rolls_the_pods(render: Render) -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = render(values).deployment["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    assert checksum({}) != checksum({"config": {"keyHistory": 11}})


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_probes(render: Render, name: str) -> None:
    container = render(VALUE_SETS[name]).container
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]


def test_port_matches_the_image(repo_root: Path) -> None:
    """The chart's port is the one the image exposes and health-checks."""
    dockerfile = (repo_root / "Dockerfile").read_text()
    assert "EXPOSE 8000" in dockerfile
    assert "http://127.0.0.1:8000/healthz" in dockerfile


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_security_context(render: Render, name: str) -> None:
    rendered = render(VALUE_SETS[name])
    pod = rendered.pod_spec
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    security = rendered.container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in rendered.container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_graceful_shutdown_for_sse(render: Render) -> None:
    rendered = render({})
    command = rendered.container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    sleep = int(command[1])
    grace = rendered.pod_spec["terminationGracePeriodSeconds"]
    assert sleep > 0
    assert grace >= sleep + 30, "after the sleep, streams need time to close"


def test_service(render: Render) -> None:
    rendered = render({})
    service = rendered.get("Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(service["spec"]["selector"], pod_labels)
    assert rendered.deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_image_defaults_to_app_version(render: Render, chart: helm_python.Chart) -> None:
    assert render({}).container["image"] == f"corkboard:{chart.metadata['appVersion']}"
    image = render({"image": {"repository": "ghcr.io/x/corkboard", "tag": "1.2.3"}}).container
    assert image["image"] == "ghcr.io/x/corkboard:1.2.3"


def test_notes_show_how_to_try_it(render: Render) -> None:
    notes = render({}).notes
    assert f"kubectl --namespace {NAMESPACE} port-forward service/{FULLNAME} 8000:8000" in notes
    assert 'curl -fsS "$CORKBOARD_URL/healthz"' in notes
    assert "no access tokens are configured" in notes
    notes = render(VALUE_SETS["bundled-redis"]).notes
    assert "Authorization: Bearer $TOKEN" in notes
    assert "no access tokens" not in notes
    notes = render(VALUE_SETS["external-redis-full"]).notes
    assert "export CORKBOARD_URL=https://corkboard.example.org" in notes


# --- bundled Redis ------------------------------------------------------------


def test_bundled_redis_statefulset(render: Render) -> None:
    rendered = render(VALUE_SETS["bundled-redis"])
    redis = rendered.get("StatefulSet", REDIS)
    spec = redis["spec"]
    assert spec["replicas"] == 1
    assert spec["serviceName"] == f"{REDIS}-headless"
    container = spec["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--dir") + 1] == "/data"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "tcpSocket" in container["livenessProbe"]
    assert "exec" in container["readinessProbe"]

    service = rendered.get("Service", REDIS)
    headless = rendered.get("Service", f"{REDIS}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    pod_labels = spec["template"]["metadata"]["labels"]
    for svc in (service, headless):
        assert svc["spec"]["ports"][0]["port"] == 6379
        assert matches(svc["spec"]["selector"], pod_labels)
    server_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert not matches(service["spec"]["selector"], server_labels)
    assert not matches(rendered.get("Service", FULLNAME)["spec"]["selector"], pod_labels)


def test_bundled_redis_password_reaches_both_sides(render: Render) -> None:
    rendered = render(VALUE_SETS["bundled-redis"])
    env = list(rendered.container["env"])
    names = [e["name"] for e in env]
    # $(REDIS_PASSWORD) is expanded only from variables defined before it.
    assert names.index("REDIS_PASSWORD") < names.index("CORKBOARD_BACKEND")
    backend = env[names.index("CORKBOARD_BACKEND")]["value"]
    assert backend == f"redis://:$(REDIS_PASSWORD)@{REDIS}:6379/0"
    assert secret_ref(env[names.index("REDIS_PASSWORD")]) == (REDIS, "redis-password")
    redis_env = {
        e["name"]: e
        for e in rendered.get("StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert secret_ref(redis_env["REDIS_PASSWORD"]) == (REDIS, "redis-password")
    secret = rendered.get("Secret", REDIS)
    assert len(base64.b64decode(secret["data"]["redis-password"])) == 32


def test_bundled_redis_password_from_values_or_existing_secret(render: Render) -> None:
    given = render({"redis": {"enabled": True, "auth": {"password": "Pa55word"}}})
    secret = given.get("Secret", REDIS)
    assert base64.b64decode(secret["data"]["redis-password"]) == b"Pa55word"

    existing = render({"redis": {"enabled": True, "auth": {"existingSecret": "my-redis"}}})
    assert existing.maybe("Secret") is None
    assert secret_ref(existing.env()["REDIS_PASSWORD"]) == ("my-redis", "redis-password")


def test_bundled_redis_without_auth(render: Render) -> None:
    rendered = render({"redis": {"enabled": True, "auth": {"enabled": False}}})
    assert rendered.config["CORKBOARD_BACKEND"] == f"redis://{REDIS}:6379/0"
    assert "env" not in rendered.container
    assert rendered.maybe("Secret") is None
    args = rendered.get("StatefulSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--requirepass" not in args


def test_bundled_redis_without_persistence_uses_emptydir(render: Render) -> None:
    rendered = render({"redis": {"enabled": True, "persistence": {"enabled": False}}})
    spec = rendered.get("StatefulSet")["spec"]
    assert "volumeClaimTemplates" not in spec
    assert spec["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert "NO persistent volume" in rendered.notes


def test_redis_backend_rolls_without_downtime(render: Render) -> None:
    deployment = render(VALUE_SETS["bundled-redis"]).deployment
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- tokens ---------------------------------------------------------------------


def test_tokens_from_generated_secret(render: Render) -> None:
    rendered = render(VALUE_SETS["bundled-redis"])
    assert secret_ref(rendered.env()["CORKBOARD_TOKENS"]) == (FULLNAME, "tokens.json")
    secret = rendered.get("Secret", FULLNAME)
    assert json.loads(base64.b64decode(secret["data"]["tokens.json"])) == TOKENS
    assert rendered.config["CORKBOARD_REQUIRE_TOKENS"] == "true"
    annotations = rendered.deployment["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" in annotations and "checksum/redis-secret" in annotations


def test_tokens_from_existing_secret(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-full"])
    assert secret_ref(rendered.env()["CORKBOARD_TOKENS"]) == ("corkboard-tokens", "tokens.json")
    assert rendered.maybe("Secret") is None, "nothing secret is rendered from values"


# --- external Redis, HPA, PDB, Ingress, ServiceMonitor, NetworkPolicy --------


def test_external_redis_from_existing_secret(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-full"])
    assert secret_ref(rendered.env()["CORKBOARD_BACKEND"]) == ("shared-redis", "url")
    assert "CORKBOARD_BACKEND" not in rendered.config
    assert rendered.maybe("StatefulSet") is None


def test_external_redis_url_goes_into_a_secret(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-url"])
    assert rendered.deployment["spec"]["replicas"] == 3
    assert secret_ref(rendered.env()["CORKBOARD_BACKEND"]) == (FULLNAME, "redis-url")
    secret = rendered.get("Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["redis-url"]) == b"rediss://:pw@redis.example.org:6380/2"
    assert "tokens.json" not in secret["data"]


@pytest.mark.parametrize(
    "url", ["redis+cluster://:pw@r1:7000,r2:7000,r3:7000", "rediss+cluster://:pw@r1:7000"]
)
def test_external_redis_cluster_url_goes_into_a_secret(render: Render, url: str) -> None:
    rendered = render({"replicaCount": 2, "externalRedis": {"url": url}})
    assert secret_ref(rendered.env()["CORKBOARD_BACKEND"]) == (FULLNAME, "redis-url")
    secret = rendered.get("Secret", FULLNAME)
    assert base64.b64decode(secret["data"]["redis-url"]) == url.encode()
    assert "CORKBOARD_REDIS_WAIT_REPLICAS" not in rendered.config


def test_external_redis_cluster_from_a_secret_waits_for_replicas(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-cluster"])
    assert secret_ref(rendered.env()["CORKBOARD_BACKEND"]) == ("redis-cluster", "redis-url")
    assert rendered.config["CORKBOARD_REDIS_WAIT_REPLICAS"] == "1"
    assert rendered.maybe("StatefulSet") is None


NATS_PASSWORD = "n4ts-s3cret"  # what the Secret would hold: never given to the chart


def test_external_nats_credentials_come_from_the_existing_secret(render: Render) -> None:
    rendered = render(VALUE_SETS["external-nats"])
    env = rendered.env()
    assert secret_ref(env["NATS_USER"]) == ("nats-creds", "nats-user")
    assert secret_ref(env["NATS_PASSWORD"]) == ("nats-creds", "nats-password")
    assert env["CORKBOARD_BACKEND"]["value"] == (
        "nats://$(NATS_USER):$(NATS_PASSWORD)@nats-0.nats:4222,nats-1.nats:4222?replicas=3"
    )
    # $(VAR) expands only variables defined before it in the list.
    names = [e["name"] for e in rendered.container["env"]]
    assert names.index("CORKBOARD_BACKEND") > max(names.index("NATS_USER"),
                                                  names.index("NATS_PASSWORD"))
    # Artifacts follow the backend (the Object Store): no URL of their own anywhere.
    assert "CORKBOARD_BACKEND" not in rendered.config
    assert "CORKBOARD_ARTIFACTS" not in rendered.config and "CORKBOARD_ARTIFACTS" not in env
    assert rendered.maybe("Secret") is None, "the chart holds no NATS credentials"
    assert rendered.deployment["spec"]["replicas"] == 3
    assert rendered.deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "external NATS JetStream" in rendered.notes
    text = "".join(rendered.files.values())
    assert NATS_PASSWORD not in text
    assert not re.search(r"nats://[^$\s\"]*@", text), "no literal credentials in any URL"


def test_external_nats_names_its_object_store_bucket_in_its_url(render: Render) -> None:
    rendered = render({"externalNats": {
        "url": "nats://nats:4222?replicas=3&bucket=team_blobs", "existingSecret": "nats-creds",
    }})
    assert rendered.env()["CORKBOARD_BACKEND"]["value"] == (
        "nats://$(NATS_USER):$(NATS_PASSWORD)@nats:4222?replicas=3&bucket=team_blobs"
    )
    assert "CORKBOARD_ARTIFACTS" not in rendered.config


def test_a_nats_object_store_beside_redis_state(render: Render) -> None:
    rendered = render({"redis": {"enabled": True},
                       "config": {"artifacts": "nats://nats:4222?bucket=blobs"}})
    assert rendered.config["CORKBOARD_ARTIFACTS"] == "nats://nats:4222?bucket=blobs"


def test_external_nats_with_a_token(render: Render) -> None:
    rendered = render({"externalNats": {
        "url": "nats://nats:4222", "existingSecret": "nats-token",
        "existingSecretUserKey": "", "existingSecretPasswordKey": "token",
    }})
    env = rendered.env()
    assert "NATS_USER" not in env
    assert secret_ref(env["NATS_PASSWORD"]) == ("nats-token", "token")
    assert env["CORKBOARD_BACKEND"]["value"] == "nats://$(NATS_PASSWORD)@nats:4222"


def test_external_nats_without_credentials_is_in_the_configmap(render: Render) -> None:
    rendered = render({"replicaCount": 2, "externalNats": {"url": "nats://nats:4222"},
                       "config": {"artifacts": "file:///var/lib/corkboard"},
                       "dataVolume": {"enabled": True}})
    assert rendered.config["CORKBOARD_BACKEND"] == "nats://nats:4222"
    assert rendered.config["CORKBOARD_ARTIFACTS"] == "file:///var/lib/corkboard"
    assert "env" not in rendered.container
    assert rendered.deployment["spec"]["replicas"] == 2


def test_data_volume_for_file_artifacts(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-url"])
    mounts = {m["mountPath"]: m["name"] for m in rendered.container["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    assert volumes[mounts["/var/lib/corkboard"]]["persistentVolumeClaim"] == {
        "claimName": "corkboard-artifacts"
    }


def test_hpa(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-full"])
    assert "replicas" not in rendered.deployment["spec"], "the HPA owns the replica count"
    hpa = rendered.get("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["maxReplicas"] == 10
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_pdb(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-full"])
    pdb = rendered.get("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 2
    assert "maxUnavailable" not in pdb["spec"]
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == (rendered.deployment["spec"]["selector"]["matchLabels"])
    )
    assert render({}).get("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_ingress_keeps_sse_unbuffered(render: Render) -> None:
    ingress = render(VALUE_SETS["external-redis-full"]).get("Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["corkboard.example.org"], "secretName": "corkboard-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "corkboard.example.org"
    (path,) = rule["http"]["paths"]
    assert path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": FULLNAME, "port": {"name": "http"}}


def test_service_monitor(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-full"])
    monitor = rendered.get("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = rendered.get("Service", FULLNAME)
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_network_policies(render: Render) -> None:
    rendered = render(VALUE_SETS["external-redis-full"])
    policy = rendered.get("NetworkPolicy")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == (rendered.deployment["spec"]["selector"]["matchLabels"])
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == VALUE_SETS["external-redis-full"]["networkPolicy"]["ingressFrom"]
    egress_ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]]
    assert 53 in egress_ports and 6379 in egress_ports

    bundled = render(VALUE_SETS["bundled-redis"])
    redis_policy = bundled.get("NetworkPolicy", REDIS)
    (rule,) = redis_policy["spec"]["ingress"]
    server_selector = bundled.deployment["spec"]["selector"]["matchLabels"]
    assert rule["from"] == [{"podSelector": {"matchLabels": server_selector}}]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    server_policy = bundled.get("NetworkPolicy", FULLNAME)
    redis_labels = bundled.get("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert any(
        matches(peer["podSelector"]["matchLabels"], redis_labels)
        for rule in server_policy["spec"]["egress"]
        for peer in rule.get("to", [])
    )


def test_rendering_is_pure_yaml_documents(render: Render) -> None:
    """No template renders stray text: each non-empty file is only YAML objects."""
    for values in VALUE_SETS.values():
        for template, text in render(values).files.items():
            if template.endswith(".yaml") and text.strip():
                for doc in yaml.safe_load_all(text):
                    assert doc is None or isinstance(doc, dict), template


# --- documentation ----------------------------------------------------------------


def test_values_table_matches_values_yaml(repo_root: Path, chart_dir: Path) -> None:
    """docs/deploy.md documents every value, and only values that exist."""
    table = re.findall(r"^\| `([^`]+)` \|", (repo_root / "docs/deploy.md").read_text(), re.M)
    documented = set(table)
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())

    def lookup(path: str) -> bool:
        node: Any = values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    assert [key for key in table if not lookup(key)] == []

    undocumented: list[str] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in documented:
                continue
            if isinstance(value, dict) and value:
                walk(value, path + ".")
            else:
                undocumented.append(path)

    walk(values, "")
    assert undocumented == []
