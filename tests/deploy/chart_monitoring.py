"""What the chart's Prometheus Operator objects are checked against: the schema of their CRD
(vendored in crds/), PromQL's grammar, and the metrics the service exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
import jsonschema
from prometheus_client import REGISTRY
import promql_parser
import yaml

import consumers.health  # noqa: F401  (registers the consumer's metrics)
import service.app

CRDS = Path(__file__).resolve().parent / "crds"
# The series a metric of each type is scraped as.
_SERIES_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with unknown fields refused at every level: the API server would drop them silently."""
    strict = dict(schema)
    if schema.get("pattern", "").startswith("^(?i)"):  # Go's regexp takes a flag there; Python's at the start only
        strict["pattern"] = "(?i)^" + schema["pattern"].removeprefix("^(?i)")
    if "properties" in schema:
        strict["properties"] = {name: _strict(field) for name, field in schema["properties"].items()}
        strict.setdefault("additionalProperties", False)
    if isinstance(schema.get("additionalProperties"), dict):
        strict["additionalProperties"] = _strict(schema["additionalProperties"])
    if "items" in schema:
        strict["items"] = _strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            strict[key] = [_strict(alternative) for alternative in schema[key]]
    return strict


def validate_custom_resource(manifest: dict[str, Any]) -> None:
    """Check `manifest` against the schema that its kind's CRD serves at its apiVersion."""
    group, version = manifest["apiVersion"].split("/")
    definitions = [yaml.safe_load(path.read_text()) for path in sorted(CRDS.glob("*.yaml"))]
    (crd,) = [d for d in definitions if (d["spec"]["group"], d["spec"]["names"]["kind"]) == (group, manifest["kind"])]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    # A CRD's openAPIV3Schema is OpenAPI 3.0's dialect of JSON Schema, that of draft 4.
    jsonschema.validate(manifest, _strict(served["schema"]["openAPIV3Schema"]), cls=jsonschema.Draft4Validator)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """The series selectors of a PromQL expression (those inside range selectors too); raises
    ValueError when it does not parse."""
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(
        promql_parser.parse(expr),
        lambda node: found.append(node) if isinstance(node, promql_parser.VectorSelector) else None,
    )
    return found


def matchers(selector: promql_parser.VectorSelector) -> set[str]:
    """Its label matchers as PromQL writes them: `job="x"`, `status=~"5.."`."""
    return {str(matcher) for matcher in selector.matchers.matchers}


def exported_series() -> set[str]:
    """The series the API and the consumer serve on /metrics, by name."""
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("commons_users_")
        for suffix in _SERIES_SUFFIXES.get(family.type, ())
    }


def api_routes() -> set[str]:
    """The route templates of the API, as its HTTP metrics label them."""
    router = web.UrlDispatcher()
    service.app.add_routes(router)
    return {route.resource.canonical for route in router.routes() if route.resource is not None}


def threshold(expr: str) -> float:
    """The number an alert's expression compares with (`... > 0.05`)."""
    comparison = promql_parser.parse(expr)
    assert isinstance(comparison, promql_parser.BinaryExpr), expr
    assert isinstance(comparison.rhs, promql_parser.NumberLiteral), expr
    return comparison.rhs.val
